// The fault policy the worker servicer applies, in TypeScript: device entry -> ask the driver,
// then migrate back (read entries come back write-protected); hole -> zero page; write-protect
// fault -> un-protect. native/policy.cc is its C++ twin for servicers that cannot run JS.
// Hot path: no allocation, no closures; the hook context is one reused object.
import { native } from '../native.js';
import {
  DEVICE_SHIFT,
  DEV_FAULTS,
  DEV_MIGRATED_TO_RAM,
  KIND_DEVICE,
  KIND_MASK,
  KIND_NONE,
  KIND_POISON,
  KIND_PRESENT,
  LOCKED,
  MAX_DEVICE_SLOT,
  STAT_FAULTS,
  STAT_DEVICE_SHIFT,
  STAT_FILL_RACED,
  STAT_FILL_RETRIES,
  STAT_KERNEL_FAULTS,
  FAULT_KERNEL,
  STAT_MIGRATED_BACK,
  STAT_POISONED,
  STAT_WP_FAULTS,
  STAT_WRITE_FAULTS,
  STAT_ZERO_FILLS,
  UNLOCK_SEQ,
  OUTCOME_MIGRATED,
  OUTCOME_SIGBUS,
  OUTCOME_UNPROTECTED,
  OUTCOME_WOKEN,
  OUTCOME_ZERO_PAGE,
  OUTCOME_PAGE_CACHE,
  UNMAPPED,
  ZAPPING,
  ZAP_PENDING,
  HUGE,
  PMD_SIZE,
  DEV_FAIL_ALLOC,
  UFFD_PAGEFAULT_FLAG_MINOR,
  UFFD_PAGEFAULT_FLAG_WP,
  UFFD_PAGEFAULT_FLAG_WRITE,
  WRITE,
  stateIndex,
} from '../layout.js';
import { unlockPage } from '../pagelock.js';
import type { Driver, FaultContext } from '../driver.js';
import { devicePageRefcount } from '../devicepages.js';

export const SERVED = 0;
export const DEFERRED = 1;
/** The entry names a device this servicer has not been told about yet, or whose driver is still loading: read messages, wait for the import, retry. */
export const UNKNOWN_DEVICE = 2;
export const FAILED = 3;

const EEXIST = -17;
const EAGAIN = -11;

export interface RegionInfo {
  handle: number;
  shared: Int32Array;
  pages: number;
  /** Pages migrated back per device fault, at most (1: just the faulting page). */
  faultAround: number;
  address: bigint;
  pageSize: number;
}

export interface DeviceInfo {
  slot: number;
  id: number;
  name: string;
  capacity: number;
  shared: Int32Array;
  driverUrl: string | undefined;
  driver: Driver | undefined;
  /** The driver module is still being imported: its faults wait for it rather than skip its hook. */
  driverLoading: boolean;
}

export interface PolicyHost {
  devices: (DeviceInfo | undefined)[];
  /** A driver hook threw or answered wrongly: the fault is still served, and this reports the error. */
  hookError(device: DeviceInfo, hook: 'fault' | 'pageFree', err: unknown): void;
}

/** The one reused context handed to `fault` hooks; `address` is computed only if read. */
class HookContext implements FaultContext {
  deviceName = '';
  pfn = 0;
  page = 0;
  write = false;
  kernelMode = false;
  base = 0n;
  pageSize = 4096;
  get address(): bigint {
    return this.base + BigInt(this.page * this.pageSize);
  }
}
const hookCtx = new HookContext();
const freeCtx = { deviceName: '', pfn: 0 };

function askDriver(host: PolicyHost, dev: DeviceInfo, r: RegionInfo, page: number, pfn: number, flags: number): boolean {
  const hook = dev.driver!.fault!;
  hookCtx.deviceName = dev.name;
  hookCtx.pfn = pfn;
  hookCtx.page = page;
  hookCtx.write = (flags & UFFD_PAGEFAULT_FLAG_WRITE) !== 0;
  hookCtx.kernelMode = (flags & FAULT_KERNEL) !== 0;
  hookCtx.base = r.address;
  hookCtx.pageSize = r.pageSize;
  let decision: unknown;
  try {
    decision = hook(hookCtx);
  } catch (e) {
    host.hookError(dev, 'fault', e);
    return false;
  }
  if (decision === 'sigbus') return true;
  if (decision === undefined || decision === 'migrate') return false;
  // A driver bug, reported rather than guessed at: the fault migrates back (the default).
  if (decision !== null && typeof (decision as { then?: unknown }).then === 'function') {
    (decision as Promise<unknown>).then(undefined, () => {}); // its rejection is this report, not a crash
    host.hookError(dev, 'fault', new TypeError("a fault hook must decide synchronously: it returned a Promise (is it async?)"));
  } else {
    host.hookError(dev, 'fault', new TypeError(`a fault hook must return 'migrate' or 'sigbus', not ${String(decision)}`));
  }
  return false;
}

/** Calls the driver's pageFree hook for a device page whose last reference just went. */
function pageFreed(host: PolicyHost, dev: DeviceInfo, pfn: number): void {
  const hook = dev.driver?.pageFree;
  if (hook === undefined) return;
  freeCtx.deviceName = dev.name;
  freeCtx.pfn = pfn;
  try {
    hook(freeCtx);
  } catch (e) {
    host.hookError(dev, 'pageFree', e);
  }
}

const VERDICT_NONE = 0;
const VERDICT_MIGRATE = 1;
const VERDICT_SIGBUS = 2;

/**
 * A driver's answer carried across a retry. When the fill that follows the fault hook's decision
 * is refused with EAGAIN (an event waits to be read), the fault is served again later: with the
 * same answer, so that one CPU access asks the hook once (and a refusal cannot turn into a
 * migration on the second try). The caller sets `verdict` to 0 for a new fault or restores what
 * it kept for a deferred one; serveFault leaves here the answer to keep when it returns DEFERRED.
 * It applies only while the page holds the same entry (state word and device page). One object,
 * reused: the hot path allocates nothing.
 */
export const carried = { verdict: VERDICT_NONE, state: 0, pfn: 0 };

// Counter bits for native.regionComplete: region header words, then device header words.
const S_FAULTS = 1 << STAT_FAULTS;
const S_WRITE = 1 << STAT_WRITE_FAULTS;
const S_WP = 1 << STAT_WP_FAULTS;
const S_KERNEL = 1 << STAT_KERNEL_FAULTS;
const S_BACK = 1 << STAT_MIGRATED_BACK;
const S_ZERO = 1 << STAT_ZERO_FILLS;
const S_POISON = 1 << STAT_POISONED;
const S_RACED = 1 << STAT_FILL_RACED;
const D_FAULTS = 1 << (STAT_DEVICE_SHIFT + DEV_FAULTS);
const D_TO_RAM = 1 << (STAT_DEVICE_SHIFT + DEV_MIGRATED_TO_RAM);

/**
 * Fault-around: locks the pages after `page` (locked already, state s, device page pfn) whose
 * entries name the following device pages with the same kind, up to r.faultAround in all, and
 * returns how many pages from `page` on are locked. native/policy.cc lockNeighbours is its twin.
 */
function lockNeighbours(r: RegionInfo, page: number, s: number, pfn: number, dev: DeviceInfo): number {
  const shared = r.shared;
  let k = 1;
  while (k < r.faultAround && page + k < r.pages && pfn + k < dev.capacity) {
    const idx = stateIndex(page + k);
    // Same kind, write bit and device (the whole state word), the next device page, mapped once.
    if (Atomics.load(shared, idx) !== s || shared[idx + 1] !== pfn + k) break;
    if (devicePageRefcount(dev.shared, pfn + k) !== 1) break;
    if (Atomics.compareExchange(shared, idx, s, s | LOCKED) !== s) break;
    k++;
  }
  return k;
}

/**
 * A huge device entry comes back whole, as the kernel migrates the folio back: locks the other
 * entries of page's PMD-aligned block if they still make one huge entry with it (same state word,
 * the matching pfns of one aligned huge device page, mapped once) and returns the block's first
 * page. Otherwise (split meanwhile, or the CPU side's huge allocation made to fail with
 * HMM_DMIRROR_FLAG_FAIL_ALLOC) returns -1 and only `page` comes back. Twin of native/policy.cc.
 */
function lockHugeBlock(r: RegionInfo, page: number, s: number, pfn: number, dev: DeviceInfo): number {
  const n = PMD_SIZE / r.pageSize;
  const off = (Number((r.address / BigInt(r.pageSize)) % BigInt(n)) + page) % n;
  const first = page - off;
  const pfn0 = pfn - off;
  if (first < 0 || first + n > r.pages || pfn0 < 0 || pfn0 % n !== 0 || pfn0 + n > dev.capacity) return -1;
  const shared = r.shared;
  let i = 0;
  for (; i < n; i++) {
    if (i === off) continue;
    const idx = stateIndex(first + i);
    if (Atomics.load(shared, idx) !== s || shared[idx + 1] !== pfn0 + i) break;
    if (devicePageRefcount(dev.shared, pfn0 + i) !== 1) break;
    if (Atomics.compareExchange(shared, idx, s, s | LOCKED) !== s) break;
  }
  if (i === n && Atomics.exchange(dev.shared, DEV_FAIL_ALLOC, 0) === 0) return first;
  for (let j = 0; j < i; j++) if (j !== off) unlockPage(shared, first + j, s);
  return -1;
}

/**
 * A zap of pages [first, first + count) by anyone (EVENT_REMOVE from madvise, EVENT_UNMAP from
 * munmap), as zap_pte_range treats device entries: the reference is dropped and the device page
 * freed on the last one; every page reads as zero afterwards. Locked pages are our own migration
 * or discard in progress, which keeps its own books.
 */
export function zapRange(host: PolicyHost, r: RegionInfo, first: number, count: number, unmapped: boolean): void {
  const shared = r.shared;
  const end = Math.min(first + count, r.pages);
  for (let page = first; page < end; page++) {
    const idx = stateIndex(page);
    for (;;) {
      const s = Atomics.load(shared, idx);
      if ((s & LOCKED) !== 0) {
        // Our own zap (the lock holder flagged it) or a page mid-migration: its holder keeps the
        // books. A migration must learn of the zap, or it would publish what the zap dropped.
        if ((s & ZAPPING) !== 0) {
          Atomics.and(shared, idx, ~ZAPPING);
          Atomics.add(shared, UNLOCK_SEQ, 1);
          Atomics.notify(shared, UNLOCK_SEQ);
        } else {
          Atomics.or(shared, idx, ZAP_PENDING | (unmapped ? UNMAPPED : 0));
        }
        break;
      }
      if (Atomics.compareExchange(shared, idx, s, s | LOCKED) !== s) continue;
      const next = KIND_NONE | (unmapped || (s & UNMAPPED) !== 0 ? UNMAPPED : 0);
      const dev = (s & KIND_MASK) === KIND_DEVICE ? host.devices[(s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT] : undefined;
      if (dev !== undefined) {
        const pfn = shared[idx + 1];
        if (native.regionComplete(r.handle, page, next, dev.slot, pfn, 0) === 1) pageFreed(host, dev, pfn);
      } else {
        Atomics.store(shared, idx + 1, 0);
        unlockPage(shared, page, next);
      }
      break;
    }
  }
}

/**
 * Serves one page fault; returns SERVED, DEFERRED, UNKNOWN_DEVICE or FAILED. Each fill is done
 * without waking the thread; the new state is published, then the thread is woken, so it never
 * resumes ahead of the table (the kernel updates the pte before the fault returns).
 */
export function serveFault(host: PolicyHost, r: RegionInfo, page: number, flags: number, tid = 0, t0Us = 0): number {
  if (page >= r.pages) return FAILED;
  const shared = r.shared;
  const idx = stateIndex(page);
  const h = r.handle;
  for (;;) {
    const s = Atomics.load(shared, idx);
    if ((s & LOCKED) !== 0) return DEFERRED;
    if (Atomics.compareExchange(shared, idx, s, s | LOCKED) !== s) continue;
    const kind = s & KIND_MASK;
    let rc = 0;
    let next = s;
    let dev: DeviceInfo | undefined;
    let pfn = 0;
    let around = 1; // pages migrated back by this fault, from `first` on
    let first = page;
    if (kind === KIND_DEVICE) {
      const slot = (s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT;
      dev = host.devices[slot];
      if (dev === undefined || dev.driverLoading) {
        unlockPage(shared, page, s);
        return UNKNOWN_DEVICE;
      }
      pfn = shared[idx + 1];
      let verdict = VERDICT_NONE;
      if (dev.driver?.fault !== undefined) {
        // A retry of this very fault on the same entry keeps the answer it had.
        if (carried.verdict !== VERDICT_NONE && carried.state === s && carried.pfn === pfn) verdict = carried.verdict;
        else verdict = askDriver(host, dev, r, page, pfn, flags) ? VERDICT_SIGBUS : VERDICT_MIGRATE;
        carried.verdict = verdict;
        carried.state = s;
        carried.pfn = pfn;
      }
      if (verdict === VERDICT_SIGBUS) {
        // The driver refused (VM_FAULT_SIGBUS): the page becomes poison and the thread gets SIGBUS.
        rc = native.regionPoison(h, page);
        if (rc === 0) next = KIND_POISON;
      } else {
        const write = (s & WRITE) !== 0;
        if ((s & HUGE) !== 0) {
          const start = lockHugeBlock(r, page, s, pfn, dev);
          if (start >= 0) {
            first = start;
            around = PMD_SIZE / r.pageSize;
          }
        } else if (r.faultAround > 1 && devicePageRefcount(dev.shared, pfn) === 1) {
          around = lockNeighbours(r, page, s, pfn, dev);
        }
        rc = native.regionCopyIn(h, first, slot, pfn - (page - first), !write, around);
        if (rc !== 0 && around > 1) {
          for (let i = 0; i < around; i++) if (first + i !== page) unlockPage(shared, first + i, s);
          around = 1;
          first = page;
          rc = native.regionCopyIn(h, page, slot, pfn, !write);
        }
        if (rc === 0) next = write ? KIND_PRESENT | WRITE : KIND_PRESENT;
      }
    } else if (kind === KIND_PRESENT && (flags & UFFD_PAGEFAULT_FLAG_WP) !== 0) {
      rc = native.regionWriteProtect(h, page, 1, false, false);
      if (rc === 0) next = KIND_PRESENT | WRITE;
    } else if (kind === KIND_POISON) {
      rc = native.regionPoison(h, page);
    } else if ((flags & UFFD_PAGEFAULT_FLAG_MINOR) !== 0) {
      // A private file page with no private copy: the file's own bytes, mapped read-only.
      rc = native.regionContinue(h, page);
      if (rc === 0) next = KIND_PRESENT;
    } else {
      // A hole, or a CPU page zapped behind our back: it reads as zeroes.
      rc = native.regionZeroFill(h, page, (flags & UFFD_PAGEFAULT_FLAG_WRITE) !== 0);
      if (rc === 0) next = KIND_PRESENT | WRITE;
    }
    let raced = 0;
    if (rc === EEXIST) {
      rc = 0; // another path filled it first: keep the state, just wake
      raced = S_RACED;
    }
    if (rc !== 0) {
      unlockPage(shared, page, s);
      if (rc !== EAGAIN) return FAILED;
      // The mm is changing: an event (REMOVE, UNMAP, REMAP, FORK) waits to be read, and the kernel
      // refuses every fill until it is. The worker reads it, then serves this fault again.
      Atomics.add(shared, STAT_FILL_RETRIES, 1);
      return DEFERRED;
    }
    // Publish, count and wake in one native call: a worker terminated here leaves no half-done state.
    let stats = S_FAULTS | raced | ((flags & UFFD_PAGEFAULT_FLAG_WRITE) !== 0 ? S_WRITE : 0) | ((flags & FAULT_KERNEL) !== 0 ? S_KERNEL : 0);
    if (dev !== undefined && next !== s) {
      // Shared with forked children: they get the page back too, as the kernel's rmap walk does.
      if (next !== KIND_POISON && devicePageRefcount(dev.shared, pfn) > 1) native.regionMigrateSharers(h, page, dev.slot, pfn);
      stats |= D_FAULTS | (next === KIND_POISON ? S_POISON : S_BACK | D_TO_RAM);
      const pfn0 = pfn - (page - first);
      for (let i = 0; i < around; i++) {
        if (first + i === page) continue;
        if (native.regionComplete(h, first + i, next, dev.slot, pfn0 + i, S_BACK | D_TO_RAM, false) === 1) pageFreed(host, dev, pfn0 + i);
      }
      const outcome = next === KIND_POISON ? OUTCOME_SIGBUS : OUTCOME_MIGRATED;
      if (native.regionComplete(h, page, next, dev.slot, pfn, stats, around === 1, flags, tid, t0Us, outcome) === 1) {
        pageFreed(host, dev, pfn);
      }
      if (around > 1) native.regionWake(h, first, around);
      return SERVED;
    }
    let outcome = OUTCOME_WOKEN;
    if (kind === KIND_PRESENT && (flags & UFFD_PAGEFAULT_FLAG_WP) !== 0) {
      stats |= S_WP;
      outcome = OUTCOME_UNPROTECTED;
    } else if (next !== s && (flags & UFFD_PAGEFAULT_FLAG_MINOR) !== 0) {
      outcome = OUTCOME_PAGE_CACHE;
    } else if (next !== s) {
      if (kind === KIND_NONE) stats |= S_ZERO;
      outcome = OUTCOME_ZERO_PAGE;
    }
    native.regionComplete(h, page, next, 0, 0, stats, true, flags, tid, t0Us, outcome);
    return SERVED;
  }
}
