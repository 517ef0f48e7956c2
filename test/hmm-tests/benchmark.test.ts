// hmm-tests.c's benchmark_thp_migration: the kernel case asserts that every migration round of every
// size succeeds, with and without THP. scripts/hmm-benchmark.mjs runs it (and prints the timings);
// here it runs once per size, and each round is also checked for cpages and for the data surviving.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { describeUffd, runNode } from '../helpers.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

interface Times {
  sys_to_dev_time: number;
  dev_to_sys_time: number;
  throughput_s2d: number;
  throughput_d2s: number;
}

describeUffd('hmm-tests.c: benchmark', () => {
  it('benchmark_thp_migration', async () => {
    const run = await runNode([path.join(root, 'scripts/hmm-benchmark.mjs'), '--iterations', '1', '--json'], { cwd: root, timeoutMs: 120_000 });
    expect(run.timedOut).toBe(false);
    expect(run.code, run.out).toBe(0);
    const out = JSON.parse(run.stdout) as { pmdSize: number; results: { name: string; bytes: number; thp: Times; regular: Times }[] };
    // The kernel's test_sizes[]: PMD/4 … 128 PMDs, each with and without THP.
    expect(out.results.map((r) => r.bytes / out.pmdSize)).toEqual([0.25, 0.5, 1, 2, 4, 8, 128]);
    for (const r of out.results) {
      for (const t of [r.thp, r.regular]) {
        expect(t.sys_to_dev_time).toBeGreaterThan(0);
        expect(t.dev_to_sys_time).toBeGreaterThan(0);
        expect(Number.isFinite(t.throughput_s2d) && Number.isFinite(t.throughput_d2s)).toBe(true);
      }
    }
  }, 150_000);
});
