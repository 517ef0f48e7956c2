// The benchmark's table of runs and ratios. Adding a servicer to the benchmark is a row here; a
// row whose servicer the library cannot map yet is reported as unavailable with the library's
// own reason, so rows for 'inline' and fault-around light up once the library has them.
import { Region, type ServicerKind } from '../region.js';
import type { Pattern, Placement, Ratios } from './types.js';

export interface Variant {
  pattern: Pattern;
  threads: number;
  placement: Placement;
}

export interface RunDef {
  /** The API.md run name. */
  name: string;
  /** c-baseline: the raw C handler; plain: no userfaultfd; region: a Region with device entries. */
  kind: 'c-baseline' | 'plain' | 'region';
  /** Region runs: the servicer and fault-around to map with. */
  servicer?: ServicerKind;
  faultAround?: number;
  /** Region runs: record every fault in a trace (its cost is what the run measures). */
  trace?: boolean;
  /** Plain runs: write instead of read (allocating a page, as UFFDIO_COPY does). */
  write?: boolean;
  /** Who touches: native threads timing with clock_gettime, or JS on the main thread. */
  toucher: 'native' | 'js';
  variants: readonly Variant[];
  /** Rough cost of one touch in µs, per placement, for the progress bar only. */
  costUs: number;
}

/** The main variant: the one API.md's run names and ratios refer to. */
export const MAIN: Variant = { pattern: 'sequential', threads: 1, placement: 'one-cpu' };

const ALL: readonly Variant[] = [
  MAIN,
  { pattern: 'random', threads: 1, placement: 'one-cpu' },
  { pattern: 'sequential', threads: 1, placement: 'any' },
  { pattern: 'sequential', threads: 2, placement: 'any' },
  { pattern: 'random', threads: 2, placement: 'any' },
];
// JS has one thread to touch from, and on one CPU or not it waits for the same servicer thread
// as the native toucher does; its any-CPU run would repeat the worker's at the cost of seconds.
const JS: readonly Variant[] = ALL.filter((v) => v.threads === 1 && v.placement === 'one-cpu');
// Without userfaultfd there is no second thread whose placement could matter.
const NO_HANDLER: readonly Variant[] = ALL.filter((v) => v.threads === 2 || v.placement === 'one-cpu');

export const RUNS: readonly RunDef[] = [
  { name: 'c-baseline', kind: 'c-baseline', toucher: 'native', variants: ALL, costUs: 10 },
  { name: 'native', kind: 'region', servicer: 'native', toucher: 'native', variants: ALL, costUs: 10 },
  { name: 'worker', kind: 'region', servicer: 'worker', toucher: 'native', variants: ALL, costUs: 12 },
  { name: 'worker-traced', kind: 'region', servicer: 'worker', trace: true, toucher: 'native', variants: [MAIN], costUs: 12 },
  { name: 'native-traced', kind: 'region', servicer: 'native', trace: true, toucher: 'native', variants: [MAIN], costUs: 10 },
  { name: 'worker-js-toucher', kind: 'region', servicer: 'worker', toucher: 'js', variants: JS, costUs: 12 },
  { name: 'fault-around-16', kind: 'region', servicer: 'worker', faultAround: 16, toucher: 'native', variants: [MAIN], costUs: 2 },
  { name: 'inline', kind: 'region', servicer: 'inline', toucher: 'native', variants: ALL, costUs: 10 },
  { name: 'inline-js-toucher', kind: 'region', servicer: 'inline', toucher: 'js', variants: JS, costUs: 10 },
  { name: 'plain', kind: 'plain', toucher: 'native', variants: NO_HANDLER, costUs: 1 },
  { name: 'plain-write', kind: 'plain', write: true, toucher: 'native', variants: NO_HANDLER, costUs: 2 },
];

/** Each API.md ratio: which run, which statistic, over which c-baseline statistic (same variant). */
export const RATIOS: ReadonlyArray<{ key: keyof Ratios; run: string; stat: 'p50_us' | 'p99_us' | 'mean_us'; over: 'p50_us' | 'p99_us' }> = [
  { key: 'worker_p50', run: 'worker', stat: 'p50_us', over: 'p50_us' },
  { key: 'worker_p99', run: 'worker', stat: 'p99_us', over: 'p99_us' },
  { key: 'native_p50', run: 'native', stat: 'p50_us', over: 'p50_us' },
  { key: 'native_p99', run: 'native', stat: 'p99_us', over: 'p99_us' },
  // The per-page cost of a fault-around scan is its mean touch latency: most touches find the page already there.
  { key: 'fault_around_per_page', run: 'fault-around-16', stat: 'mean_us', over: 'p50_us' },
  { key: 'inline_p50', run: 'inline', stat: 'p50_us', over: 'p50_us' },
  { key: 'inline_p99', run: 'inline', stat: 'p99_us', over: 'p99_us' },
  { key: 'inline_js_p50', run: 'inline-js-toucher', stat: 'p50_us', over: 'p50_us' },
];

/** The JSON name of a variant: the API.md name for the main variant, else name/pattern/threads[/any-cpu]. */
export function runName(def: RunDef, v: Variant): string {
  if (v === MAIN) return def.name;
  const cpu = v.threads === 1 && v.placement === 'any' ? '/any-cpu' : '';
  return `${def.name}/${v.pattern}/${v.threads}t${cpu}`;
}

/** Codes with which Region.map refuses options this version does not support. */
const UNSUPPORTED = new Set(['ERR_SERVICER_UNSUPPORTED', 'ERR_OUT_OF_RANGE', 'ERR_INVALID_ARG_VALUE']);

/**
 * Why `def` cannot run here, or undefined when it can. Region runs ask the library itself by
 * mapping a small region with the run's options, so the answer is never stale. Any other failure
 * (a system call refused) is not "unsupported": it propagates and stops the benchmark.
 */
export async function unavailableReason(def: RunDef): Promise<string | undefined> {
  if (def.kind !== 'region') return undefined;
  try {
    const r = Region.map({ pages: 16, servicer: def.servicer, faultAround: def.faultAround });
    await r.close();
    return undefined;
  } catch (e) {
    const err = e as Error & { code?: string };
    if (!UNSUPPORTED.has(err.code ?? '')) throw err;
    return `Region.map(${JSON.stringify({ servicer: def.servicer, faultAround: def.faultAround })}) fails: ${err.message} [${err.code}]`;
  }
}
