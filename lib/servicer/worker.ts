// The worker_thread servicer: one native poller serves the faults and events of every worker-mode
// region in native code and hands this thread only the faults a driver's fault hook must decide;
// each is then served by one native.faultServe call. The loop stays synchronous (no event-loop
// turn per fault); it yields only to await a driver module's import.
import { getHeapStatistics } from 'node:v8';
import { workerData, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';

import { native } from '../native.js';
import { driverLoadFailed, faultHookFailed } from '../errors.js';
import { DRIVER_LOAD_CONSEQUENCE } from '../driver.js';
import { DEV_ASK_FAULT, EVENT_ASK, EVENT_STRIDE, REFUSAL_POISON, VERDICT_NONE, deviceSlotOf, stateIndex } from '../layout.js';
import { pfnOf, stateOf } from '../pagelock.js';
import { CTRL_MAIL_SEQ, CTRL_NAP, CTRL_RUNNING, CTRL_STOP, type FromWorker, type ToWorker } from './protocol.js';
import { ASK, DEFERRED, REFUSED_IN_SYSCALL, SERVED_NOT_REFUSED, askDriver, lastHookUs, type DeviceInfo, type PolicyHost, type RegionInfo } from './policy.js';
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
// Faults to ask about that must wait (a driver still loading, a locked page, EAGAIN): region handle,
// page, flags, tid, read time, the driver's answer carried to the retry with the entry it was for
// (verdict, state, pfn) and the time the hook took (for the trace), so one CPU access asks the hook
// once, and the faulting address's offset in its page (where a refusal points); retried until served.
const DEFER_STRIDE = 10;
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
      message: faultHookFailed(device.name, err),
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
        // No fault hook: the poller serves this device's faults natively from now on.
        if (typeof mod.fault !== 'function') Atomics.store(dev.shared, DEV_ASK_FAULT, 0);
      },
      (err) => {
        dev.driverLoading = false;
        Atomics.store(dev.shared, DEV_ASK_FAULT, 0);
        post({
          type: 'error',
          deviceSlot: dev.slot,
          deviceId: dev.id,
          code: 'ERR_DRIVER_LOAD',
          message: driverLoadFailed(dev.driverUrl!, dev.name, err, DRIVER_LOAD_CONSEQUENCE),
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

function defer(region: number, page: number, flags: number, tid: number, t0Us: number, verdict: number, state: number, pfn: number, offset: number, hookUs: number): void {
  if (ndeferred === MAX_DEFERRED) return; // cannot happen: at most one fault per blocked thread
  const at = ndeferred * DEFER_STRIDE;
  deferred[at] = region;
  deferred[at + 1] = page;
  deferred[at + 2] = flags;
  deferred[at + 3] = tid;
  deferred[at + 4] = t0Us;
  deferred[at + 5] = verdict;
  deferred[at + 6] = state;
  deferred[at + 7] = pfn;
  deferred[at + 8] = offset;
  deferred[at + 9] = hookUs;
  ndeferred++;
}

/**
 * A fault on a device entry (state, pfn) whose driver may have a fault hook. `held`: the page is
 * locked for us (an ask record, or faultServe's ASK), as the kernel holds the page lock across
 * migrate_to_ram; then the driver is asked, unless a verdict for that entry is carried, and the
 * fault is served by one native call. Returns true when done, false when it must wait; then
 * `pending` holds the verdict and entry to retry with (the page unlocked).
 */
const pending = { verdict: VERDICT_NONE, state: 0, pfn: 0, hookUs: 0 };
function decideAndServe(handle: number, page: number, flags: number, tid: number, t0Us: number, verdict: number, state: number, pfn: number, held: boolean, offset: number, hookUs: number): boolean {
  let r = regions.get(handle);
  if (r === undefined) {
    drainMessages();
    r = regions.get(handle);
    if (r === undefined) {
      // Dropped: the region is closing (its faults are woken by the unregister). Its owner is about
      // to lock every page: one locked for us goes back as it was, or the close would wait on it.
      if (held) letGo(handle, page, flags, tid, t0Us, state, pfn, offset);
      return true;
    }
  }
  // Bounded: each new round means someone else changed the page meanwhile.
  for (let round = 0; round < 8; round++) {
    if (held && verdict === VERDICT_NONE) {
      let dev = host.devices[deviceSlotOf(state)];
      if (dev === undefined || dev.driverLoading) {
        drainMessages(); // a device announced a moment ago
        dev = host.devices[deviceSlotOf(state)];
      }
      // Not ready to ask (a driver still loading): faultServe with no verdict unlocks the page.
      if (dev !== undefined && !dev.driverLoading) {
        verdict = askDriver(host, dev, r, page, pfn, flags);
        hookUs = lastHookUs;
      }
    }
    let rc: number;
    try {
      rc = native.faultServe(handle, page, flags, tid, t0Us, verdict, state, pfn, held, offset, hookUs);
    } catch (err) {
      // The region closed between reading the fault and serving it; closing woke its threads.
      if ((err as { code?: string }).code === 'ERR_REGION_CLOSED') return true;
      throw err;
    }
    if (rc === DEFERRED) {
      held = false; // the engine never defers with the page locked
      break;
    }
    if (rc === SERVED_NOT_REFUSED) {
      const dev = host.devices[deviceSlotOf(state)];
      if (dev !== undefined) host.hookError(dev, 'fault', new Error(refusalUndeliverable(tid)));
      return true;
    }
    if (rc === REFUSED_IN_SYSCALL) {
      settleRefusal(r, page);
      return true;
    }
    if (rc !== ASK) return true; // served, or failed (and its thread woken to fault afresh)
    // The page holds another entry than the verdict was for, and is locked for us: ask about it.
    held = true;
    verdict = VERDICT_NONE;
    state = stateOf(r.shared, page);
    pfn = pfnOf(r.shared, page);
  }
  // Out of rounds with the page still locked for us: let it go; the retry asks afresh.
  if (held && native.faultServe(handle, page, flags, tid, t0Us, VERDICT_NONE, state, pfn, true, offset) !== DEFERRED) return true;
  pending.verdict = verdict;
  pending.state = state;
  pending.pfn = pfn;
  pending.hookUs = hookUs;
  return false;
}

/** Unlocks a page the engine locked for an ask we will not serve (faultServe with no verdict). */
function letGo(handle: number, page: number, flags: number, tid: number, t0Us: number, state: number, pfn: number, offset: number): void {
  try {
    native.faultServe(handle, page, flags, tid, t0Us, VERDICT_NONE, state, pfn, true, offset);
  } catch (err) {
    if ((err as { code?: string }).code !== 'ERR_REGION_CLOSED') throw err; // closed: nothing left to unlock
  }
}

function serveAsk(handle: number, page: number, flags: number, tid: number, t0Us: number, verdict: number, state: number, pfn: number, held: boolean, offset: number, hookUs: number): void {
  if (!decideAndServe(handle, page, flags, tid, t0Us, verdict, state, pfn, held, offset, hookUs))
    defer(handle, page, flags, tid, t0Us, pending.verdict, pending.state, pending.pfn, offset, pending.hookUs);
}

/** Records pollerWait writes while a refusal settles (settleRefusal): not `events`, which the run loop is reading. */
const scratch = new Float64Array(BATCH * EVENT_STRIDE);
/** How long a refusal's marker is waited for: its thread takes microseconds to zap it, unless descheduled. */
const REFUSAL_SETTLE_MS = 100;

/**
 * A refusal inside a system call left a poison marker in the page's pte until this servicer reads
 * the zap that takes it away, which the refused thread makes on its way back (native/refusal.cc).
 * Read events now, before any other hook runs, so that another thread touching that page meets the
 * marker (hwpoison) for those microseconds only, not for another hook's time. Faults to ask about
 * read meanwhile wait their turn, their pages let go.
 */
function settleRefusal(r: RegionInfo, page: number): void {
  const idx = stateIndex(page);
  const deadline = performance.now() + REFUSAL_SETTLE_MS;
  while ((Atomics.load(r.shared, idx) & REFUSAL_POISON) !== 0 && performance.now() < deadline) {
    const n = native.pollerWait(poller, scratch, 1);
    if (n === -2) return; // the watchdog serves the region now, and reads that zap
    for (let i = 0; i < n; i++) {
      const at = i * EVENT_STRIDE;
      if (scratch[at + 1] !== EVENT_ASK) continue;
      letGo(scratch[at], scratch[at + 3], scratch[at + 2], scratch[at + 4], scratch[at + 5], scratch[at + 6], scratch[at + 7], scratch[at + 8]);
      defer(scratch[at], scratch[at + 3], scratch[at + 2], scratch[at + 4], scratch[at + 5], VERDICT_NONE, scratch[at + 6], scratch[at + 7], scratch[at + 8], 0);
    }
  }
}

/** Why a refusal became a migration (reported as the hook's error; rare, so built only then). */
function refusalUndeliverable(tid: number): string {
  return (
    `the fault hook refused a fault that thread ${tid} took inside a system call, which cannot be failed here: that thread ` +
    'blocks the real-time signal a refusal is delivered by (SIGRTMAX-4), that signal could not be queued (RLIMIT_SIGPENDING ' +
    'reached), or this kernel lacks UFFDIO_POISON (Linux 6.6+); ' +
    'the fault was served by the default policy (migrated back) instead'
  );
}

function retryDeferred(): void {
  const n = ndeferred;
  ndeferred = 0;
  for (let i = 0; i < n; i++) {
    const at = i * DEFER_STRIDE;
    // defer() only writes at or below slot i: this slot is read before anything overwrites it.
    serveAsk(deferred[at], deferred[at + 1], deferred[at + 2], deferred[at + 3], deferred[at + 4], deferred[at + 5], deferred[at + 6], deferred[at + 7], false, deferred[at + 8], deferred[at + 9]);
  }
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
    // Every event and every fault that needs no decision was served in pollerWait; these need one.
    for (let i = 0; i < n; i++) {
      const at = i * EVENT_STRIDE;
      if (events[at + 1] !== EVENT_ASK) continue;
      serveAsk(events[at], events[at + 3], events[at + 2], events[at + 4], events[at + 5], VERDICT_NONE, events[at + 6], events[at + 7], true, events[at + 8], 0);
    }
  }
  Atomics.store(ctrl, CTRL_RUNNING, 0);
  port.close();
}

void run();
