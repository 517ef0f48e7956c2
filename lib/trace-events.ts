// A fault trace as the Chrome Trace Event Format (the JSON Object Format): what Perfetto UI,
// chrome://tracing and DevTools' trace engine open. One process; a track per faulting thread and
// one for the servicer; a complete event ('X') per fault and per span (migrations, device turns).
import type { TraceRecord } from './trace.js';

/**
 * One event of a {@link ChromeTrace}: the fields of the Chrome Trace Event Format that uffd-hmm
 * writes. `ph: 'X'` is a complete event (`ts` and `dur`); `ph: 'M'` is metadata (`process_name`,
 * `thread_name`: a track's name, in `args.name`).
 */
export interface TraceEvent {
  /** The event's name: `'fault'`, `'serve'`, `'migrate'`, `'migrateToRam'`, a {@link FaultTrace#mark} name, or a metadata name. */
  name: string;
  /** The category: `'fault'`, `'servicer'`, `'migration'`, `'mark'` or `'__metadata'`. */
  cat: string;
  /** The phase: `'X'` (complete event) or `'M'` (metadata). */
  ph: 'X' | 'M';
  /** Start, µs of CLOCK_MONOTONIC (0 for metadata). */
  ts: number;
  /** Duration, µs (complete events only). */
  dur?: number;
  /** The process id. */
  pid: number;
  /** The track: a thread id, or the servicer's track ({@link SERVICER_TRACK}). */
  tid: number;
  /** What the event carries: a fault's page, address, kind, write, outcome, device, pfn, hookUs…; a track's name. */
  args: Record<string, unknown>;
}

/** The Chrome Trace Event Format's JSON Object Format: `JSON.stringify` of it is the trace file. */
export interface ChromeTrace {
  /** The events, metadata first, then by start time. */
  traceEvents: TraceEvent[];
  /** Time unit Perfetto and chrome://tracing show: `'ms'`. */
  displayTimeUnit: 'ms';
  /** Where the trace came from, its clock, and what it lost. */
  metadata: ChromeTraceMetadata;
}

/** The `metadata` of a {@link ChromeTrace}. */
export interface ChromeTraceMetadata {
  /** Always `'uffd-hmm'`. */
  source: 'uffd-hmm';
  /** The clock of every `ts`: µs of CLOCK_MONOTONIC, as {@link TraceRecord.time}. */
  clock: 'CLOCK_MONOTONIC';
  /** Fault records the ring overwrote before the export ({@link FaultTrace#overflow}). */
  overwrittenFaults: number;
  /** Spans ({@link FaultTrace#mark}, migrations) dropped past the trace's capacity. */
  droppedSpans: number;
}

/** The `tid` of the servicer's track (no thread has id 0 on Linux). */
export const SERVICER_TRACK = 0;
/** The `tid` of faults whose thread the servicer could not tell (no UFFD_FEATURE_THREAD_ID). */
const UNKNOWN_THREAD = -1;

/** @internal A span kept by a FaultTrace: a migration, a device turn, a user's mark. */
export interface TraceSpan {
  name: string;
  startUs: number;
  durUs: number;
  args: Record<string, unknown> | undefined;
}

/** @internal */
export interface TraceMeta {
  pid: number;
  address: bigint;
  pageSize: number;
  servicer: string;
  overflow: number;
  spansDropped: number;
}

const SPAN_CATEGORY: Record<string, string> = { migrate: 'migration', migrateToRam: 'migration' };

/** @internal Builds the Chrome trace of a FaultTrace's records and spans. */
export function toChromeTrace(records: TraceRecord[], spans: readonly TraceSpan[], m: TraceMeta): ChromeTrace {
  const meta: TraceEvent[] = [];
  const events: TraceEvent[] = [];
  const named = new Set<number>();
  const track = (tid: number, name: string): void => {
    if (named.has(tid)) return;
    named.add(tid);
    meta.push({ name: 'thread_name', cat: '__metadata', ph: 'M', ts: 0, pid: m.pid, tid, args: { name } });
    meta.push({ name: 'thread_sort_index', cat: '__metadata', ph: 'M', ts: 0, pid: m.pid, tid, args: { sort_index: tid === SERVICER_TRACK ? 0 : tid === m.pid ? 1 : 2 } });
  };
  meta.push({ name: 'process_name', cat: '__metadata', ph: 'M', ts: 0, pid: m.pid, tid: SERVICER_TRACK, args: { name: `uffd-hmm (pid ${m.pid})` } });
  track(SERVICER_TRACK, `servicer (${m.servicer})`);
  for (const r of records) {
    const tid = r.tid > 0 ? r.tid : UNKNOWN_THREAD;
    track(tid, tid === m.pid ? `main thread (${tid})` : tid === UNKNOWN_THREAD ? 'faulting thread (id unknown)' : `thread ${tid}`);
    const args = {
      page: r.page,
      address: `0x${(m.address + BigInt(r.page) * BigInt(m.pageSize)).toString(16)}`,
      kind: r.kind,
      write: r.write,
      outcome: r.outcome,
      device: r.device?.name ?? null,
      pfn: r.pfn,
      hookUs: r.hookUs,
      kernel: r.kernel,
      seq: r.seq,
    };
    events.push({ name: 'fault', cat: 'fault', ph: 'X', ts: r.time, dur: r.serviceUs, pid: m.pid, tid, args });
    events.push({ name: 'serve', cat: 'servicer', ph: 'X', ts: r.time, dur: r.serviceUs, pid: m.pid, tid: SERVICER_TRACK, args: { page: r.page, outcome: r.outcome, hookUs: r.hookUs, seq: r.seq } });
  }
  if (spans.length > 0) track(m.pid, `main thread (${m.pid})`);
  for (const s of spans) {
    events.push({ name: s.name, cat: SPAN_CATEGORY[s.name] ?? 'mark', ph: 'X', ts: s.startUs, dur: s.durUs, pid: m.pid, tid: m.pid, args: s.args ?? {} });
  }
  events.sort((a, b) => a.ts - b.ts);
  return {
    traceEvents: [...meta, ...events],
    displayTimeUnit: 'ms',
    metadata: { source: 'uffd-hmm', clock: 'CLOCK_MONOTONIC', overwrittenFaults: m.overflow, droppedSpans: m.spansDropped },
  };
}
