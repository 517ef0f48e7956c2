// The benchmark itself: plans every available run × variant, measures them in one process with
// the same pages and orders, and assembles the results: runs, ratios, host facts, migration and
// memory figures.
import os from 'node:os';

import { PAGE_SIZE } from '../native.js';
import { probe } from '../probe.js';
import { accessOrder } from './order.js';
import { canCollect, readMemory, tableBytesPerPage, type MemoryReading } from './memory.js';
import { measureMigration } from './migration.js';
import { progressBar, type Progress } from './progress.js';
import { measureHost } from './host.js';
import { provenance } from './provenance.js';
import { measureMove, moveUnavailable } from './move.js';
import { BASELINE_RATIOS, MAIN, RATIOS, RUNS, runName, unavailableReason, variantsOf, type RatioDef, type RunDef, type Variant } from './runs.js';
import { LatencyRecorder } from './summary.js';
import { touchRun } from './touch.js';
import type { BaselineRatios, BenchResults, MemoryResult, MoveResult, Pattern, Ratios, RunResult } from './types.js';

export interface BenchOptions {
  /** Touches (= pages = faults) per run and round. */
  faults: number;
  /** Rounds of the main runs, interleaved. */
  rounds: number;
  quick: boolean;
  /** Every run in every variant, every main run in every round (else the core runs only). */
  full: boolean;
  /** Also measure UFFDIO_MOVE against UFFDIO_COPY (the `move` key). */
  move: boolean;
  /** The CPU for 'one-cpu' runs. */
  cpu: number;
  /** Region size of the migration measurement; 0 skips it. */
  migrationBytes: number;
  /** Pages of the region whose table overhead is measured; 0 skips it. */
  tablePages: number;
  /** Draw a progress bar on stderr (when it is a terminal). */
  progress: boolean;
}

export interface BenchOutput {
  results: BenchResults;
  /** Latency CDF of every run, [µs, fraction] points, for the plot. */
  cdfs: Map<string, Array<[number, number]>>;
}

/** Share of each round's first touches left out: cold caches, the servicer's first wake-ups. */
const WARMUP_FRACTION = 0.02;

interface Step {
  def: RunDef;
  variant: Variant;
  name: string;
  round: number;
  weight: number;
}

/** What a run accumulates over its rounds. */
interface Tally {
  step: Step;
  recorder: LatencyRecorder;
  wallNs: number;
  elapsedNs: number;
  touches: number;
  warmup: number;
  served: number | undefined;
  jsEntries: number;
  roundP50: number[];
  /** Fault-around runs: each group of `faultAround` touches (one fault, the rest finding their page back), summed. */
  groups: LatencyRecorder | undefined;
}

function sameVariant(a: Variant, b: Variant): boolean {
  return a.pattern === b.pattern && a.threads === b.threads && a.placement === b.placement;
}

/**
 * The main variant's runs come first, in `rounds` interleaved rounds (each starting one run
 * later), so a disturbance lasting seconds on this shared VM lands on every run a ratio compares,
 * not on one of them. The other variants follow, one round each, grouped by variant.
 */
function plan(defs: RunDef[], faults: number, rounds: number, full: boolean): Step[] {
  const variants: Variant[] = [];
  for (const d of defs) for (const v of variantsOf(d, full)) if (!variants.some((x) => sameVariant(x, v))) variants.push(v);
  variants.sort((a, b) => Number(b === MAIN) - Number(a === MAIN));
  const steps: Step[] = [];
  const add = (def: RunDef, variant: Variant, round: number): void => {
    // Seconds, roughly: cross-CPU wake-ups cost ~4x here; migrating pages out costs ~3 µs each.
    const touchUs = def.costUs * (variant.placement === 'any' ? 4 : 1) + (def.kind === 'region' ? 3 : 0);
    steps.push({ def, variant, name: runName(def, variant), round, weight: (faults * touchUs) / 1e6 + 0.05 });
  };
  const everyRound = (d: RunDef): boolean => d.once !== true && (full || d.core === true);
  const main = defs.filter((d) => d.variants.includes(MAIN) && everyRound(d));
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < main.length; i++) add(main[(i + r) % main.length], MAIN, r);
  }
  for (const def of defs) if (!everyRound(def) && def.variants.includes(MAIN)) add(def, MAIN, 0);
  for (const v of variants) {
    if (v === MAIN) continue;
    for (const def of defs) {
      const own = variantsOf(def, full).find((x) => sameVariant(x, v));
      if (own) add(def, own, 0);
    }
  }
  return steps;
}

/**
 * Sequential touches of a fault-around run, in groups of `around` from page 0: one fault and the
 * touches that find their page already back. Their sums, whose median ÷ `around` is the per-page
 * cost: a median, so a rare slow touch (a preempted vCPU) moves it no more than any other run's p50.
 */
function groupSums(latencies: Float64Array, around: number): Float64Array {
  const sums = new Float64Array(Math.floor(latencies.length / around));
  for (let g = 0; g < sums.length; g++) {
    let s = 0;
    for (let i = g * around; i < (g + 1) * around; i++) s += latencies[i];
    sums[g] = s;
  }
  return sums;
}

/** A fault-around run's per-page figures: each statistic of its groups ÷ the group size. */
function perPage(groups: LatencyRecorder, around: number): Pick<RunResult, 'per_page_us' | 'per_page'> {
  const { cdf: _cdf, ...g } = groups.summary();
  const per = (x: number): number => x / around;
  const per_page = { faults: g.faults, p50_us: per(g.p50_us), p90_us: per(g.p90_us), p99_us: per(g.p99_us), p999_us: per(g.p999_us), max_us: per(g.max_us), mean_us: per(g.mean_us) };
  return { per_page_us: per_page.p50_us, per_page };
}

function ratiosOf<K extends string>(defs: ReadonlyArray<RatioDef<K>>, runs: RunResult[], unavailable: Record<string, string>): Record<K, number | null> {
  const byName = new Map(runs.map((r) => [r.name, r]));
  const ratios = {} as Record<K, number | null>;
  for (const { key, run, stat, over, base: baseName = 'c-baseline' } of defs) {
    const r = byName.get(run);
    const base = byName.get(baseName);
    if (!base || !r) {
      ratios[key] = null;
      const missing = !base ? baseName : run;
      unavailable[key] = `needs the '${missing}' run: ${unavailable[missing] ?? 'not measured'}`;
      continue;
    }
    const v = r[stat];
    if (v === undefined) {
      ratios[key] = null;
      unavailable[key] = `the '${run}' run has no ${stat}`;
      continue;
    }
    const b = base[over];
    if (b === undefined) {
      ratios[key] = null;
      unavailable[key] = `the '${baseName}' run has no ${over}`;
      continue;
    }
    ratios[key] = v / b;
  }
  return ratios;
}

export async function runBench(opts: BenchOptions): Promise<BenchOutput> {
  const unavailable: Record<string, string> = {};
  const defs: RunDef[] = [];
  for (const def of RUNS) {
    const why = await unavailableReason(def);
    if (why === undefined) defs.push(def);
    else unavailable[def.name] = why;
  }
  const steps = plan(defs, opts.faults, opts.rounds, opts.full);
  const host = measureHost(opts.cpu);
  const migrationWeight = (opts.migrationBytes / 1024 ** 3) * 4;
  const moveWhy = opts.move ? moveUnavailable() : 'measured with --move or --full';
  if (moveWhy !== undefined) unavailable.move = moveWhy;
  // Four raw-handler runs a round at ~10 µs a fault (cross-checked against the data after each), and the bulk part.
  const moveWeight = moveWhy === undefined ? (opts.faults * opts.rounds * 4 * 10) / 1e6 + 1 : 0;
  const total = steps.reduce((s, x) => s + x.weight, 0) + migrationWeight + moveWeight + 0.5;
  const progress: Progress = progressBar(process.stderr, opts.progress, total);

  const orders = new Map<Pattern, Int32Array>();
  const orderFor = (p: Pattern): Int32Array => {
    let o = orders.get(p);
    if (!o) orders.set(p, (o = accessOrder(p, opts.faults)));
    return o;
  };
  const warmup = Math.max(1, Math.floor(opts.faults * WARMUP_FRACTION));
  const tallies = new Map<string, Tally>();
  const notes: string[] = [];
  let memBefore: MemoryReading | undefined;
  let memAfter: MemoryReading | undefined;

  try {
    for (const step of steps) {
      const rounds = step.variant === MAIN && opts.rounds > 1 ? ` (round ${step.round + 1}/${opts.rounds})` : '';
      progress.step(step.name + rounds, step.weight);
      const watchMemory = step.def.name === 'worker' && step.variant === MAIN && step.round === 0;
      const started = process.hrtime.bigint();
      const touched = await touchRun(step.def, step.variant, orderFor(step.variant.pattern), opts.cpu, {
        progress: (f) => progress.update(f),
        beforeTouches: watchMemory ? async () => void (memBefore = await readMemory()) : undefined,
        afterTouches: watchMemory ? async () => void (memAfter = await readMemory()) : undefined,
      });
      let t = tallies.get(step.name);
      if (!t) {
        const recorder = new LatencyRecorder();
        t = { step, recorder, wallNs: 0, elapsedNs: 0, touches: 0, warmup: 0, served: undefined, jsEntries: 0, roundP50: [], groups: undefined };
        tallies.set(step.name, t);
      }
      t.recorder.record(touched.latencies, warmup);
      const around = step.def.faultAround ?? 1;
      if (around > 1) (t.groups ??= new LatencyRecorder()).record(groupSums(touched.latencies, around), Math.ceil(warmup / around));
      if (opts.rounds > 1 && step.variant === MAIN) {
        const round = new LatencyRecorder();
        round.record(touched.latencies, warmup);
        t.roundP50.push(round.summary().p50_us);
      }
      t.wallNs += touched.wallNs;
      t.elapsedNs += Number(process.hrtime.bigint() - started);
      t.touches += opts.faults;
      t.warmup += warmup;
      if (touched.served !== undefined) t.served = (t.served ?? 0) + touched.served;
      t.jsEntries += touched.jsEntries ?? 0;
    }

    const runs: RunResult[] = [];
    const cdfs = new Map<string, Array<[number, number]>>();
    for (const [name, t] of tallies) {
      const { cdf, ...stats } = t.recorder.summary();
      runs.push({
        name,
        base: t.step.def.name,
        pattern: t.step.variant.pattern,
        threads: t.step.variant.threads,
        placement: t.step.variant.placement,
        timed_in: t.step.def.toucher,
        ...stats,
        faults_per_s: t.touches / (t.wallNs / 1e9),
        elapsed_s: t.elapsedNs / 1e9,
        warmup: t.warmup,
        ...(t.served === undefined ? {} : { faults_served: t.served }),
        ...(t.step.def.servicer === 'worker' && t.served ? { js_entries_per_fault: t.jsEntries / t.served } : {}),
        ...(t.roundP50.length > 1 ? { round_p50_us: t.roundP50 } : {}),
        ...(t.groups ? perPage(t.groups, t.step.def.faultAround ?? 1) : {}),
      });
      cdfs.set(name, cdf);
      // With fault-around, fewer faults than touches is the point; otherwise every touch must fault once.
      if (t.served !== undefined && (t.step.def.faultAround ?? 1) === 1 && t.served !== t.touches) {
        notes.push(`${name}: the servicer counted ${t.served} faults for ${t.touches} touches`);
      }
    }

    let move: MoveResult | null = null;
    const moveNotes: string[] = [];
    if (moveWhy === undefined) {
      progress.step('UFFDIO_MOVE vs UFFDIO_COPY', moveWeight);
      move = measureMove(opts.faults, opts.rounds, warmup, opts.cpu, (f) => progress.update(f));
      moveNotes.push(
        `move: raw C handler threads (every thread on CPU ${opts.cpu}, sequential touches, ${opts.rounds} interleaved round(s) ` +
          `of ${opts.faults} faults) serving each fault with one UFFDIO_MOVE or one UFFDIO_COPY of 1 or 16 pages from a ` +
          `populated device store; bulk: ${move.bulk.pages} pages in one ioctl each way, µs per page, median of ` +
          `${move.bulk.repeats}. A moved page leaves a hole in the device store: refill_to_device_us is what the device ` +
          `pays to take a page back into it, so round_trip_us compares the designs whole.`,
      );
    }

    let migration = null;
    if (opts.migrationBytes > 0) {
      progress.step(`migration of ${(opts.migrationBytes / 1024 ** 2).toFixed(0)} MiB`, migrationWeight);
      migration = await measureMigration(opts.migrationBytes, (f) => progress.update(f));
    }

    let memory: MemoryResult | null = null;
    if (memBefore && memAfter) {
      progress.step('page-table overhead', 0.5);
      memory = {
        run: 'worker',
        faults: opts.faults,
        gc: canCollect(),
        heap_used_before: memBefore.heapUsed,
        heap_used_after: memAfter.heapUsed,
        heap_growth: memAfter.heapUsed - memBefore.heapUsed,
        worker_heap_before: memBefore.workerHeapUsed,
        worker_heap_after: memAfter.workerHeapUsed,
        worker_heap_growth: memAfter.workerHeapUsed - memBefore.workerHeapUsed,
        rss_before: memBefore.rss,
        rss_after: memAfter.rss,
        rss_expected_growth: opts.faults * PAGE_SIZE,
        table_bytes_per_page: opts.tablePages > 0 ? await tableBytesPerPage(opts.tablePages) : 0,
        table_pages: opts.tablePages,
      };
    }

    notes.push(
      `Runs without a '/' in their name are sequential, one faulting thread, with every thread of the process on CPU ${opts.cpu} ` +
        `('one-cpu'): on a VM a wake-up across vCPUs can cost more than the fault itself. '/any-cpu' and '/2t' runs ` +
        `leave placement to the scheduler.`,
      `${opts.full ? 'Those runs but c-baseline-hot' : defs.filter((d) => d.core === true).map((d) => d.name).join(', ')} are measured in ` +
        `${opts.rounds} interleaved round(s) of ${opts.faults} faults, each on a fresh region, and their faults pooled; every ` +
        `other run is one round.${opts.full ? '' : ' --full adds the random-order and two-thread variants and measures every run in every round.'}`,
      `Latencies are timed in the faulting thread: clock_gettime in native toucher threads, except *-js-toucher runs, ` +
        `timed in JS with performance.now() around each read (timer overhead included).`,
      `The first ${warmup} touches of each round (${WARMUP_FRACTION * 100}%) are warm-up and left out; faults_per_s counts every touch.`,
      `Ratios are to the same-work baselines: c-baseline (a C thread: poll + read + UFFDIO_COPY) and c-sigbus (a C ` +
        `SIGBUS handler in the faulting thread: one UFFDIO_COPY) copy each page from its own source page, written by ` +
        `user space before the run and not yet read by the kernel, as the servicers copy from device pages a ` +
        `migration just wrote; c-baseline-hot copies every page from one cache-hot page.`,
      `fault_around_per_page is the fault-around-16 run's per_page_us ÷ c-baseline's p50, in the table too: per_page_us is ` +
        `the median time to touch a group of 16 pages (one fault, 15 touches finding their page back) ÷ 16. Its p50 alone ` +
        `is a page found back; its mean moves with a few slow touches. c-fault-around-16 is its floor: a C handler thread ` +
        `filling each fault's 16-page block with one UFFDIO_COPY from 16 source pages (baseline_ratios.c_fault_around_per_page; ` +
        `fault_around_c_per_page is ours ÷ that).`,
      `host: a null system call costs ${host.syscall_ns.toFixed(0)} ns and a first touch without userfaultfd ` +
        `${host.plain_touch_us.toFixed(2)} µs (read) / ${host.plain_write_us.toFixed(2)} µs (write) here: a slow host is slow for every run. ` +
        `A UFFDIO_COPY from a page user space just wrote costs ${host.copy_fresh_source_us.toFixed(2)} µs and from the same page again ` +
        `${host.copy_us.toFixed(2)} µs: the difference is the host's charge for the kernel's first read of a user page ` +
        `(a host that shadows the guest's page tables charges a host fault), which every fault on a page fresh from a migration pays.`,
      `plain is a first read of anonymous memory without userfaultfd (maps the zero page); plain-write a first write (allocates a page).`,
    );
    notes.push(...moveNotes);
    if (memory) {
      notes.push(
        `memory.heap_* is the main thread's JS heap${memory.gc ? ' after a full GC' : ''}; memory.worker_heap_* the ` +
          `worker servicer's own isolate, which served every fault (no GC forced there, so garbage would show). ` +
          `RSS grows by the pages the faults bring back.`,
      );
    }

    const ratios: Ratios = ratiosOf(RATIOS, runs, unavailable);
    const baseline_ratios: BaselineRatios = ratiosOf(BASELINE_RATIOS, runs, unavailable);
    const p50 = (name: string) => runs.find((x) => x.name === name)?.p50_us;
    const overhead = (traced: string, plain: string) => {
      const a = p50(traced);
      const b = p50(plain);
      return a !== undefined && b !== undefined && b > 0 ? a / b : null;
    };
    const trace_overhead = { worker_p50: overhead('worker-traced', 'worker'), native_p50: overhead('native-traced', 'native') };
    const results: BenchResults = {
      kernel: probe().kernel,
      cpus: os.availableParallelism(),
      host,
      runs,
      ratios,
      baseline_ratios,
      unavailable,
      notes,
      migration,
      memory,
      move,
      trace_overhead,
      config: {
        faults: opts.faults,
        rounds: opts.rounds,
        quick: opts.quick,
        full: opts.full,
        cpu: opts.cpu,
        date: new Date().toISOString(),
        node: process.version,
        ...provenance(),
      },
    };
    return { results, cdfs };
  } finally {
    progress.done();
  }
}
