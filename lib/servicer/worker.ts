// The worker_thread servicer: reads the faults of every worker-mode region through one native
// poller and serves each with lib/servicer/policy.ts. Its loop stays synchronous (no event-loop
// turn per fault); it yields only to await a driver module's import.
import { getHeapStatistics } from 'node:v8';
import { workerData, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';

import { native } from '../native.js';
import { driverLoadFailed, faultHookFailed, pageFreeHookThrew } from '../errors.js';
import { EVENT_PAGEFAULT, EVENT_REMOVE, EVENT_STRIDE, EVENT_UNMAP } from '../layout.js';
import { CTRL_MAIL_SEQ, CTRL_NAP, CTRL_RUNNING, CTRL_STOP, type FromWorker, type ToWorker } from './protocol.js';
import { DEFERRED, FAILED, SERVED, UNKNOWN_DEVICE, carried, serveFault, zapRange, type DeviceInfo, type PolicyHost, type RegionInfo } from './policy.js';
import type { Driver } from '../driver.js';

interface Data {
  poller: number;
  ctrl: Int32Array;
  port: MessagePort;
}
const { poller, ctrl, port } = workerData as Data;

const BATCH = 64;
const MAX_DEFERRED = 4096;
const events = new Float64Array(BATCH * EVENT_STRIDE);
const regions = new Map<number, RegionInfo>();
// Deferred faults: region handle, page, flags, tid, read time, and the driver's answer carried to
// the retry (verdict, state, pfn: see policy.ts `carried`); retried until served.
const DEFER_STRIDE = 8;
const deferred = new Float64Array(MAX_DEFERRED * DEFER_STRIDE);
let ndeferred = 0;
let seenMail = 0;
const pendingImports: Promise<void>[] = [];

function post(msg: FromWorker): void {
  port.postMessage(msg);
}

const host: PolicyHost = {
  devices: [],
  hookError(device, hook, err) {
    post({
      type: 'error',
      deviceSlot: device.slot,
      deviceId: device.id,
      code: 'ERR_DRIVER_HOOK',
      message: hook === 'fault' ? faultHookFailed(device.name, err) : pageFreeHookThrew(device.name, err),
      cause: err,
    });
  },
};

function loadDriver(dev: DeviceInfo): void {
  if (dev.driverUrl === undefined) return;
  dev.driverLoading = true;
  pendingImports.push(
    (import(dev.driverUrl) as Promise<Driver>).then(
      (mod) => {
        dev.driver = mod;
        dev.driverLoading = false;
      },
      (err) => {
        dev.driverLoading = false;
        post({
          type: 'error',
          deviceSlot: dev.slot,
          deviceId: dev.id,
          code: 'ERR_DRIVER_LOAD',
          message: driverLoadFailed(dev.driverUrl!, dev.name, err, 'its faults use the default policy'),
          cause: err,
        });
      },
    ),
  );
}

function drainMessages(): void {
  seenMail = Atomics.load(ctrl, CTRL_MAIL_SEQ);
  for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
    const msg = m.message as ToWorker;
    switch (msg.type) {
      case 'region':
        regions.set(msg.handle, {
          handle: msg.handle,
          shared: msg.shared,
          pages: msg.pages,
          faultAround: msg.faultAround,
          address: msg.address,
          pageSize: msg.pageSize,
        });
        break;
      case 'drop-region':
        regions.delete(msg.handle);
        break;
      case 'device': {
        const dev: DeviceInfo = { ...msg, driver: undefined, driverLoading: false };
        host.devices[msg.slot] = dev;
        loadDriver(dev);
        break;
      }
      case 'drop-device':
        if (host.devices[msg.slot]?.id === msg.id) host.devices[msg.slot] = undefined;
        break;
      case 'heap-request':
        post({ type: 'heap', id: msg.id, used: getHeapStatistics().used_heap_size });
        break;
    }
  }
}

function defer(region: number, page: number, flags: number, tid: number, t0Us: number): void {
  if (ndeferred === MAX_DEFERRED) return; // cannot happen: at most one fault per blocked thread
  const at = ndeferred * DEFER_STRIDE;
  deferred[at] = region;
  deferred[at + 1] = page;
  deferred[at + 2] = flags;
  deferred[at + 3] = tid;
  deferred[at + 4] = t0Us;
  deferred[at + 5] = carried.verdict;
  deferred[at + 6] = carried.state;
  deferred[at + 7] = carried.pfn;
  ndeferred++;
}

function serve(handle: number, page: number, flags: number, tid: number, t0Us: number): number {
  let r = regions.get(handle);
  if (r === undefined) {
    drainMessages();
    r = regions.get(handle);
    if (r === undefined) return SERVED; // closed: its faults were woken by the unregister
  }
  try {
    let rc = serveFault(host, r, page, flags, tid, t0Us);
    if (rc === UNKNOWN_DEVICE) {
      drainMessages();
      rc = serveFault(host, r, page, flags, tid, t0Us);
    }
    if (rc === FAILED) {
      // Never leave a thread blocked: wake it, so it retries the access and faults afresh.
      native.regionWake(handle, page, 1);
      return SERVED;
    }
    return rc;
  } catch (err) {
    // The region closed between reading the fault and serving it; closing woke its threads.
    if ((err as { code?: string }).code === 'ERR_REGION_CLOSED') return SERVED;
    throw err;
  }
}

function zap(handle: number, first: number, count: number, unmapped: boolean): void {
  // Entries may name a device announced a moment ago: know every device before dropping references.
  if (Atomics.load(ctrl, CTRL_MAIL_SEQ) !== seenMail) drainMessages();
  let r = regions.get(handle);
  if (r === undefined) {
    drainMessages();
    r = regions.get(handle);
    if (r === undefined) return;
  }
  try {
    zapRange(host, r, first, count, unmapped);
  } catch (err) {
    if ((err as { code?: string }).code !== 'ERR_REGION_CLOSED') throw err;
  }
}

function retryDeferred(): void {
  let kept = 0;
  for (let i = 0; i < ndeferred; i++) {
    const at = i * DEFER_STRIDE;
    carried.verdict = deferred[at + 5];
    carried.state = deferred[at + 6];
    carried.pfn = deferred[at + 7];
    const rc = serve(deferred[at], deferred[at + 1], deferred[at + 2], deferred[at + 3], deferred[at + 4]);
    if (rc === DEFERRED || rc === UNKNOWN_DEVICE) {
      deferred.copyWithin(kept * DEFER_STRIDE, at, at + DEFER_STRIDE);
      deferred[kept * DEFER_STRIDE + 5] = carried.verdict;
      deferred[kept * DEFER_STRIDE + 6] = carried.state;
      deferred[kept * DEFER_STRIDE + 7] = carried.pfn;
      kept++;
    }
  }
  ndeferred = kept;
}

async function run(): Promise<void> {
  native.pollerAttach(poller); // if this thread dies, native guards take over its regions
  Atomics.store(ctrl, CTRL_RUNNING, 1);
  for (;;) {
    if (Atomics.load(ctrl, CTRL_MAIL_SEQ) !== seenMail) drainMessages();
    if (pendingImports.length > 0) await Promise.all(pendingImports.splice(0));
    if (Atomics.load(ctrl, CTRL_STOP) !== 0) break;
    if (ndeferred > 0) {
      retryDeferred();
      // A page stays locked for microseconds; nap briefly rather than spin a core.
      if (ndeferred > 0) Atomics.wait(ctrl, CTRL_NAP, 0, 0.05);
    }
    const n = native.pollerWait(poller, events, ndeferred > 0 ? 0 : 250);
    if (n === -2) break; // the stall watchdog handed our regions to native guards: we are done
    // Zaps first, then faults. read() hands out every pending fault before any event, so a batch
    // can hold a fault together with the REMOVE or UNMAP that explains it, the fault first. Served
    // in that order, the fault would migrate back device data the zap has dropped, possibly after
    // the kernel's zap is done: stale bytes where the page must read zero (native/servicer_thread.cc).
    let zaps = 0;
    for (let i = 0; i < n; i++) {
      const at = i * EVENT_STRIDE;
      const type = events[at + 1];
      if (type === EVENT_REMOVE || type === EVENT_UNMAP) {
        zap(events[at], events[at + 3], events[at + 4], type === EVENT_UNMAP);
        zaps++;
      }
    }
    // A migration on the main thread may be waiting for these zaps to be applied (Region#settleZaps):
    // say so now, not after the faults of this batch are served.
    if (zaps > 0) native.pollerApplied(poller);
    for (let i = 0; i < n; i++) {
      const at = i * EVENT_STRIDE;
      const type = events[at + 1];
      if (type !== EVENT_PAGEFAULT) continue;
      const handle = events[at];
      const flags = events[at + 2];
      const page = events[at + 3];
      const tid = events[at + 4];
      const t0Us = events[at + 5];
      carried.verdict = 0; // a new fault: the hook has not been asked
      const rc = serve(handle, page, flags, tid, t0Us);
      if (rc === DEFERRED || rc === UNKNOWN_DEVICE) defer(handle, page, flags, tid, t0Us);
    }
  }
  Atomics.store(ctrl, CTRL_RUNNING, 0);
  port.close();
}

void run();
