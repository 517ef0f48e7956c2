// Zapping a region's entries (zap_pte_range, madvise(MADV_DONTNEED / MADV_FREE), munmap): device
// entries drop their reference, and our own zaps are told apart from everyone else's.
import { native } from '../native.js';
import { check } from '../errors.js';
import { optionalBoolean, optionsObject, pageRange } from '../validate.js';
import { DEVICE_SHIFT, KIND_DEVICE, KIND_MASK, KIND_NONE, MAX_DEVICE_SLOT, UNMAPPED, ZAP_BATCHES_DONE, ZAP_BATCHES_READ, ZAP_READING, stateIndex } from '../layout.js';
import { forRuns, lockDeadline, lockRange, markZapping, nap, release, unlockPage, unmarkZapping, waitZapsSeen } from '../pagelock.js';
import { deviceBySlot } from '../device.js';
import { checkHugeAligned } from './backing.js';
import { pageSpan, type RegionCore } from './vma.js';

/** Options of `region.discard`. */
export interface DiscardOptions {
  /**
   * MADV_FREE instead of MADV_DONTNEED: the CPU pages are freed only if memory runs short before
   * they are written again (then they read as zeroes); device entries stay where they are, as
   * madvise_free_pte_range skips non-present entries. Private anonymous regions only (EINVAL
   * otherwise, as madvise(2) says).
   */
  free?: boolean;
}

/** MADV_DONTNEED or MADV_FREE over the range (Region#discard). */
export function discard(core: RegionCore, first: number, count: number, options: DiscardOptions | undefined): void {
  const [f, c] = pageRange(first, count, core.pages);
  const free = optionalBoolean('options.free', optionsObject('options', options).free) ?? false;
  checkHugeAligned(core.mapping, 'discard', f, c);
  if (c === 0) return;
  const old = lockRange(core.shared, f, c);
  if (free) {
    // The table does not change: device entries stay, and a CPU page that reclaim frees meanwhile
    // comes back through a missing fault on a 'present' page, which reads zeroes (serveFault).
    // The kernel still sends EVENT_REMOVE for it: the zap handshake keeps the servicer off.
    try {
      forRuns(f, c, (i) => (old[i] & UNMAPPED) === 0, (a, n) => zapLocked(core, a, n, true));
    } finally {
      for (let i = 0; i < c; i++) release(core.shared, f + i, old[i]);
    }
    return;
  }
  let zapped = 0; // pages [f, f+zapped) are zapped (or were never mapped)
  try {
    // madvise only what is still mapped: pages someone munmapped have nothing left to zap.
    forRuns(f, c, (i) => (old[i] & UNMAPPED) === 0, (a, n) => zapLocked(core, a, n, false, () => (zapped = a + n - f)));
    zapped = c;
  } finally {
    // A run madvise refused keeps its entries (the kernel changed nothing there).
    for (let i = zapped; i < c; i++) release(core.shared, f + i, old[i]);
    for (let i = 0; i < zapped; i++) {
      const s = old[i];
      if ((s & KIND_MASK) === KIND_DEVICE) {
        deviceBySlot((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT)!.putPage(core.shared[stateIndex(f + i) + 1]);
      }
      core.shared[stateIndex(f + i) + 1] = 0;
      unlockPage(core.shared, f + i, KIND_NONE | (s & UNMAPPED));
    }
  }
}

/**
 * MADV_DONTNEED over pages this thread holds locked. The kernel reports it to the servicer as an
 * EVENT_REMOVE, which must not be mistaken for someone else's zap once the pages are unlocked:
 * each page is flagged ZAPPING, and the lock is kept until the servicer has seen the event and
 * cleared the flag. `zapped` is called once the kernel has zapped them: a throw before it means
 * the kernel changed nothing (madvise refused), after it that the servicer never saw the event.
 */
export function zapLocked(core: RegionCore, first: number, count: number, free = false, zapped?: () => void): void {
  const shared = core.shared;
  if (core.zapEvents) markZapping(shared, first, count);
  const rc = native.regionDiscard(core.handle, first, count, free);
  if (rc !== 0) {
    // No event will come to clear the marks.
    if (core.zapEvents) unmarkZapping(shared, first, count);
    if (free) check(rc, 'madvise(MADV_FREE)', `freeing ${pageSpan(first, count)}`, 'MADV_FREE takes private anonymous memory only; discard without { free } instead');
    else check(rc, 'madvise(MADV_DONTNEED)', `zapping ${pageSpan(first, count)}`);
  }
  zapped?.();
  if (core.zapEvents) waitZapsSeen(shared, first, count);
}

/**
 * Waits until the servicer has applied the REMOVE/UNMAP events of every batch of messages it
 * read before now, so that a zap by someone else of a page we hold locked has been marked
 * ZAP_PENDING by the time we publish the page. Cheap when nothing is in flight (three loads); on
 * a stuck servicer it gives up after the page-lock deadline and publishes as before.
 */
export function settleZaps(core: RegionCore): void {
  if (!core.zapEvents) return;
  const s = core.shared;
  let target: number | undefined;
  let deadline = 0;
  for (let spins = 0; ; spins++) {
    if (target === undefined && Atomics.load(s, ZAP_READING) === 0) target = Atomics.load(s, ZAP_BATCHES_READ);
    if (target !== undefined && ((Atomics.load(s, ZAP_BATCHES_DONE) - target) | 0) >= 0) return;
    if (spins < 64) continue;
    if (deadline === 0) deadline = Date.now() + lockDeadline();
    else if (Date.now() > deadline) return;
    nap();
  }
}

/**
 * Zaps every entry of the region (munmap in lib/mm/mmap.ts): device pages lose its reference. All
 * or nothing: every page is locked first, so a page held past the deadline (a slow driver hook)
 * leaves the region as it was, for a later try.
 */
export function zapAll(core: RegionCore): void {
  const shared = core.shared;
  const old = lockRange(shared, 0, core.pages);
  for (let page = 0; page < core.pages; page++) {
    const s = old[page];
    if ((s & KIND_MASK) === KIND_DEVICE) {
      deviceBySlot((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT)!.putPage(shared[stateIndex(page) + 1]);
    }
    shared[stateIndex(page) + 1] = 0;
    unlockPage(shared, page, KIND_NONE);
  }
}
