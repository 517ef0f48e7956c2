// The fault trace: every fault a servicer serves, recorded into a bounded ring in shared memory
// (native/trace.h writes it, from any servicer, without locks or allocation). This side reads it.
import { native } from './native.js';
import {
  FAULT_KERNEL,
  OUTCOME_MIGRATED,
  OUTCOME_SIGBUS,
  OUTCOME_UNPROTECTED,
  OUTCOME_WOKEN,
  OUTCOME_ZERO_PAGE,
  TRACE_CAPACITY,
  TRACE_ENABLED,
  TRACE_HEADER,
  TRACE_NEXT,
  TRACE_OVERWRITTEN,
  TRACE_STRIDE,
  UFFD_PAGEFAULT_FLAG_WP,
  UFFD_PAGEFAULT_FLAG_WRITE,
} from './layout.js';
import { deviceBySlot, type Device } from './device.js';

export type TraceOutcome = 'migrated' | 'zero-page' | 'unprotected' | 'sigbus' | 'woken';

export interface TraceRecord {
  /** 1-based position in the stream of recorded faults. */
  seq: number;
  /** When the fault was read (or raised, inline), in µs of CLOCK_MONOTONIC. */
  time: number;
  page: number;
  /** 'missing': no CPU page (a device entry or a hole); 'wp': a write to a write-protected page. */
  kind: 'missing' | 'wp';
  /** Taken inside a system call (only known with countKernelFaults). */
  kernel: boolean;
  write: boolean;
  /** The faulting thread's id (0 where the servicer cannot tell). */
  tid: number;
  /** The device the page came back from, for 'migrated' and 'sigbus'. */
  device: Device | null;
  outcome: TraceOutcome;
  /** From the fault being read to the thread being woken, µs. */
  serviceUs: number;
}

/** The same data as parallel columns, for large traces. */
export interface TraceColumns {
  seq: Float64Array;
  time: Float64Array;
  page: Float64Array;
  flags: Float64Array;
  tid: Float64Array;
  deviceSlot: Float64Array;
  outcome: Float64Array;
  serviceUs: Float64Array;
}

const OUTCOMES: Record<number, TraceOutcome> = {
  [OUTCOME_MIGRATED]: 'migrated',
  [OUTCOME_ZERO_PAGE]: 'zero-page',
  [OUTCOME_UNPROTECTED]: 'unprotected',
  [OUTCOME_SIGBUS]: 'sigbus',
  [OUTCOME_WOKEN]: 'woken',
};

/** A fault trace attached to one region; see Region.trace. */
export class FaultTrace {
  readonly capacity: number;
  readonly #header: Int32Array;
  readonly #records: Float64Array;
  readonly #region: number;
  #stopped = false;

  /** @internal Use region.trace(). */
  constructor(regionHandle: number, capacity: number) {
    this.capacity = capacity;
    this.#region = regionHandle;
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

  get stopped(): boolean {
    return this.#stopped;
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
        kind: (flags & UFFD_PAGEFAULT_FLAG_WP) !== 0 ? 'wp' : 'missing',
        kernel: (flags & FAULT_KERNEL) !== 0,
        write: (flags & UFFD_PAGEFAULT_FLAG_WRITE) !== 0,
        tid: c.tid[i],
        device: c.deviceSlot[i] > 0 ? (deviceBySlot(c.deviceSlot[i]) ?? null) : null,
        outcome: OUTCOMES[c.outcome[i]] ?? 'woken',
        serviceUs: c.serviceUs[i],
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
    };
    let k = 0;
    for (let i = next - n; i < next; i++) {
      const at = (i % this.capacity) * TRACE_STRIDE;
      const seq = this.#records[at];
      if (seq !== i + 1) continue; // being written, or already overwritten by a newer one
      cols.seq[k] = seq;
      cols.time[k] = this.#records[at + 1];
      cols.page[k] = this.#records[at + 2];
      cols.flags[k] = this.#records[at + 3];
      cols.tid[k] = this.#records[at + 4];
      cols.deviceSlot[k] = this.#records[at + 5];
      cols.outcome[k] = this.#records[at + 6];
      cols.serviceUs[k] = this.#records[at + 7];
      // A writer may have lapped us while we copied: keep the record only if it is still the same.
      if (this.#records[at] === seq) k++;
    }
    for (const key of Object.keys(cols) as (keyof TraceColumns)[]) cols[key] = cols[key].subarray(0, k);
    return cols;
  }

  /** Forgets what was recorded (the ring starts empty; counters restart at 0). */
  clear(): void {
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
