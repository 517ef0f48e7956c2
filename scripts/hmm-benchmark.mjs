#!/usr/bin/env node
// hmm-tests.c's benchmark_thp_migration on uffd-hmm: migration throughput system->device and back
// for the kernel's buffer sizes, printed in the kernel's format. Run `npx tsc -p tsconfig.json` first.
//
// Usage: node scripts/hmm-benchmark.mjs [--iterations N] [--quick] [--json]
//   --iterations N  timed iterations per size (default 5, as the kernel)
//   --quick         stop before the largest size (128 PMDs, 256 MiB with 2 MiB PMDs)
//   --json          one JSON object on stdout instead of the tables
//
// What is timed is what the kernel times: one HMM_DMIRROR_MIGRATE_TO_DEV call (migrate, then the
// device's read-back of the range into the caller's buffer) and one HMM_DMIRROR_MIGRATE_TO_SYS call,
// here mirrorMigrate() and mirrorMigrateToSys() over a Region. "With THP" maps the region with
// { thp: true }: userfaultfd fills faults 4 KiB at a time, so the THPs the kernel would allocate at
// the first touch are made with region.collapse() (MADV_COLLAPSE), before the warm-up and again
// before every timed round, untimed (the kernel's pages come back from the device as THPs; ours
// come back as base pages). Sizes under one PMD hold no THP, in the kernel as here. Seeing THPs
// takes root (/proc/kpageflags); without it the column measures base pages. See docs/PARITY.md.
import { readFileSync } from 'node:fs';
import { Device, PAGE_SIZE, Region, probe } from '../dist/index.js';
import { mirrorMigrate, mirrorMigrateToSys } from '../dist/mirror.js';

const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const value = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? Number(args[i + 1]) : dflt;
};
const iterations = value('--iterations', 5);
if (!Number.isInteger(iterations) || iterations < 1) {
  console.error('--iterations must be a positive integer');
  process.exit(2);
}
const json = flag('--json');

const p = probe();
if (!p.available) {
  console.error(`uffd-hmm: userfaultfd unavailable: ${p.problem}. Fix: ${p.fix}`);
  process.exit(1);
}

/** read_pmd_pagesize(), falling back to TWOMEG as the kernel test does. */
function pmdSize() {
  try {
    const n = Number(readFileSync('/sys/kernel/mm/transparent_hugepage/hpage_pmd_size', 'utf8').trim());
    if (n > 0) return n;
  } catch {
    // no THP support compiled in
  }
  return 2 << 20;
}

const thp = pmdSize();
// The kernel's test_sizes[] and test_names[], in order.
const tests = [
  ['Small Buffer', thp / 4],
  ['Half THP Size', thp / 2],
  ['Single THP Size', thp],
  ['Two THP Size', thp * 2],
  ['Four THP Size', thp * 4],
  ['Eight THP Size', thp * 8],
  ['One twenty eight THP Size', thp * 128],
];
if (flag('--quick')) tests.pop();

const now = () => performance.now();

/** run_migration_benchmark(fd, use_thp, size, iterations). */
async function runMigrationBenchmark(useThp, size) {
  const npages = size / PAGE_SIZE;
  const region = Region.map({ pages: npages, thp: useThp });
  const pmdPages = thp / PAGE_SIZE;
  const collapse = () => {
    const whole = npages - (npages % pmdPages);
    if (useThp && whole > 0) region.collapse(0, whole);
  };
  const device = new Device({ capacity: npages, name: 'dmirror0' });
  try {
    // Initialize memory to make sure pages are allocated: ptr[i] = i & 0xFF.
    const ptr = new Int32Array(region.bytes.buffer, region.bytes.byteOffset, size / 4);
    for (let i = 0; i < ptr.length; i++) ptr[i] = i & 0xff;
    const s2d = () => {
      const r = mirrorMigrate(region, 0, npages, device);
      if (r.cpages !== npages) throw new Error(`MIGRATE_TO_DEV moved ${r.cpages} of ${npages} pages`);
    };
    const d2s = () => {
      const r = mirrorMigrateToSys(region, 0, npages, device);
      if (r.cpages !== npages) throw new Error(`MIGRATE_TO_SYS moved ${r.cpages} of ${npages} pages`);
    };
    // Warmup iteration.
    collapse();
    s2d();
    d2s();
    let s2dTotal = 0;
    let d2sTotal = 0;
    for (let i = 0; i < iterations; i++) {
      collapse();
      let start = now();
      s2d();
      s2dTotal += now() - start;
      start = now();
      d2s();
      d2sTotal += now() - start;
    }
    // The data survived every round trip.
    for (let i = 0; i < ptr.length; i++) if (ptr[i] !== (i & 0xff)) throw new Error(`int ${i} is ${ptr[i]} after migrating`);
    const gib = size / (1024 * 1024 * 1024);
    const s2dMs = s2dTotal / iterations;
    const d2sMs = d2sTotal / iterations;
    return { sys_to_dev_time: s2dMs, dev_to_sys_time: d2sMs, throughput_s2d: gib / (s2dMs / 1000), throughput_d2s: gib / (d2sMs / 1000) };
  } finally {
    await region.close();
    await device.close();
  }
}

/** print_benchmark_results(), with the kernel's layout and improvement formulas. */
function printBenchmarkResults(name, size, thpRes, regular) {
  const s2dImprovement = ((regular.sys_to_dev_time - thpRes.sys_to_dev_time) / regular.sys_to_dev_time) * 100;
  const d2sImprovement = ((regular.dev_to_sys_time - thpRes.dev_to_sys_time) / regular.dev_to_sys_time) * 100;
  const tS2dImprovement = ((thpRes.throughput_s2d - regular.throughput_s2d) / regular.throughput_s2d) * 100;
  const tD2sImprovement = ((thpRes.throughput_d2s - regular.throughput_d2s) / regular.throughput_d2s) * 100;
  console.log(`\n=== ${name} (${(size / (1024 * 1024)).toFixed(1)} MB) ===`);
  console.log('                     | With THP        | Without THP     | Improvement');
  console.log('---------------------------------------------------------------------');
  console.log(`Sys->Dev Migration   | ${thpRes.sys_to_dev_time.toFixed(3)} ms        | ${regular.sys_to_dev_time.toFixed(3)} ms        | ${s2dImprovement.toFixed(1)}%`);
  console.log(`Dev->Sys Migration   | ${thpRes.dev_to_sys_time.toFixed(3)} ms        | ${regular.dev_to_sys_time.toFixed(3)} ms        | ${d2sImprovement.toFixed(1)}%`);
  console.log(`S->D Throughput      | ${thpRes.throughput_s2d.toFixed(2)} GB/s      | ${regular.throughput_s2d.toFixed(2)} GB/s      | ${tS2dImprovement.toFixed(1)}%`);
  console.log(`D->S Throughput      | ${thpRes.throughput_d2s.toFixed(2)} GB/s      | ${regular.throughput_d2s.toFixed(2)} GB/s      | ${tD2sImprovement.toFixed(1)}%`);
}

if (!json) {
  console.log('\nHMM THP Migration Benchmark');
  console.log('---------------------------');
  console.log(`System page size: ${PAGE_SIZE} bytes`);
}
const results = [];
for (const [name, size] of tests) {
  // Skip test sizes exceeding INT_MAX to avoid overflow, as the kernel does.
  if (size > 0x7fffffff) break;
  // Test with THP, then without, as the kernel does.
  const thpRes = await runMigrationBenchmark(true, size);
  const regular = await runMigrationBenchmark(false, size);
  results.push({ name, bytes: size, thp: thpRes, regular });
  if (!json) printBenchmarkResults(name, size, thpRes, regular);
}
if (json) console.log(JSON.stringify({ kernel: p.kernel, pageSize: PAGE_SIZE, pmdSize: thp, iterations, results }));
