// The driver module of examples/gpu-increment: the "GPU"'s dev_pagemap callbacks. It reports every
// hook call on a BroadcastChannel, because hooks run in the servicer's worker thread, not the program's.
import { isMainThread } from 'node:worker_threads';

export const CHANNEL = 'uffd-hmm-example-gpu-increment';

const channel = new BroadcastChannel(CHANNEL);
// A driver must never keep the servicer (or the process) alive.
channel.unref();

// dev_pagemap.fault / migrate_to_ram: the CPU touched a page this GPU holds. A real driver would
// wait here for the GPU's queue to finish with the page; our "GPU kernel" runs synchronously on
// the main thread before the CPU touches anything, so there is nothing to wait for: migrate.
export function fault(ctx) {
  // ctx is one object reused for every fault and valid only during this call: copy what we keep.
  channel.postMessage({
    hook: 'fault',
    device: ctx.deviceName,
    page: ctx.page,
    pfn: ctx.pfn,
    write: ctx.write,
    thread: isMainThread ? 'main' : 'worker',
  });
  return 'migrate';
}

// free_devpage / page_free: a device page lost its last reference. Called on the main thread (the
// one that created the Device), whoever freed the page: a fault, device.close, region.close, discard.
export function pageFree(ctx) {
  channel.postMessage({ hook: 'pageFree', device: ctx.deviceName, pfn: ctx.pfn, thread: isMainThread ? 'main' : 'worker' });
}
