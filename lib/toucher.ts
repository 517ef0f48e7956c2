// Native toucher threads: real CPU accesses to a region from threads that are not JS, for tests
// of concurrency (a write racing a migration) and for users who want a faulting thread that does
// not block the event loop.
import { native } from './native.js';
import { UffdHmmError, invalidType, outOfRange, regionClosed } from './errors.js';
import { integer, optionsObject } from './validate.js';
import { Region } from './region.js';
import { FIX_PRIVILEGE } from './probe.js';

/** Options of `new` {@link NativeToucher}. */
export interface ToucherOptions {
  /** Threads to start (1..64). Default 1. */
  threads?: number;
  /** Touches per thread, 0 to 2^32 − 1; 0 runs until stop(). */
  iterations: number;
  /**
   * 'read' reads one byte; 'increment' adds 1 to the page's uint32 at offset 4 × thread index.
   * 'lock' is uffd-stress's locking test: each touch takes the process-private pthread mutex whose
   * bytes start at byte 256 of the page (zeroed bytes are an unlocked mutex), adds 1 with a plain
   * load and store to the page's uint32 at byte 512 and to the uint32 at 4 × thread index, and
   * unlocks. A contended mutex sleeps in futex(2) on the page, so the faults it takes there are
   * kernel-mode faults: 'worker' and 'native' regions on a full userfaultfd only.
   */
  mode?: 'read' | 'increment' | 'lock';
  /** Pages to choose from (uniformly at random). Default: every page. */
  pages?: ArrayLike<number>;
  /** Seed of the per-thread random sequences. */
  seed?: number;
}

const MODES = { read: 0, increment: 1, lock: 2 } as const;

/**
 * 'lock' takes faults inside futex(2), a system call: where such a fault cannot be served, glibc's
 * mutex would see EFAULT from futex(2), which it treats as fatal (the process aborts).
 */
function refuseLock(region: Region): void {
  if (region.servicer === 'inline') {
    throw new UffdHmmError(
      'ERR_SERVICER_UNSUPPORTED',
      "NativeToucher mode 'lock' sleeps in futex(2) on the pages, and the 'inline' servicer cannot serve a fault taken inside a " +
        "system call (the kernel has no SIGBUS to deliver there: futex(2) would fail with EFAULT); map the region with servicer 'worker' or 'native'",
    );
  }
  if (region.userModeOnly) {
    throw new UffdHmmError(
      'ERR_SERVICER_UNSUPPORTED',
      "NativeToucher mode 'lock' sleeps in futex(2) on the pages, a kernel-mode fault, which this process's user-mode-only " +
        `userfaultfd cannot serve; it needs full userfaultfd: ${FIX_PRIVILEGE}`,
    );
  }
}

/**
 * Native threads that touch a region's pages (real CPU loads and stores, not JS) while JS keeps
 * running: for tests of concurrency (a write racing a migration, many threads faulting the same
 * page) and for a faulting thread that does not block the event loop. Each touch of a
 * device-resident page is a real fault, served by the region's servicer whatever it is.
 *
 * @example
 * ```ts
 * const t = new NativeToucher(region, { threads: 4, iterations: 10_000, mode: 'increment' });
 * region.migrate(0, region.pages, gpu);  // races the touchers: every increment survives
 * await t.finished(30_000);
 * t.counts();                            // [10000, 10000, 10000, 10000]
 * ```
 */
export class NativeToucher {
  readonly #handle: number;
  #done = false;
  /** Threads started. */
  readonly threads: number;
  /** Touches per thread (0: until {@link NativeToucher#stop}). */
  readonly iterations: number;
  readonly #counts: Float64Array;

  /**
   * Starts the threads at once; they run until they made `iterations` touches or are stopped.
   *
   * @param region - an open {@link Region} (any servicer).
   * @param options - threads, iterations (required), mode, pages, seed.
   * @throws `ERR_REGION_CLOSED` for a closed region; `ERR_SERVICER_UNSUPPORTED` for mode 'lock' on
   * an `'inline'` region or a user-mode-only userfaultfd; `TypeError` (`ERR_INVALID_ARG_TYPE`) when
   * `region` is not a Region or an option has the wrong type or mode; `RangeError`
   * (`ERR_OUT_OF_RANGE`) for values out of range (a page outside the region included).
   */
  constructor(region: Region, options: ToucherOptions) {
    // A Region, not anything with a numeric handle: a forged handle would aim the threads at
    // whichever region has that handle, mprotected or moving under them.
    if (!(region instanceof Region)) throw invalidType('region', 'a Region', region);
    if (region.closed) throw regionClosed();
    const opts = optionsObject('options', options);
    this.threads = opts.threads === undefined ? 1 : integer('options.threads', opts.threads, 1, 64);
    this.iterations = integer('options.iterations', opts.iterations, 0, 0xffffffff);
    const mode = opts.mode ?? 'read';
    if (mode !== 'read' && mode !== 'increment' && mode !== 'lock') throw invalidType('options.mode', "'read', 'increment' or 'lock'", mode);
    if (mode === 'lock') refuseLock(region);
    const seed = opts.seed === undefined ? 1 : integer('options.seed', opts.seed, 0, 0xffffffff);
    let pages: Int32Array;
    if (opts.pages === undefined) {
      pages = Int32Array.from({ length: region.pages }, (_, i) => i);
    } else {
      const list = opts.pages as ArrayLike<number>;
      if (list === null || typeof list !== 'object' || typeof list.length !== 'number') {
        throw invalidType('options.pages', 'an array of page numbers', list);
      }
      if (list.length === 0) throw outOfRange('options.pages.length', 'at least 1 (leave options.pages out for every page)', 0);
      pages = new Int32Array(list.length);
      for (let i = 0; i < list.length; i++) pages[i] = integer('options.pages[i]', list[i], 0, region.pages - 1);
    }
    this.#counts = new Float64Array(this.threads);
    this.#handle = native.toucherStart(region.handle, this.threads, this.iterations, MODES[mode], seed, pages);
  }

  /**
   * Waits up to `timeoutMs` for every thread to finish; true when they did. Blocks the calling
   * thread, event loop included: use {@link NativeToucher#finished} to wait without blocking.
   *
   * @throws `RangeError` (`ERR_OUT_OF_RANGE`) for a timeout outside 0 to 600000 ms.
   */
  wait(timeoutMs: number): boolean {
    integer('timeoutMs', timeoutMs, 0, 600_000);
    if (this.#done) return true;
    this.#done = native.toucherWait(this.#handle, timeoutMs, this.#counts);
    return this.#done;
  }

  /** Asks every thread to stop after its current touch (they finish on their own otherwise). */
  stop(): void {
    if (!this.#done) native.toucherStop(this.#handle);
  }

  /**
   * Touches each thread made, one number per thread.
   *
   * @throws `ERR_TOUCHER_RUNNING` until {@link NativeToucher#wait} returned true (or `finished` resolved).
   */
  counts(): number[] {
    if (!this.#done) {
      throw new UffdHmmError('ERR_TOUCHER_RUNNING', 'the touchers are still running; call wait(timeoutMs) until it returns true (stop() ends them sooner)');
    }
    return [...this.#counts];
  }

  /**
   * Waits for every thread to finish without blocking the event loop (it polls every 5 ms).
   *
   * @throws (rejects with) `ERR_TOUCHER_TIMEOUT` when they have not finished after `timeoutMs`;
   * `RangeError` (`ERR_OUT_OF_RANGE`) for a timeout outside 0 to 600000 ms.
   */
  async finished(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + integer('timeoutMs', timeoutMs, 0, 600_000);
    while (!this.wait(0)) {
      if (Date.now() > deadline) {
        throw new UffdHmmError(
          'ERR_TOUCHER_TIMEOUT',
          `native touchers did not finish within ${timeoutMs} ms; give finished() more time, or call stop() first (iterations 0 runs until stop())`,
        );
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}
