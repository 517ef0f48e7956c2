// The migration entry: a page's state word with LOCKED set. Whoever moves a page (a migration on
// the main thread, a servicer migrating it back) holds it; everyone else waits for the unlock.
// The only TypeScript that sets or clears LOCKED, ZAPPING and ZAP_PENDING (docs/PROTOCOL.md). Every
// lock taken here is the region owner's (HOLDER_OWNER): a takeover of a stuck servicer leaves it.
import { HOLDER_MASK, HOLDER_OWNER, KIND_DEVICE, KIND_MASK, KIND_NONE, DEVICE_SHIFT, LOCKED, MAX_DEVICE_SLOT, STAT_FILL_RETRIES, UNLOCK_SEQ, UNLOCK_WAITERS, UNMAPPED, ZAPPING, ZAP_PENDING, stateIndex } from './layout.js';
import { UffdHmmError, check } from './errors.js';
import { deviceBySlot } from './device.js';

/** How long a page may stay locked before waiting on it is treated as a hang. */
export const LOCK_DEADLINE_MS = 10_000;
let lockDeadlineMs = LOCK_DEADLINE_MS;

/** The page-lock deadline in force: {@link LOCK_DEADLINE_MS}, unless a test shortened it. */
export function lockDeadline(): number {
  return lockDeadlineMs;
}

/**
 * @internal TEST ONLY: sets the page-lock deadline (every wait that uses {@link lockDeadline}), so
 * that a test of what a timeout leaves behind takes a second, not ten. Not exported from the package.
 */
export function setLockDeadlineForTest(ms: number): void {
  lockDeadlineMs = ms;
}

const EAGAIN = -11;

/** Nothing ever notifies it: Atomics.wait on it is a short sleep. */
const napWord = new Int32Array(new SharedArrayBuffer(4));

/** Sleeps 50 µs, for loops that wait on another thread without a word to wait on. */
export function nap(): void {
  Atomics.wait(napWord, 0, 0, 0.05);
}

/**
 * Locks `page` and returns its state word as it was. Only for threads that may block: the
 * servicers never call this (they defer a locked page and keep reading faults).
 */
export function lockPage(shared: Int32Array, page: number): number {
  const idx = stateIndex(page);
  let deadline = 0;
  for (let spins = 0; ; spins++) {
    const s = Atomics.load(shared, idx);
    if ((s & LOCKED) === 0) {
      if (Atomics.compareExchange(shared, idx, s, s | LOCKED | HOLDER_OWNER) === s) return s;
      continue;
    }
    if (spins < 64) continue;
    if (deadline === 0) deadline = Date.now() + lockDeadlineMs;
    else if (Date.now() > deadline) {
      throw new UffdHmmError(
        'ERR_PAGE_LOCK_TIMEOUT',
        `page ${page} stayed locked for over ${lockDeadlineMs} ms: its servicer is stuck, probably in a driver fault hook ` +
          'that does not return; fix the hook, or keep configureServicers({ stallDeadlineMs }) ' +
          `below ${LOCK_DEADLINE_MS} ms (the default 5000 is) so that a native guard takes over a stuck servicer`,
      );
    }
    // Native holders (the fault engine) bump UNLOCK_SEQ but cannot notify: a servicer holds a page
    // for microseconds (its fill wakes the faulting thread just before it unlocks), so look again
    // soon at first, then every millisecond.
    sleepOnUnlock(shared, idx, LOCKED, spins < 256 ? 0.02 : 1);
  }
}

/**
 * Sleeps up to `ms` while `bit` is set in the word at `idx`, woken by the next unlock. Registered
 * as a waiter (UNLOCK_WAITERS) meanwhile: native unlockers bump UNLOCK_SEQ only while one is.
 */
function sleepOnUnlock(shared: Int32Array, idx: number, bit: number, ms: number): void {
  Atomics.add(shared, UNLOCK_WAITERS, 1);
  const seq = Atomics.load(shared, UNLOCK_SEQ);
  if ((Atomics.load(shared, idx) & bit) !== 0) Atomics.wait(shared, UNLOCK_SEQ, seq, ms);
  Atomics.sub(shared, UNLOCK_WAITERS, 1);
}

/** Publishes the page's new state (LOCKED clear) and wakes anyone waiting for an unlock. */
export function unlockPage(shared: Int32Array, page: number, state: number): void {
  Atomics.store(shared, stateIndex(page), state & ~(LOCKED | HOLDER_MASK));
  wakeUnlockWaiters(shared);
}

/** After an unlock: bumps UNLOCK_SEQ and wakes its sleepers, if any sleep (a migration unlocks every page it moved). */
function wakeUnlockWaiters(shared: Int32Array): void {
  if (Atomics.load(shared, UNLOCK_WAITERS) === 0) return;
  Atomics.add(shared, UNLOCK_SEQ, 1);
  Atomics.notify(shared, UNLOCK_SEQ);
}

/**
 * Locks pages [first, first + count) in order and returns their state words as they were. All or
 * nothing: when a page stays locked past the deadline, the pages it took are released (a zap that
 * came meanwhile applied, see {@link release}) before ERR_PAGE_LOCK_TIMEOUT is thrown.
 */
export function lockRange(shared: Int32Array, first: number, count: number): Int32Array {
  const old = new Int32Array(count);
  let i = 0;
  try {
    for (; i < count; i++) old[i] = lockPage(shared, first + i);
  } catch (e) {
    for (let j = 0; j < i; j++) release(shared, first + j, old[j]);
    throw e;
  }
  return old;
}

/**
 * Locks `page` if nobody holds it and returns its state word as it was, or -1 without waiting.
 * For a holder that must not wait for one page while it holds others (a run of pages grows only
 * while the next one is free).
 */
export function tryLockPage(shared: Int32Array, page: number): number {
  const idx = stateIndex(page);
  for (;;) {
    const s = Atomics.load(shared, idx);
    if ((s & LOCKED) !== 0) return -1;
    if (Atomics.compareExchange(shared, idx, s, s | LOCKED | HOLDER_OWNER) === s) return s;
  }
}

/**
 * Writes `state` (and `pfn`) as a locked page into a table no servicer sees yet (remap's new
 * table): the page stays held until the holder unlocks it there.
 */
export function placeLocked(table: Int32Array, page: number, state: number, pfn = 0): void {
  table[stateIndex(page)] = state | LOCKED | HOLDER_OWNER;
  table[stateIndex(page) + 1] = pfn;
}

/**
 * Carries a zap of a page we hold over from one table to another (remap's new table, which we
 * publish from): the servicer marks ZAP_PENDING (and UNMAPPED) in whichever table it serves until
 * it switches to the new one.
 */
export function carryZap(from: Int32Array, to: Int32Array, page: number): void {
  const zap = Atomics.load(from, stateIndex(page)) & (ZAP_PENDING | UNMAPPED);
  if (zap !== 0) Atomics.or(to, stateIndex(page), zap);
}

/** The page's state word without the lock bit: what it holds, whoever holds it. */
export function stateOf(shared: Int32Array, page: number): number {
  return Atomics.load(shared, stateIndex(page)) & ~(LOCKED | HOLDER_MASK);
}

/**
 * Unlocks a page we hold with its new state, unless someone zapped it meanwhile (ZAP_PENDING):
 * then it becomes none (unmapped if it was munmapped), as the zap leaves it, and this returns
 * false so that the caller drops what the page held.
 */
export function publish(shared: Int32Array, page: number, next: number): boolean {
  const idx = stateIndex(page);
  for (;;) {
    const cur = Atomics.load(shared, idx);
    const zapped = (cur & ZAP_PENDING) !== 0;
    if (zapped) shared[idx + 1] = 0;
    if (Atomics.compareExchange(shared, idx, cur, (zapped ? KIND_NONE | (cur & UNMAPPED) : next) & ~(LOCKED | HOLDER_MASK)) !== cur) continue;
    wakeUnlockWaiters(shared);
    return !zapped;
  }
}

/** Unlocks a page we hold unchanged; if someone zapped it meanwhile, drops its device page. */
export function release(shared: Int32Array, page: number, s: number): void {
  const pfn = shared[stateIndex(page) + 1];
  if (!publish(shared, page, s) && (s & KIND_MASK) === KIND_DEVICE) deviceBySlot((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT)!.putPage(pfn);
}

/** Someone else zapped this locked page while it is still mapped: its holder must zap it too. */
export function zapPendingAt(shared: Int32Array, page: number): boolean {
  return (Atomics.load(shared, stateIndex(page)) & (ZAP_PENDING | UNMAPPED)) === ZAP_PENDING;
}

/**
 * Drops the ZAP_PENDING mark of a page we hold whose zap we could not carry out (the kernel refused
 * our madvise and changed nothing): it is published as what it holds.
 */
export function forgetZap(shared: Int32Array, page: number): void {
  Atomics.and(shared, stateIndex(page), ~ZAP_PENDING);
}

/** Flags pages we hold as zapped by us, so that the servicer tells our EVENT_REMOVE from others'. */
export function markZapping(shared: Int32Array, first: number, count: number): void {
  for (let p = first; p < first + count; p++) Atomics.or(shared, stateIndex(p), ZAPPING);
}

/** Clears the flags of {@link markZapping} when no event will come to clear them. */
export function unmarkZapping(shared: Int32Array, first: number, count: number): void {
  for (let p = first; p < first + count; p++) Atomics.and(shared, stateIndex(p), ~ZAPPING);
}

/**
 * Waits until the servicer has seen the EVENT_REMOVE of our own zap of pages [first, first +
 * count) and cleared their ZAPPING flags; throws ERR_SERVICER_STALLED past the page-lock deadline.
 */
export function waitZapsSeen(shared: Int32Array, first: number, count: number): void {
  const deadline = Date.now() + lockDeadlineMs;
  for (let p = first, spins = 0; p < first + count; ) {
    if ((Atomics.load(shared, stateIndex(p)) & ZAPPING) === 0) {
      p++;
      continue;
    }
    if (++spins < 256) continue;
    if (Date.now() > deadline) {
      unmarkZapping(shared, p, first + count - p);
      throw new UffdHmmError(
        'ERR_SERVICER_STALLED',
        `the servicer did not see our own MADV_DONTNEED of page ${p} within ${lockDeadlineMs} ms: it is stuck, ` +
          'probably in a driver fault hook that does not return; fix the hook, or keep configureServicers({ stallDeadlineMs }) ' +
          `below ${LOCK_DEADLINE_MS} ms (the default 5000 is) so that a native guard takes over a stuck servicer`,
      );
    }
    sleepOnUnlock(shared, stateIndex(p), ZAPPING, 0.05);
  }
}

/**
 * Calls a native operation on pages we hold until it stops failing with EAGAIN. EAGAIN means the
 * mm is changing: an event (REMOVE, UNMAP, REMAP, FORK) waits to be read, and the kernel refuses
 * every fill until the servicer has read it, however often we ask. That lasts as long as the
 * servicer is busy (a slow driver hook, a loaded machine), so wait for it by time, with the
 * deadline of a locked page, napping between tries; counting tries gave up after ~100 ms of a busy
 * servicer.
 */
export function retry(shared: Int32Array, op: () => number, syscall: string, context: string): void {
  let deadline = 0;
  for (let i = 0; ; i++) {
    const rc = op();
    if (rc !== EAGAIN) return check(rc, syscall, context);
    Atomics.add(shared, STAT_FILL_RETRIES, 1);
    if (i < 64) continue;
    if (deadline === 0) deadline = Date.now() + lockDeadlineMs;
    else if (Date.now() > deadline) {
      check(
        rc,
        syscall,
        `${context}; the mm kept changing for over ${lockDeadlineMs} ms`,
        'the servicer left a userfaultfd event unread (a hung driver hook?); fix the hook or retry the call',
      );
    }
    nap();
  }
}

/** Calls fn(start, length) for each maximal run of pages [f+i] where pred(i) holds. */
export function forRuns(f: number, n: number, pred: (i: number) => boolean, fn: (start: number, length: number) => void): void {
  let i = 0;
  while (i < n) {
    if (!pred(i)) {
      i++;
      continue;
    }
    let j = i;
    while (j < n && pred(j)) j++;
    fn(f + i, j - i);
    i = j;
  }
}

/** The device page a page's entry names, read without locking it (meaningful for device entries). */
export function pfnOf(shared: Int32Array, page: number): number {
  return Atomics.load(shared, stateIndex(page) + 1);
}
