// The worked examples of docs/DRIVERS.md run as they would for a user: each program in a child
// process with a deadline, which must exit 0 (its own node:assert checks allow that only when its evidence holds) and print its key lines.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { describeOutcome, runChild } from './fixtures/semantics/run-child.js';

const example = (dir: string, file: string) => fileURLToPath(new URL(`../examples/${dir}/${file}`, import.meta.url));
// A real fault costs microseconds; these deadlines only catch a hang (a fault nobody serves).
const DEADLINE_MS = 60_000;

describe('examples/gpu-increment', () => {
  it('has the files its README lists', () => {
    expect(readdirSync(fileURLToPath(new URL('../examples/gpu-increment/', import.meta.url))).sort()).toEqual([
      'README.md',
      'gpu-driver.mjs',
      'main.mjs',
    ]);
  });

  it('the GPU adds 1 to every byte of the pages it holds; the CPU reads them back through the driver', async () => {
    const o = await runChild(example('gpu-increment', 'main.mjs'), [], { timeoutMs: DEADLINE_MS });
    expect(o.timedOut, describeOutcome(o)).toBe(false);
    expect({ code: o.code, signal: o.signal }, describeOutcome(o)).toEqual({ code: 0, signal: null });
    expect(o.stderr, describeOutcome(o)).toBe('');
    const lines = o.stdout.split('\n');
    expect(lines, describeOutcome(o)).toEqual(
      expect.arrayContaining([
        'migrated 64 pages to gpu0: every entry is a write device entry; gpu0.used = 64',
        'gpu kernel: +1 on every byte of 64 device pages (262144 bytes), CPU faults meanwhile: 0',
        'cpu read every byte: all 262144 bytes are old + 1',
        'gpu0.stats()  = { faults: 64, migratedToDevice: 64, migratedToRam: 64, freed: 64 } used = 0',
        'driver hooks: 64 fault calls (pages 0..63 in order, thread: worker), 64 pageFree calls (thread: main)',
        'device removal: gpu.close() evicted 64 pages with 0 faults; every byte is old + 2; 64 pageFree calls (thread: main)',
        'gpu0.stats()  = { faults: 64, migratedToDevice: 128, migratedToRam: 128, freed: 128 } used = 0',
        'OK: the GPU incremented every byte of the 64 pages it held before they came back',
      ]),
    );
    // Region stats since the input was written: one read fault per page, nothing else.
    expect(o.stdout).toContain('(since the input was written: { faults: 64, writeFaults: 0, wpFaults: 0, kernelFaults: 0, migratedBack: 64 })');
  });

  it('takes a page count, and a single page works too', async () => {
    const o = await runChild(example('gpu-increment', 'main.mjs'), ['1'], { timeoutMs: DEADLINE_MS });
    expect({ code: o.code, signal: o.signal, timedOut: o.timedOut }, describeOutcome(o)).toEqual({ code: 0, signal: null, timedOut: false });
    expect(o.stdout).toContain('OK: the GPU incremented every byte of the 1 pages it held before they came back');
  });

  it('refuses a bad page count with a non-zero exit, not a crash of the servicer', async () => {
    const o = await runChild(example('gpu-increment', 'main.mjs'), ['0'], { timeoutMs: DEADLINE_MS });
    expect({ code: o.code, signal: o.signal, timedOut: o.timedOut }, describeOutcome(o)).toEqual({ code: 1, signal: null, timedOut: false });
    expect(o.stderr).toContain('pages must be an integer from 1 to 4096');
  });
});

describe('examples/flaky-device', () => {
  it('has the files its README lists', () => {
    expect(readdirSync(fileURLToPath(new URL('../examples/flaky-device/', import.meta.url))).sort()).toEqual([
      'README.md',
      'data.mjs',
      'flaky-driver.mjs',
      'job.mjs',
      'main.mjs',
    ]);
  });

  it('the supervisor sees each SIGBUS of the flaky device, retries the rest and accounts for every page', async () => {
    const o = await runChild(example('flaky-device', 'main.mjs'), [], { timeoutMs: DEADLINE_MS });
    expect(o.timedOut, describeOutcome(o)).toBe(false);
    expect({ code: o.code, signal: o.signal }, describeOutcome(o)).toEqual({ code: 0, signal: null });
    expect(o.stderr, describeOutcome(o)).toBe('');
    const lines = o.stdout.trim().split('\n');
    expect(lines, describeOutcome(o)).toEqual([
      'attempt 1 on the flaky device: pages 0-8 done, SIGBUS on page 9',
      '  driver: refusing fault #10 (region page 9, pfn 9) -> SIGBUS',
      'attempt 2 on the flaky device: pages 9-17 done, SIGBUS on page 18',
      '  driver: refusing fault #10 (region page 9, pfn 9) -> SIGBUS',
      'attempt 3 on the good device: pages 18-29 done, exit 0',
      `  child's region.stats().migratedBack = 12; good0.stats() = {"faults":12,"migratedToDevice":12,"migratedToRam":12,"freed":12}; used = 0`,
      'recovered: all 30 pages accounted for, each digested exactly once, every digest matches its input',
    ]);
  });

  it('one flaky job run on its own dies of SIGBUS at its 10th fault, having finished exactly 9 pages', async () => {
    // The evidence the supervisor relies on, checked directly: the child's own lines and signal.
    const o = await runChild(example('flaky-device', 'job.mjs'), ['0', '30', 'flaky'], { timeoutMs: DEADLINE_MS });
    expect(o.timedOut, describeOutcome(o)).toBe(false);
    expect(o.signal, describeOutcome(o)).toBe('SIGBUS');
    const lines = o.stdout.trim().split('\n');
    expect(lines[0]).toBe('READY 0 30 flaky');
    expect(lines.filter((l) => l.startsWith('DONE ')).map((l) => Number(l.split(' ')[1]))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(lines.slice(-2)).toEqual(['TOUCH 9', 'driver: refusing fault #10 (region page 9, pfn 9) -> SIGBUS']);
    expect(o.stdout).not.toContain('STATS');
  });
});

// The benchmark examples: each bench.mjs compares two policies from code and checks the exact
// counts itself; the CLI runs a driver the way README shows (--quick: a few thousand faults).
const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const root = fileURLToPath(new URL('..', import.meta.url));

for (const [dir, ok] of [
  ['bench-prefetch', 'OK: prefetch turned 4096 faults into 256 on the stream, and left the random pattern alone'],
  ['bench-lru', 'OK: LRU admitted every page the device wanted, by evicting; refusal evicted nothing and left pages in RAM'],
] as const) {
  describe(`examples/${dir}`, () => {
    it('has the files its README lists', () => {
      expect(readdirSync(fileURLToPath(new URL(`../examples/${dir}/`, import.meta.url))).sort()).toEqual(['README.md', 'bench.mjs', 'driver.mjs']);
    });

    it('bench.mjs --quick compares the two policies and its checks hold', async () => {
      const o = await runChild(example(dir, 'bench.mjs'), ['--quick'], { timeoutMs: DEADLINE_MS * 2 });
      expect({ code: o.code, signal: o.signal, timedOut: o.timedOut }, describeOutcome(o)).toEqual({ code: 0, signal: null, timedOut: false });
      expect(o.stdout.trim().split('\n').at(-1)).toBe(ok);
    }, DEADLINE_MS * 2 + 5_000);

    it('`bench --driver … --pattern random --quick --json` prints one object: the run, the baseline, the hook timings', async () => {
      const out = mkdtempSync(path.join(os.tmpdir(), 'uffd-hmm-example-bench-'));
      try {
        const o = await runChild(cli, ['bench', '--driver', `examples/${dir}/driver.mjs`, '--pattern', 'random', '--quick', '--json', '--out', out], {
          timeoutMs: DEADLINE_MS,
          cwd: root,
        });
        expect({ code: o.code, signal: o.signal, timedOut: o.timedOut }, describeOutcome(o)).toEqual({ code: 0, signal: null, timedOut: false });
        const lines = o.stdout.trim().split('\n');
        expect(lines).toHaveLength(1);
        const res = JSON.parse(lines[0]);
        expect(res.workload).toMatchObject({ pattern: 'random', servicer: 'worker', pages: 5000, touches: 5000 });
        expect(res.runs.map((r: { name: string }) => r.name)).toEqual(['driver.mjs', 'c-baseline']);
        const [run, base] = res.runs;
        // Every page starts on the device and is touched once: 5000 faults, each through the hook.
        expect(run.faults_served).toBe(5000);
        expect(base.faults_served).toBe(run.device_touches);
        expect(res.hooks.fault.calls).toBe(run.faults_served);
        expect(res.hooks.fault.p50_us).toBeLessThanOrEqual(res.hooks.fault.p99_us);
        expect(res.decisions).toMatchObject({ migrated: 5000, refused: 0, hook_errors: 0 });
        expect(res.ratios.p50).toBeCloseTo(run.p50_us / base.p50_us, 9);
        expect(res.host.syscall_ns).toBeGreaterThan(0);
      } finally {
        rmSync(out, { recursive: true, force: true });
      }
    }, DEADLINE_MS + 5_000);
  });
}
