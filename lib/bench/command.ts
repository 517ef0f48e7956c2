// `uffd-hmm bench`: options, then the benchmark, then its outputs — the table (or exactly one
// JSON object) on stdout, results.json and latency-cdf.svg in the output folder.
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { UsageError, flag, intOption, parse, stringOption } from './args.js';

const DEFAULT_FAULTS = 200_000;
const QUICK_FAULTS = 5_000;
const MAX_FAULTS = 1 << 20;
const DEFAULT_ROUNDS = 3;
const MIGRATION_MIB = 1024;
/** CPU_SETSIZE - 1: the highest CPU number sched_setaffinity takes. */
const MAX_CPU = 1023;
const QUICK_MIGRATION_MIB = 64;

export const BENCH_USAGE = `usage: uffd-hmm bench [--faults N] [--quick] [--json] [--out DIR] [--rounds N] [--cpu N]

Measures the latency of real page faults on device-resident pages for each servicer against a
raw C userfaultfd handler, in one run on the same pages and access patterns, plus migration
throughput and memory. Prints a table (or, with --json, one JSON object) and writes
results.json and latency-cdf.svg to the output folder.

  --faults N   faults (pages) per run and round; default ${DEFAULT_FAULTS}, ${QUICK_FAULTS} with --quick
  --rounds N   interleaved rounds of the main runs; default ${DEFAULT_ROUNDS}, 1 with --quick
  --quick      a fast look: few faults, one round, a ${QUICK_MIGRATION_MIB} MiB migration (else ${MIGRATION_MIB} MiB)
  --json       print exactly one JSON object on stdout (API.md shape) and no progress
  --out DIR    where results.json and latency-cdf.svg go; default bench-results/
  --cpu N      the CPU the one-CPU runs use; default the last one
  -h, --help   this text
`;

export async function benchCommand(argv: string[]): Promise<number> {
  const args = parse(
    argv,
    {
      faults: { type: 'string' },
      quick: { type: 'boolean' },
      json: { type: 'boolean' },
      out: { type: 'string' },
      cpu: { type: 'string' },
      rounds: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    0,
  );
  if (flag(args, 'help')) {
    process.stdout.write(BENCH_USAGE);
    return 0;
  }
  const quick = flag(args, 'quick');
  const json = flag(args, 'json');
  const faults = intOption('--faults', stringOption(args, 'faults'), 100, MAX_FAULTS) ?? (quick ? QUICK_FAULTS : DEFAULT_FAULTS);
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
    process.stderr.write(`uffd-hmm bench: userfaultfd is unavailable: ${p.problem ?? 'unknown reason'}\n  fix: ${p.fix ?? 'run as root'}\n`);
    return 1;
  }
  // Created first: an unwritable folder should fail now, not after minutes of measuring.
  mkdirSync(outDir, { recursive: true });
  const { runBench } = await import('./bench.js');
  const { cdfSvg } = await import('./svg.js');
  const { formatReport } = await import('./table.js');

  const { results, cdfs } = await runBench({
    faults,
    rounds,
    quick,
    cpu,
    migrationBytes: (quick ? QUICK_MIGRATION_MIB : MIGRATION_MIB) * 1024 ** 2,
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

/** A path as the user would type it: relative when below the current folder. */
function shown(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel && !rel.startsWith('..') ? rel : file;
}
