// `uffd-hmm bench`: options, then the benchmark (or, with --driver or any workload option, your
// own workload beside the same-work C baseline; or --compare of two results files), then its
// outputs — the table (or exactly one JSON object) on stdout, results.json and latency-cdf.svg in
// the output folder.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { UsageError, flag, intOption, parse, stringOption, type Parsed } from './args.js';

// 3 rounds of 40k faults: every published ratio is a median over ~118k faults (warm-up left out),
// and the default run does about 1.5 million faults' work in all.
const DEFAULT_FAULTS = 40_000;
const FULL_FAULTS = 200_000;
const QUICK_FAULTS = 5_000;
const MAX_FAULTS = 1 << 20;
const DEFAULT_ROUNDS = 3;
const MIGRATION_MIB = 256;
const FULL_MIGRATION_MIB = 1024;
/** CPU_SETSIZE - 1: the highest CPU number sched_setaffinity takes. */
const MAX_CPU = 1023;
const QUICK_MIGRATION_MIB = 64;
const DEFAULT_WORKLOAD_PAGES = 100_000;
const QUICK_WORKLOAD_PAGES = 5_000;
const HELP_HINT = "Run 'uffd-hmm bench --help' for usage.";

/** The workload options: any of them selects the workload mode. */
const WORKLOAD_OPTIONS = ['driver', 'servicer', 'pattern', 'pages', 'threads', 'write-ratio', 'fault-around', 'device-capacity', 'batch', 'trace'] as const;

export const BENCH_USAGE = `usage: uffd-hmm bench [--faults N] [--rounds N] [--quick | --full] [--move] [--json] [--out DIR] [--cpu N]
       uffd-hmm bench --driver FILE [--servicer worker|native|inline]
                      [--pattern sequential|random|strided:K|hot:P|TRACE.json] [--pages N]
                      [--threads T] [--write-ratio R] [--fault-around K] [--device-capacity C]
                      [--batch B] [--trace FILE] [--quick] [--json] [--out DIR] [--cpu N]
       uffd-hmm bench --compare A.json B.json [--json]

Measures the latency of real page faults on device-resident pages for each servicer against raw
C userfaultfd handlers doing the same work (a handler thread, c-baseline; an in-thread SIGBUS
handler, c-sigbus), in one run on the same pages and access patterns, plus host facts, migration
throughput and memory. Prints a table (or, with --json, one JSON object) and writes results.json
and latency-cdf.svg to the output folder.

With --driver (or any workload option) it measures your own workload instead: your driver
module's hooks on your access pattern, beside c-baseline serving the same faults, with the time
inside the hooks and what they decided.

The default run takes one to three minutes: the runs every ratio rests on in interleaved rounds,
the plain first touches and c-baseline-hot once, threads left to the scheduler for c-baseline,
c-sigbus and inline only. fault-around-16's per-page cost (its p50/c in the table and
ratios.fault_around_per_page) is the median time to touch a group of 16 pages (one fault, 15
pages found back) ÷ 16 ÷ c-baseline's p50: the run's own p50 is a page found back.
c-fault-around-16, a C handler thread filling each fault's 16-page block with one UFFDIO_COPY,
is measured the same way: fault-around's floor on this host.

  --faults N          faults (pages) per run and round; default ${DEFAULT_FAULTS}, ${FULL_FAULTS} with --full, ${QUICK_FAULTS} with --quick
  --rounds N          interleaved rounds of the main runs; default ${DEFAULT_ROUNDS}, 1 with --quick
  --quick             a fast look: few faults (or pages), one round, a ${QUICK_MIGRATION_MIB} MiB migration (else ${MIGRATION_MIB} MiB)
  --full              the long run (several minutes): every run in every round, the random-order and
                      two-thread variants, a ${FULL_MIGRATION_MIB} MiB migration, and --move
  --move              also UFFDIO_MOVE against UFFDIO_COPY (Linux 6.8+) on raw C handlers: single
                      faults, fault-around 16, bulk migration and the device's refill (the move key)
  --json              print exactly one JSON object on stdout and no progress
  --out DIR           where results.json and latency-cdf.svg go; default bench-results/
  --cpu N             the CPU the one-CPU runs use; default the last one

your workload:
  --driver FILE       a driver module (fault, pageFree, and the bench-only deviceTurn hooks)
  --servicer S        worker (default; the only one that calls hooks), native or inline
  --pattern P         sequential (default), random, strided:K (K pages apart), hot:P (90% of
                      touches on P% of the pages), or a JSON trace file: a list of page indices
                      or {"page": N, "write": true} records, replayed in order
  --pages N           the working set; default ${DEFAULT_WORKLOAD_PAGES}, ${QUICK_WORKLOAD_PAGES} with --quick (a trace: its own)
  --threads T         native threads touching (touch i goes to thread i mod T); default 1
  --write-ratio R     share of touches that write, 0 to 1; default 0
  --fault-around K    pages a fault brings back, 1 to 512; default 1
  --device-capacity C device memory in pages (it holds pages 0..C-1 at the start); default N
  --batch B           touches between two of the driver's device turns; default 256 (without
                      a deviceTurn hook: the stream in 20 batches)
  --trace FILE        also write the run's fault trace to FILE (the Chrome Trace Event Format:
                      open it in Perfetto UI or chrome://tracing): its last 65536 faults, each on
                      its thread's track, the migrations and the device turns. Tracing adds a
                      wake-up per fault: compare traced runs only with traced runs

comparing:
  --compare A B       two results.json files (two hosts, kernels or commits) side by side: where
                      each came from, the host facts, every run's p50, p99 and ratio to its own
                      c-baseline, and the change from A to B; measures nothing
  -h, --help          this text
`;

/**
 * `uffd-hmm bench …`; returns the exit status. Usage errors are reported here, with the bench's
 * own help hint, and give 2.
 */
export async function benchCommand(argv: string[]): Promise<number> {
  try {
    return await bench(argv);
  } catch (e) {
    const { BenchInputError } = await import('./errors.js');
    if (e instanceof UsageError || e instanceof BenchInputError) {
      process.stderr.write(`uffd-hmm bench: ${e.message}\n${HELP_HINT}\n`);
      return 2;
    }
    throw e;
  }
}

function ratioOption(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const v = Number(value);
  if (!/^\d*\.?\d+$/.test(value) || !(v >= 0 && v <= 1)) throw new UsageError(`${name} needs a number from 0 to 1, got '${value}'`);
  return v;
}

async function bench(argv: string[]): Promise<number> {
  const args = parse(
    argv,
    {
      faults: { type: 'string' },
      quick: { type: 'boolean' },
      full: { type: 'boolean' },
      move: { type: 'boolean' },
      json: { type: 'boolean' },
      out: { type: 'string' },
      cpu: { type: 'string' },
      rounds: { type: 'string' },
      driver: { type: 'string' },
      servicer: { type: 'string' },
      pattern: { type: 'string' },
      pages: { type: 'string' },
      threads: { type: 'string' },
      'write-ratio': { type: 'string' },
      'fault-around': { type: 'string' },
      'device-capacity': { type: 'string' },
      batch: { type: 'string' },
      compare: { type: 'string' },
      trace: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    1,
  );
  if (flag(args, 'help')) {
    process.stdout.write(BENCH_USAGE);
    return 0;
  }
  const compare = stringOption(args, 'compare');
  if (compare === undefined && args.positionals.length > 0) throw new UsageError(`unexpected argument '${args.positionals[0]}'`);
  if (compare !== undefined) return compareCommand(args, compare);
  const quick = flag(args, 'quick');
  const full = flag(args, 'full');
  if (quick && full) throw new UsageError('--quick and --full contradict each other: choose one');
  const json = flag(args, 'json');
  const workload = WORKLOAD_OPTIONS.some((o) => args.values[o] !== undefined);
  if (workload) {
    for (const o of ['faults', 'rounds', 'full', 'move']) {
      if (args.values[o] === undefined) continue;
      const hint = o === 'faults' || o === 'rounds' ? "; a workload's size is --pages (or its trace)" : ', not of a workload';
      throw new UsageError(`--${o} is an option of the default benchmark${hint}`);
    }
  }
  const faults = intOption('--faults', stringOption(args, 'faults'), 100, MAX_FAULTS) ?? (quick ? QUICK_FAULTS : full ? FULL_FAULTS : DEFAULT_FAULTS);
  const rounds = intOption('--rounds', stringOption(args, 'rounds'), 1, 20) ?? (quick ? 1 : DEFAULT_ROUNDS);
  const cpus = os.availableParallelism();
  // Any CPU number the kernel can name: in a cpuset the allowed CPUs need not be 0..cpus-1, and a
  // CPU this process may not use is refused by sched_setaffinity with a message that says so.
  const cpu = intOption('--cpu', stringOption(args, 'cpu'), 0, MAX_CPU) ?? cpus - 1;
  const out = stringOption(args, 'out');
  if (out === '') throw new UsageError('--out needs a folder name');
  const outDir = path.resolve(out ?? 'bench-results');

  // Loaded only now: --help and usage errors must work even where the addon cannot load.
  const { probe } = await import('../probe.js');
  const p = probe();
  if (!p.available) {
    process.stderr.write(`uffd-hmm bench: ${p.problem ?? 'userfaultfd is unavailable'}\n  fix: ${p.fix ?? 'run as root'}\n`);
    return 1;
  }
  // Created first: an unwritable folder should fail now, not after minutes of measuring.
  mkdirSync(outDir, { recursive: true });
  if (workload) return workloadCommand(args, { quick, json, cpu: stringOption(args, 'cpu') === undefined ? undefined : cpu, outDir });
  const { runBench } = await import('./bench.js');
  const { cdfSvg } = await import('./svg.js');
  const { formatReport } = await import('./table.js');

  const { results, cdfs } = await runBench({
    faults,
    rounds,
    quick,
    full,
    move: full || flag(args, 'move'),
    cpu,
    migrationBytes: (quick ? QUICK_MIGRATION_MIB : full ? FULL_MIGRATION_MIB : MIGRATION_MIB) * 1024 ** 2,
    tablePages: quick ? 1 << 16 : 1 << 20,
    progress: !json,
  });

  const jsonFile = path.join(outDir, 'results.json');
  const svgFile = path.join(outDir, 'latency-cdf.svg');
  writeFileSync(jsonFile, JSON.stringify(results, null, 2) + '\n');
  writeFileSync(svgFile, cdfSvg(results, cdfs));
  if (json) process.stdout.write(JSON.stringify(results) + '\n');
  else process.stdout.write(formatReport(results, [shown(jsonFile), shown(svgFile)]));
  return 0;
}

async function workloadCommand(
  args: Parsed,
  o: { quick: boolean; json: boolean; cpu: number | undefined; outDir: string },
): Promise<number> {
  const servicer = stringOption(args, 'servicer');
  if (servicer !== undefined && !['worker', 'native', 'inline'].includes(servicer)) {
    throw new UsageError(`--servicer must be worker, native or inline, got '${servicer}'`);
  }
  const driver = stringOption(args, 'driver');
  if (driver === '') throw new UsageError('--driver needs a module file');
  if (driver !== undefined && !existsSync(driver)) throw new UsageError(`--driver: no such file '${driver}'`);
  const trace = stringOption(args, 'trace');
  if (trace === '') throw new UsageError('--trace needs a file name');
  const { runWorkloadWithCdfs, MAX_WORKLOAD_PAGES } = await import('./workload.js');
  const { formatWorkload } = await import('./workload-table.js');
  const { workloadSvg } = await import('./svg.js');
  const { results: res, cdfs } = await runWorkloadWithCdfs({
    driver,
    servicer: servicer as 'worker' | 'native' | 'inline' | undefined,
    pattern: stringOption(args, 'pattern'),
    pages: intOption('--pages', stringOption(args, 'pages'), 1, MAX_WORKLOAD_PAGES),
    threads: intOption('--threads', stringOption(args, 'threads'), 1, 64),
    writeRatio: ratioOption('--write-ratio', stringOption(args, 'write-ratio')),
    faultAround: intOption('--fault-around', stringOption(args, 'fault-around'), 1, 512),
    deviceCapacity: intOption('--device-capacity', stringOption(args, 'device-capacity'), 1, MAX_WORKLOAD_PAGES),
    batch: intOption('--batch', stringOption(args, 'batch'), 1, MAX_WORKLOAD_PAGES),
    quick: o.quick,
    cpu: o.cpu,
    trace: trace === undefined ? undefined : path.resolve(trace),
  });
  const jsonFile = path.join(o.outDir, 'results.json');
  const svgFile = path.join(o.outDir, 'latency-cdf.svg');
  writeFileSync(jsonFile, JSON.stringify(res, null, 2) + '\n');
  writeFileSync(svgFile, workloadSvg(res, cdfs));
  if (o.json) process.stdout.write(JSON.stringify(res) + '\n');
  else process.stdout.write(formatWorkload(res, [shown(jsonFile), shown(svgFile)]));
  return 0;
}

function compareCommand(args: Parsed, fileA: string): Promise<number> | number {
  const fileB = args.positionals[0];
  if (fileA === '' || fileB === undefined) throw new UsageError('--compare needs two results files: --compare A.json B.json');
  const other = Object.keys(args.values).filter((k) => args.values[k] !== undefined && k !== 'compare' && k !== 'json');
  if (other.length > 0) throw new UsageError(`--compare reads two results files and measures nothing: --${other[0]} does not go with it`);
  return import('./compare.js').then(({ compareResults, formatComparison }) => {
    const c = compareResults(fileA, fileB);
    process.stdout.write(flag(args, 'json') ? JSON.stringify(c) + '\n' : formatComparison(c));
    return 0;
  });
}

/** A path as the user would type it: relative when below the current folder. */
function shown(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel && !rel.startsWith('..') ? rel : file;
}
