// The fault trace: every fault a servicer serves, recorded into a bounded ring in shared memory
// (native/trace.h writes it, from any servicer, without locks or allocation). This side reads it.
/// <reference types="node" preserve="true" />
import { inspect } from 'node:util';

import { native } from './native.js';
import {
  FAULT_KERNEL,
  OUTCOME_MIGRATED,
  OUTCOME_SIGBUS,
  OUTCOME_UNPROTECTED,
  OUTCOME_WOKEN,
  OUTCOME_ZERO_PAGE,
  OUTCOME_PAGE_CACHE,
  TRACE_CAPACITY,
  TRACE_ENABLED,
  TRACE_HEADER,
  TRACE_NEXT,
  TRACE_OVERWRITTEN,
  TRACE_FLAGS,
  TRACE_OUTCOME,
  TRACE_PAGE,
  TRACE_SEQ,
  TRACE_SERVICE_US,
  TRACE_PFN,
  TRACE_HOOK_US,
  TRACE_SLOT,
  TRACE_STRIDE,
  TRACE_T0,
  TRACE_TID,
  UFFD_PAGEFAULT_FLAG_MINOR,
  UFFD_PAGEFAULT_FLAG_WP,
  UFFD_PAGEFAULT_FLAG_WRITE,
} from './layout.js';
import { deviceBySlot, type Device } from './device.js';
import { summary, type InspectOptionsStylized } from './inspect.js';
import { toChromeTrace, type ChromeTrace, type TraceSpan } from './trace-events.js';

/**
 * How a servicer resolved a fault:
 * - `'migrated'`: a device entry; the page was migrated back (with fault-around, the pages after
 *   it too; a huge entry, its whole PMD).
 * - `'zero-page'`: a hole (`'none'`); a zero page (a read) or a fresh zeroed page (a write) was
 *   mapped.
 * - `'page-cache'`: a minor fault in a private file region; the file's own page was mapped
 *   (UFFDIO_CONTINUE).
 * - `'unprotected'`: a write-protect fault; the page was made writable in place (do_wp_page).
 * - `'sigbus'`: the driver refused (`fault` returned `'sigbus'`); the access failed (SIGBUS, or
 *   EFAULT inside a system call) and the entry stayed.
 * - `'woken'`: the page had been resolved meanwhile (by another fault or a migration); the
 *   thread was only woken to retry.
 */
export type TraceOutcome = 'migrated' | 'zero-page' | 'page-cache' | 'unprotected' | 'sigbus' | 'woken';

/** One served fault, as {@link FaultTrace#records} returns it. */
export interface TraceRecord {
  /** 1-based position in the stream of recorded faults. */
  seq: number;
  /** When the fault was read (or raised, inline), in µs of CLOCK_MONOTONIC. */
  time: number;
  /** Page index in the region. */
  page: number;
  /**
   * 'missing': no CPU page (a device entry or a hole); 'wp': a write to a write-protected page;
   * 'minor': a private file region's page that the page cache has but the pte does not.
   */
  kind: 'missing' | 'wp' | 'minor';
  /** Taken inside a system call (only known with countKernelFaults). */
  kernel: boolean;
  /** The access was a write (a read otherwise). */
  write: boolean;
  /** The faulting thread's id (0 where the servicer cannot tell). */
  tid: number;
  /** The device the page came back from, for 'migrated' and 'sigbus'; null once that device is closed. */
  device: Device | null;
  /** How the fault was resolved. */
  outcome: TraceOutcome;
  /** From the fault being read to the thread being woken, µs. */
  serviceUs: number;
  /** The device page the entry named, for 'migrated' and 'sigbus' (null for other faults). */
  pfn: number | null;
  /** µs inside the driver's `fault` hook (worker servicer, a driver with a hook); 0 when none ran. */
  hookUs: number;
}

/**
 * The same data as {@link TraceRecord}s, as parallel columns (one entry per record, oldest first),
 * for large traces: no object per fault. Numbers are raw, as the ring holds them.
 */
export interface TraceColumns {
  /** {@link TraceRecord.seq}. */
  seq: Float64Array;
  /** {@link TraceRecord.time}, µs of CLOCK_MONOTONIC. */
  time: Float64Array;
  /** {@link TraceRecord.page}. */
  page: Float64Array;
  /** The fault's flags: bit 0 write (UFFD_PAGEFAULT_FLAG_WRITE), bit 1 write-protect (UFFD_PAGEFAULT_FLAG_WP), bit 16 taken in a system call. */
  flags: Float64Array;
  /** {@link TraceRecord.tid}. */
  tid: Float64Array;
  /** The device's internal slot (0: none); {@link FaultTrace#records} turns it into the Device. */
  deviceSlot: Float64Array;
  /** The outcome as a number: 1 migrated, 2 zero-page, 3 unprotected, 4 sigbus, 5 woken. */
  outcome: Float64Array;
  /** {@link TraceRecord.serviceUs}, µs. */
  serviceUs: Float64Array;
  /** The device page the entry named (0 where {@link TraceColumns.deviceSlot} is 0). */
  pfn: Float64Array;
  /** {@link TraceRecord.hookUs}, µs. */
  hookUs: Float64Array;
}

/** What a trace knows of its region, read when it is exported (a remap moves the region). */
export interface TracedRegion {
  /** The mapping's start address now. */
  readonly address: bigint;
  /** The region's page size. */
  readonly pageSize: number;
  /** Who serves its faults: `'worker'`, `'native'` or `'inline'`. */
  readonly servicer: string;
}

const OUTCOMES: Record<number, TraceOutcome> = {
  [OUTCOME_MIGRATED]: 'migrated',
  [OUTCOME_ZERO_PAGE]: 'zero-page',
  [OUTCOME_PAGE_CACHE]: 'page-cache',
  [OUTCOME_UNPROTECTED]: 'unprotected',
  [OUTCOME_SIGBUS]: 'sigbus',
  [OUTCOME_WOKEN]: 'woken',
};

/**
 * The device a record made at `timeUs` on `slot` names: the open device in that slot, if it existed
 * then. Slots are reused: a record made on a device since closed names none, never its successor.
 */
function deviceAt(slot: number, timeUs: number): Device | null {
  if (slot <= 0) return null;
  const device = deviceBySlot(slot);
  return device !== undefined && device.openedUs <= timeUs ? device : null;
}

/**
 * A fault trace attached to one region, from {@link Region#trace}: a bounded ring in shared memory
 * that every servicer writes without locks or allocation, so recording never blocks or slows a
 * fault noticeably; when it is full the oldest records are overwritten (counted in
 * {@link FaultTrace#overflow}). The `uffd-hmm/vitest` matcher `toHaveFaulted` reads it.
 *
 * @example
 * ```ts
 * const trace = region.trace({ capacity: 1024 });
 * region.migrate(0, 8, gpu);
 * region.bytes.fill(1, 0, 8 * region.pageSize);           // 8 write faults, migrated back
 * const slow = trace.records().filter((r) => r.serviceUs > 50);
 * const { page, serviceUs } = trace.columns();            // the same, as Float64Arrays
 * trace.stop();
 * ```
 */
export class FaultTrace {
  /** Records the ring holds; older ones are overwritten past this. */
  readonly capacity: number;
  readonly #header: Int32Array;
  readonly #records: Float64Array;
  readonly #region: number;
  readonly #where: TracedRegion | undefined;
  readonly #spans: TraceSpan[] = [];
  #spansDropped = 0;
  #stopped = false;

  /** @internal Use region.trace(). */
  constructor(regionHandle: number, capacity: number, where?: TracedRegion) {
    this.capacity = capacity;
    this.#region = regionHandle;
    this.#where = where;
    const sab = new SharedArrayBuffer(TRACE_HEADER * 4 + capacity * TRACE_STRIDE * 8);
    this.#header = new Int32Array(sab);
    this.#records = new Float64Array(sab, TRACE_HEADER * 4);
    this.#header[TRACE_CAPACITY] = capacity;
    this.#header[TRACE_ENABLED] = 1;
    native.regionTraceSet(regionHandle, this.#header);
  }

  /** Faults recorded since the start (or the last clear), including those the ring overwrote. */
  get recorded(): number {
    return Atomics.load(this.#header, TRACE_NEXT) >>> 0;
  }

  /** Records lost because the ring wrapped before they were read. Never blocks a fault. */
  get overflow(): number {
    return Atomics.load(this.#header, TRACE_OVERWRITTEN) >>> 0;
  }

  /** True once {@link FaultTrace#stop} was called, by you, by a newer `region.trace()`, or by the region's close. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /**
   * What `console.log(trace)` and `util.inspect` show: `FaultTrace { recorded: 3, capacity: 1024,
   * overflow: 0, stopped: false }` (`[FaultTrace: 3 recorded]` inside another value);
   * {@link FaultTrace#records} has the records themselves.
   */
  [inspect.custom](depth: number, options: InspectOptionsStylized): string {
    return summary('FaultTrace', depth, options, `${this.recorded} recorded`, () => ({
      recorded: this.recorded,
      capacity: this.capacity,
      overflow: this.overflow,
      stopped: this.#stopped,
    }));
  }

  /** The records still in the ring, oldest first, as plain objects. */
  records(): TraceRecord[] {
    const c = this.columns();
    const out: TraceRecord[] = [];
    for (let i = 0; i < c.seq.length; i++) {
      const flags = c.flags[i];
      out.push({
        seq: c.seq[i],
        time: c.time[i],
        page: c.page[i],
        kind: (flags & UFFD_PAGEFAULT_FLAG_WP) !== 0 ? 'wp' : (flags & UFFD_PAGEFAULT_FLAG_MINOR) !== 0 ? 'minor' : 'missing',
        kernel: (flags & FAULT_KERNEL) !== 0,
        write: (flags & UFFD_PAGEFAULT_FLAG_WRITE) !== 0,
        tid: c.tid[i],
        device: deviceAt(c.deviceSlot[i], c.time[i]),
        outcome: OUTCOMES[c.outcome[i]] ?? 'woken',
        serviceUs: c.serviceUs[i],
        pfn: c.deviceSlot[i] > 0 ? c.pfn[i] : null,
        hookUs: c.hookUs[i],
      });
    }
    return out;
  }

  /** The records still in the ring, oldest first, as columns. Records being written are left out. */
  columns(): TraceColumns {
    const next = Atomics.load(this.#header, TRACE_NEXT) >>> 0;
    const n = Math.min(next, this.capacity);
    const cols: TraceColumns = {
      seq: new Float64Array(n),
      time: new Float64Array(n),
      page: new Float64Array(n),
      flags: new Float64Array(n),
      tid: new Float64Array(n),
      deviceSlot: new Float64Array(n),
      outcome: new Float64Array(n),
      serviceUs: new Float64Array(n),
      pfn: new Float64Array(n),
      hookUs: new Float64Array(n),
    };
    let k = 0;
    for (let i = next - n; i < next; i++) {
      const at = (i % this.capacity) * TRACE_STRIDE;
      const seq = this.#records[at + TRACE_SEQ];
      if (seq !== i + 1) continue; // being written, or already overwritten by a newer one
      cols.seq[k] = seq;
      cols.time[k] = this.#records[at + TRACE_T0];
      cols.page[k] = this.#records[at + TRACE_PAGE];
      cols.flags[k] = this.#records[at + TRACE_FLAGS];
      cols.tid[k] = this.#records[at + TRACE_TID];
      cols.deviceSlot[k] = this.#records[at + TRACE_SLOT];
      cols.outcome[k] = this.#records[at + TRACE_OUTCOME];
      cols.serviceUs[k] = this.#records[at + TRACE_SERVICE_US];
      cols.pfn[k] = this.#records[at + TRACE_PFN];
      cols.hookUs[k] = this.#records[at + TRACE_HOOK_US];
      // A writer may have lapped us while we copied: keep the record only if it is still the same.
      if (this.#records[at + TRACE_SEQ] === seq) k++;
    }
    for (const key of Object.keys(cols) as (keyof TraceColumns)[]) cols[key] = cols[key].subarray(0, k);
    return cols;
  }

  /**
   * The trace in the Chrome Trace Event Format (its JSON Object Format, `{ traceEvents }`), which
   * Perfetto UI (ui.perfetto.dev, "Open trace file") and chrome://tracing open:
   * `writeFileSync('faults.json', JSON.stringify(trace.toTraceEvents()))`.
   *
   * One process, with a named track (`thread_name` metadata) for each thread that faulted (its
   * Linux thread id; the main thread is named so) and one for the servicer. Each fault is one
   * complete event (`ph: 'X'`, name `'fault'`) on its thread's track, from the fault being read to
   * the thread being woken (`ts` and `dur` in µs of CLOCK_MONOTONIC), and the same span on the
   * servicer's track (name `'serve'`). A fault's `args` are `page`, `address` (hex), `kind`,
   * `write`, `outcome`, `device` (its name or null), `pfn`, `hookUs` (time in the driver's `fault`
   * hook), `kernel` and `seq`. Migrations made while the trace runs ({@link Region#migrate},
   * {@link Region#migrateToRam}) and spans added with {@link FaultTrace#mark} are events on the
   * main thread's track.
   */
  toTraceEvents(): ChromeTrace {
    return toChromeTrace(this.records(), this.#spans, {
      pid: process.pid,
      address: this.#where?.address ?? 0n,
      pageSize: this.#where?.pageSize ?? 4096,
      servicer: this.#where?.servicer ?? 'worker',
      overflow: this.overflow,
      spansDropped: this.#spansDropped,
    });
  }

  /**
   * Adds a span of your own to the trace, as a complete event on the main thread's track of
   * {@link FaultTrace#toTraceEvents} (the bench's device turns are such spans). Kept up to
   * `capacity` spans; later ones are counted and dropped. Does nothing once stopped.
   *
   * @param name - the event's name, e.g. `'device turn'`.
   * @param startUs - when it began, in µs of CLOCK_MONOTONIC ({@link FaultTrace.now}).
   * @param endUs - when it ended (default: now).
   * @param args - shown with the event: plain JSON values.
   */
  mark(name: string, startUs: number, endUs: number = FaultTrace.now(), args?: Record<string, unknown>): void {
    if (this.#stopped) return;
    if (this.#spans.length >= this.capacity) {
      this.#spansDropped++;
      return;
    }
    this.#spans.push({ name, startUs, durUs: Math.max(0, endUs - startUs), args });
  }

  /** Now, in µs of CLOCK_MONOTONIC: the clock of {@link TraceRecord.time} and {@link FaultTrace#mark}. */
  static now(): number {
    return Number(process.hrtime.bigint()) / 1000;
  }

  /** Forgets what was recorded (the ring starts empty; counters restart at 0). */
  clear(): void {
    this.#spans.length = 0;
    this.#spansDropped = 0;
    Atomics.store(this.#header, TRACE_ENABLED, 0);
    this.#records.fill(0);
    Atomics.store(this.#header, TRACE_OVERWRITTEN, 0);
    Atomics.store(this.#header, TRACE_NEXT, 0);
    if (!this.#stopped) Atomics.store(this.#header, TRACE_ENABLED, 1);
  }

  /** Stops recording; what was recorded stays readable. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    Atomics.store(this.#header, TRACE_ENABLED, 0);
    try {
      native.regionTraceSet(this.#region, null);
    } catch (e) {
      if ((e as { code?: string }).code !== 'ERR_REGION_CLOSED') throw e;
    }
  }
}
