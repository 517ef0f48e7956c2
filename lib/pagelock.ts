// The migration entry: a page's state word with LOCKED set. Whoever moves a page (a migration on
// the main thread, a servicer migrating it back) holds it; everyone else waits for the unlock.
import { LOCKED, UNLOCK_SEQ, stateIndex } from './layout.js';
import { UffdHmmError } from './errors.js';

/** How long a page may stay locked before waiting on it is treated as a hang. */
export const LOCK_DEADLINE_MS = 10_000;

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
      if (Atomics.compareExchange(shared, idx, s, s | LOCKED) === s) return s;
      continue;
    }
    if (spins < 64) continue;
    if (deadline === 0) deadline = Date.now() + LOCK_DEADLINE_MS;
    else if (Date.now() > deadline) {
      throw new UffdHmmError(
        'ERR_PAGE_LOCK_TIMEOUT',
        `page ${page} stayed locked for over ${LOCK_DEADLINE_MS} ms: its servicer is stuck, probably in a driver fault hook ` +
          'that does not return; fix the hook, or keep configureServicers({ stallDeadlineMs }) ' +
          `below ${LOCK_DEADLINE_MS} ms (the default 5000 is) so that a native guard takes over a stuck servicer`,
      );
    }
    const seq = Atomics.load(shared, UNLOCK_SEQ);
    if ((Atomics.load(shared, idx) & LOCKED) !== 0) Atomics.wait(shared, UNLOCK_SEQ, seq, 1);
  }
}

/** Publishes the page's new state (LOCKED clear) and wakes anyone waiting for an unlock. */
export function unlockPage(shared: Int32Array, page: number, state: number): void {
  Atomics.store(shared, stateIndex(page), state & ~LOCKED);
  Atomics.add(shared, UNLOCK_SEQ, 1);
  Atomics.notify(shared, UNLOCK_SEQ);
}

/** The state word (LOCKED included) a page holds now, read without locking it. */
export function peekState(shared: Int32Array, page: number): number {
  return Atomics.load(shared, stateIndex(page));
}

/** The device page a page's entry names, read without locking it (meaningful for device entries). */
export function peekPfn(shared: Int32Array, page: number): number {
  return Atomics.load(shared, stateIndex(page) + 1);
}
