// The benchmark's table of runs and ratios. Adding a servicer to the benchmark is a row here; a
// row whose servicer the library cannot map yet is reported as unavailable with the library's
// own reason, so rows for 'inline' and fault-around light up once the library has them.
import { Region, type ServicerKind } from '../region.js';
import type { BaselineRatios, Pattern, Placement, Ratios } from './types.js';

export interface Variant {
  pattern: Pattern;
  threads: number;
  placement: Placement;
}

export interface RunDef {
  /** The run's name in the JSON and the table. */
  name: string;
  /**
   * c-baseline: the raw C poll handler; c-sigbus: the raw C in-thread SIGBUS handler; plain: no
   * userfaultfd; region: a Region with device entries.
   */
  kind: 'c-baseline' | 'c-sigbus' | 'plain' | 'region';
  /** c-baseline: copy every page from one cache-hot source page instead of its own. */
  hot?: boolean;
  /** Region runs: the servicer to map with. */
  servicer?: ServicerKind;
  /** Pages one fault brings back: a region's fault-around, or c-baseline's block per UFFDIO_COPY. */
  faultAround?: number;
  /** Region runs: record every fault in a trace (its cost is what the run measures). */
  trace?: boolean;
  /** Plain runs: write instead of read (allocating a page, as UFFDIO_COPY does). */
  write?: boolean;
  /** Measured in one round even in its main variant: a reference no contract ratio rests on. */
  once?: boolean;
  /**
   * A run a published ratio (ratios, trace_overhead) rests on: its main variant is measured in
   * every interleaved round. Without --full the other runs' main variant is measured in one round.
   */
  core?: boolean;
  /** The variants measured without --full; absent: the main variant only. */
  defaultVariants?: readonly Variant[];
  /** Who touches: native threads timing with clock_gettime, or JS on the main thread. */
  toucher: 'native' | 'js';
  variants: readonly Variant[];
  /** Rough cost of one touch in µs, per placement, for the progress bar only. */
  costUs: number;
}

/** The fault-around run, whose per-page cost is its per_page_us (see RATIOS). */
export const FAULT_AROUND_RUN = 'fault-around-16';
/** Its same-work C floor: a handler thread filling the 16-page block of each fault with one copy. */
export const C_FAULT_AROUND_RUN = 'c-fault-around-16';

/** The main variant: the one the plain run names and the ratios refer to. */
export const MAIN: Variant = { pattern: 'sequential', threads: 1, placement: 'one-cpu' };

const ALL: readonly Variant[] = [
  MAIN,
  { pattern: 'random', threads: 1, placement: 'one-cpu' },
  { pattern: 'sequential', threads: 1, placement: 'any' },
  { pattern: 'sequential', threads: 2, placement: 'any' },
  { pattern: 'random', threads: 2, placement: 'any' },
];
// JS has one thread to touch from, and on one CPU or not it waits for the same servicer thread
// as the native toucher does; its any-CPU run would repeat the worker's at the cost of seconds,
// and so would its random one the native toucher's: what JS adds shows in the main variant.
const JS: readonly Variant[] = [MAIN];
// Without userfaultfd there is no second thread whose placement could matter.
const NO_HANDLER: readonly Variant[] = ALL.filter((v) => v.threads === 2 || v.placement === 'one-cpu');
// An in-thread handler has no second thread either, but its faulting thread may still migrate
// between CPUs: pinned, and left to the scheduler.
const IN_THREAD: readonly Variant[] = ALL.filter((v) => v.threads === 1 && v.pattern === 'sequential');
// Without --full: the main variant, and threads left to the scheduler only where a ratio needs it
// (inline against both C handlers, pinned and not); the random and two-thread variants repeat
// what the main one shows at the cost of most of the run's time.
const PINNED_AND_ANY = IN_THREAD;

export const RUNS: readonly RunDef[] = [
  { name: 'c-baseline', kind: 'c-baseline', toucher: 'native', variants: ALL, defaultVariants: PINNED_AND_ANY, core: true, costUs: 11 },
  { name: 'c-baseline-hot', kind: 'c-baseline', hot: true, toucher: 'native', variants: [MAIN], once: true, costUs: 10 },
  { name: C_FAULT_AROUND_RUN, kind: 'c-baseline', faultAround: 16, toucher: 'native', variants: [MAIN], core: true, costUs: 2 },
  { name: 'c-sigbus', kind: 'c-sigbus', toucher: 'native', variants: IN_THREAD, defaultVariants: PINNED_AND_ANY, core: true, costUs: 9 },
  { name: 'native', kind: 'region', servicer: 'native', toucher: 'native', variants: ALL, core: true, costUs: 10 },
  { name: 'worker', kind: 'region', servicer: 'worker', toucher: 'native', variants: ALL, core: true, costUs: 12 },
  { name: 'worker-traced', kind: 'region', servicer: 'worker', trace: true, toucher: 'native', variants: [MAIN], core: true, costUs: 12 },
  { name: 'native-traced', kind: 'region', servicer: 'native', trace: true, toucher: 'native', variants: [MAIN], core: true, costUs: 10 },
  { name: 'worker-js-toucher', kind: 'region', servicer: 'worker', toucher: 'js', variants: JS, core: true, costUs: 12 },
  { name: FAULT_AROUND_RUN, kind: 'region', servicer: 'worker', faultAround: 16, toucher: 'native', variants: [MAIN], core: true, costUs: 2 },
  { name: 'inline', kind: 'region', servicer: 'inline', toucher: 'native', variants: ALL, defaultVariants: PINNED_AND_ANY, core: true, costUs: 10 },
  { name: 'inline-js-toucher', kind: 'region', servicer: 'inline', toucher: 'js', variants: JS, core: true, costUs: 10 },
  { name: 'plain', kind: 'plain', toucher: 'native', variants: NO_HANDLER, costUs: 1 },
  { name: 'plain-write', kind: 'plain', write: true, toucher: 'native', variants: NO_HANDLER, costUs: 2 },
];

/**
 * Each ratio: which run, which statistic, over which statistic of which same-work baseline (same
 * variant): c-baseline (a C handler thread copying from distinct pages, as the servicers do), or
 * for the in-thread servicer also c-sigbus (a C in-thread handler doing the same copies).
 */
export interface RatioDef<K> {
  key: K;
  run: string;
  stat: 'p50_us' | 'p99_us' | 'mean_us' | 'per_page_us';
  over: 'p50_us' | 'p99_us' | 'per_page_us';
  /** The baseline run; c-baseline when absent. */
  base?: string;
}

export const RATIOS: ReadonlyArray<RatioDef<keyof Ratios>> = [
  { key: 'worker_p50', run: 'worker', stat: 'p50_us', over: 'p50_us' },
  { key: 'worker_p99', run: 'worker', stat: 'p99_us', over: 'p99_us' },
  { key: 'native_p50', run: 'native', stat: 'p50_us', over: 'p50_us' },
  { key: 'native_p99', run: 'native', stat: 'p99_us', over: 'p99_us' },
  // The per-page cost of a fault-around scan: the median 16-page group ÷ 16 (15 of 16 touches find
  // the page already there, so the run's p50 says nothing, and its mean moves with a few slow touches).
  { key: 'fault_around_per_page', run: FAULT_AROUND_RUN, stat: 'per_page_us', over: 'p50_us' },
  { key: 'inline_p50', run: 'inline', stat: 'p50_us', over: 'p50_us' },
  { key: 'inline_p99', run: 'inline', stat: 'p99_us', over: 'p99_us' },
  { key: 'inline_js_p50', run: 'inline-js-toucher', stat: 'p50_us', over: 'p50_us' },
];

export const BASELINE_RATIOS: ReadonlyArray<RatioDef<keyof BaselineRatios>> = [
  { key: 'inline_sigbus_p50', run: 'inline', stat: 'p50_us', over: 'p50_us', base: 'c-sigbus' },
  { key: 'inline_sigbus_p99', run: 'inline', stat: 'p99_us', over: 'p99_us', base: 'c-sigbus' },
  { key: 'c_sigbus_p50', run: 'c-sigbus', stat: 'p50_us', over: 'p50_us' },
  { key: 'c_baseline_hot_p50', run: 'c-baseline-hot', stat: 'p50_us', over: 'p50_us' },
  // Fault-around's floor: what bringing 16 pages back costs a raw C handler, per page, ÷ c-baseline
  // (the least fault_around_per_page can be here), and ours ÷ that floor.
  { key: 'c_fault_around_per_page', run: C_FAULT_AROUND_RUN, stat: 'per_page_us', over: 'p50_us' },
  { key: 'fault_around_c_per_page', run: FAULT_AROUND_RUN, stat: 'per_page_us', over: 'per_page_us', base: C_FAULT_AROUND_RUN },
];

/** The variants `def` is measured in: all with --full, else its default ones. */
export function variantsOf(def: RunDef, full: boolean): readonly Variant[] {
  return full ? def.variants : (def.defaultVariants ?? [MAIN]);
}

/** The JSON name of a variant: the plain name for the main variant, else name/pattern/threads[/any-cpu]. */
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
