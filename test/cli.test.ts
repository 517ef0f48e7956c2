// The CLI as a user runs it: `node dist/cli.js …` in a child process, checking output shapes
// (the bench's JSON contract, exit codes for bad input) and never timings.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';
import { probe } from 'uffd-hmm';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'dist', 'cli.js');

function run(args: string[], timeoutMs: number): SpawnSyncReturns<string> {
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: root, encoding: 'utf8', timeout: timeoutMs });
  if (r.error) throw r.error; // a timeout lands here (ETIMEDOUT), not as a confusing assertion
  return r;
}

const RUN_KEYS = ['name', 'faults', 'p50_us', 'p90_us', 'p99_us', 'p999_us', 'max_us', 'mean_us'] as const;
const RATIO_KEYS = [
  'worker_p50',
  'worker_p99',
  'native_p50',
  'native_p99',
  'fault_around_per_page',
  'inline_p50',
  'inline_p99',
  'inline_js_p50',
] as const;
const FEATURES = ['wp', 'wpAsync', 'move', 'poison', 'zeropage', 'eventFork', 'eventRemove', 'eventUnmap', 'eventRemap', 'threadId'];

function positiveFinite(x: unknown): boolean {
  return typeof x === 'number' && Number.isFinite(x) && x > 0;
}

describe('uffd-hmm info', () => {
  it('--json prints the Probe object', () => {
    const r = run(['info', '--json'], 20_000);
    expect(r.status).toBe(probe().available ? 0 : 1);
    const p = JSON.parse(r.stdout);
    expect(typeof p.available).toBe('boolean');
    expect([null, 'dev-userfaultfd', 'syscall']).toContain(p.via);
    expect(typeof p.userModeOnly).toBe('boolean');
    expect(typeof p.kernel).toBe('string');
    expect(p.kernel).toBe(os.release());
    for (const f of FEATURES) expect(typeof p.features[f]).toBe('boolean');
    expect(p).toEqual(JSON.parse(JSON.stringify(probe())));
  });

  it('prints a readable table without --json, and exits 1 exactly when userfaultfd is not available', () => {
    const r = run(['info'], 20_000);
    expect(r.status).toBe(probe().available ? 0 : 1);
    expect(r.stdout).toMatch(probe().available ? /^userfaultfd\s+available/m : /^userfaultfd\s+NOT available/m);
    expect(r.stdout).toMatch(/^userfaultfd\s+/m);
    expect(r.stdout).toMatch(/^kernel\s+\S+/m);
    expect(r.stdout).toMatch(/^\s+wp\s+(yes|no)$/m);
  });
});

describe('bad input', () => {
  const cases: Array<[string, string[], RegExp]> = [
    ['an unknown command', ['frobnicate'], /unknown command 'frobnicate'/],
    ['an unknown top-level flag', ['--frobnicate'], /unknown option '--frobnicate'/],
    ['an unknown bench flag', ['bench', '--fault', '10'], /--fault/],
    ['a non-numeric --faults', ['bench', '--faults', 'many'], /--faults needs a whole number/],
    ['--faults out of range', ['bench', '--faults', '5'], /--faults must be between/],
    ['--faults without a value', ['bench', '--faults'], /--faults/],
    ['a stray argument', ['info', 'extra'], /unexpected argument 'extra'/],
  ];
  for (const [what, args, message] of cases) {
    it(`${what} exits 2 with a clear message`, () => {
      const r = run(args, 20_000);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stdout).toBe('');
    });
  }

  it('--version and -v print the package version', () => {
    const { version } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
    for (const flag of ['--version', '-v']) {
      const r = run([flag], 20_000);
      expect(r.status).toBe(0);
      expect(r.stdout).toBe(`${version}\n`);
    }
    expect(run(['--help'], 20_000).stdout).toContain('--version');
  });

  it('without its native addon, says so once, names the fix and exits 1', () => {
    // The package's JavaScript alone, as an install whose addon build failed leaves it.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'uffd-hmm-noaddon-'));
    try {
      cpSync(path.join(root, 'dist'), path.join(dir, 'dist'), { recursive: true });
      writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'uffd-hmm', version: '0.0.0', type: 'module' }));
      const r = spawnSync(process.execPath, [path.join(dir, 'dist', 'cli.js'), 'info'], { encoding: 'utf8', timeout: 20_000 });
      if (r.error) throw r.error;
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/^uffd-hmm could not load its native addon\. Tried:/);
      expect(r.stderr).not.toContain('uffd-hmm: uffd-hmm');
      expect(r.stderr).toContain('[ERR_UFFD_ADDON_LOAD]');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('--help exits 0 and names both commands', () => {
    const r = run(['--help'], 20_000);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/info/);
    expect(r.stdout).toMatch(/bench/);
  });
});

describe.skipIf(!probe().available)('uffd-hmm bench --quick --json', () => {
  const out = mkdtempSync(path.join(os.tmpdir(), 'uffd-hmm-bench-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));
  // The first test to ask runs the benchmark (seconds under a loaded test run); the rest reuse it.
  const BENCH_TIMEOUT = 150_000;
  let result: SpawnSyncReturns<string> | undefined;
  const bench = (): SpawnSyncReturns<string> =>
    (result ??= run(['bench', '--quick', '--json', '--faults', '2000', '--out', out], BENCH_TIMEOUT - 10_000));

  it('prints exactly one JSON object on stdout and exits 0', () => {
    const r = bench();
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
    expect(() => JSON.parse(r.stdout)).not.toThrow();
  }, BENCH_TIMEOUT);

  it('has the documented JSON shape', () => {
    const res = JSON.parse(bench().stdout);
    expect(typeof res.kernel).toBe('string');
    expect(Number.isInteger(res.cpus) && res.cpus > 0).toBe(true);
    expect(Array.isArray(res.runs)).toBe(true);
    const names = res.runs.map((r: { name: string }) => r.name);
    for (const required of ['c-baseline', 'native', 'worker', 'worker-js-toucher']) expect(names).toContain(required);
    expect(new Set(names).size).toBe(names.length);
    for (const run of res.runs) {
      for (const k of RUN_KEYS) expect(run, `${run.name}.${k}`).toHaveProperty(k);
      expect(typeof run.name).toBe('string');
      expect(Number.isInteger(run.faults) && run.faults > 0, `${run.name}.faults`).toBe(true);
      for (const k of RUN_KEYS.slice(2)) expect(positiveFinite(run[k]), `${run.name}.${k} = ${run[k]}`).toBe(true);
      expect(run.p50_us).toBeLessThanOrEqual(run.p90_us);
      expect(run.p90_us).toBeLessThanOrEqual(run.p99_us);
      expect(run.p99_us).toBeLessThanOrEqual(run.p999_us);
      expect(run.p999_us).toBeLessThanOrEqual(run.max_us);
    }
    expect(Object.keys(res.ratios).sort()).toEqual([...RATIO_KEYS].sort());
    for (const k of RATIO_KEYS) {
      const v = res.ratios[k];
      expect(v === null || positiveFinite(v), `ratios.${k} = ${v}`).toBe(true);
      // A missing ratio always says why; a present one comes from runs that were measured.
      if (v === null) expect(typeof res.unavailable[k]).toBe('string');
    }
    expect(positiveFinite(res.ratios.worker_p50)).toBe(true);
    expect(positiveFinite(res.ratios.native_p50)).toBe(true);
  }, BENCH_TIMEOUT);

  it('reports migration throughput and memory as extra fields', () => {
    const res = JSON.parse(bench().stdout);
    for (const k of ['to_device_gib_s', 'to_ram_gib_s', 'c_to_device_gib_s', 'c_to_ram_gib_s', 'to_device_ratio', 'to_ram_ratio', 'c_stop_writers_to_device_gib_s', 'to_device_stop_writers_ratio']) {
      expect(positiveFinite(res.migration[k]), `migration.${k}`).toBe(true);
    }
    for (const k of ['heap_used_before', 'heap_used_after', 'rss_before', 'rss_after', 'table_bytes_per_page']) {
      expect(positiveFinite(res.memory[k]), `memory.${k}`).toBe(true);
    }
  }, BENCH_TIMEOUT);

  it('writes results.json (the same object) and an SVG CDF next to it', () => {
    const res = JSON.parse(bench().stdout);
    expect(JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8'))).toEqual(res);
    const svg = readFileSync(path.join(out, 'latency-cdf.svg'), 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    for (const run of res.runs) expect(svg).toContain(`<title>${run.name}</title>`);
  }, BENCH_TIMEOUT);
});
