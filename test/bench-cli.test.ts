// `uffd-hmm bench` as a user meets it: the help names every workload option, bad options point
// at the bench's own help, messages read alike, and nothing names a file users do not have.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';
import { probe } from 'uffd-hmm';
import { num } from '../dist/bench/table.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'dist', 'cli.js');
const out = mkdtempSync(path.join(os.tmpdir(), 'uffd-hmm-bench-cli-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

function run(args: string[], timeoutMs = 20_000): SpawnSyncReturns<string> {
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: root, encoding: 'utf8', timeout: timeoutMs });
  if (r.error) throw r.error;
  return r;
}

describe('uffd-hmm bench --help', () => {
  it('names every workload option and no development file', () => {
    const r = run(['bench', '--help']);
    expect(r.status).toBe(0);
    for (const o of ['--driver', '--servicer', '--pattern', '--pages', '--threads', '--write-ratio', '--fault-around', '--device-capacity', '--batch', '--trace']) {
      expect(r.stdout).toContain(o);
    }
    expect(r.stdout).toMatch(/strided:K/);
    for (const o of ['--full', '--move']) expect(r.stdout).toContain(o);
    // The one definition of fault-around's per-page cost, as the table footnote and the JSON use it.
    expect(r.stdout.replace(/\s+/g, ' ')).toContain("is the median time to touch a group of 16 pages (one fault, 15 pages found back) ÷ 16 ÷ c-baseline's p50");
    expect(r.stdout).not.toMatch(/API\.md|SEMANTICS|shared\//);
  });
});

describe('bench usage errors exit 2 and point at bench --help', () => {
  const cases: Array<[string, string[], RegExp]> = [
    ['an unknown option, in lower case', ['bench', '--frobnicate'], /^uffd-hmm bench: unknown option '--frobnicate'$/m],
    ['an unknown pattern', ['bench', '--pattern', 'zigzag'], /unknown pattern 'zigzag'/],
    ['a missing driver file', ['bench', '--driver', 'no-such-driver.mjs'], /--driver: no such file 'no-such-driver.mjs'/],
    ['a servicer that does not exist', ['bench', '--servicer', 'gpu'], /--servicer must be worker, native or inline/],
    ['a write ratio above 1', ['bench', '--pattern', 'random', '--write-ratio', '2'], /--write-ratio needs a number from 0 to 1/],
    ['--faults with a workload', ['bench', '--pattern', 'random', '--faults', '1000'], /--faults is an option of the default benchmark/],
    ['--device-capacity 0', ['bench', '--device-capacity', '0'], /--device-capacity must be between 1 and/],
    ['--quick with --full', ['bench', '--quick', '--full'], /--quick and --full contradict each other/],
    ['--full with a workload', ['bench', '--pattern', 'random', '--full'], /--full is an option of the default benchmark, not of a workload/],
    ['--move with a workload', ['bench', '--pages', '100', '--move'], /--move is an option of the default benchmark, not of a workload/],
    [
      'a driver with the native servicer',
      ['bench', '--driver', 'examples/bench-lru/driver.mjs', '--servicer', 'native'],
      /a driver needs the worker servicer/,
    ],
  ];
  for (const [what, args, message] of cases) {
    it(what, () => {
      const r = run([...args, '--out', out]);
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).toContain("Run 'uffd-hmm bench --help' for usage.");
      expect(r.stdout).toBe('');
    });
  }
});

/** How many distinct colours the plot's curves have, checking that each run base keeps one colour. */
function curveColours(svg: string, runs: Array<{ name: string; base: string }>): number {
  const byBase = new Map<string, string>();
  for (const m of svg.matchAll(/<polyline [^>]*stroke="([^"]+)"[^>]*><title>([^<]+)<\/title>/g)) {
    const base = runs.find((x) => x.name === m[2])!.base;
    expect(byBase.get(base) ?? m[1], base).toBe(m[1]);
    byBase.set(base, m[1]);
  }
  expect(byBase.size).toBeGreaterThan(1);
  return new Set(byBase.values()).size;
}

/** The default bench's results.json, once its test wrote it (for --compare). */
let defaultResults: string | undefined;

describe.skipIf(!probe().available)('bench output names no development file', () => {
  it('a workload table', () => {
    const r = run(['bench', '--pattern', 'sequential', '--pages', '300', '--out', out], 60_000);
    expect(r.status, r.stderr).toBe(0);
    // A workload writes the plot its help promises: its run beside c-baseline, each in its own colour.
    expect(r.stdout).toMatch(/^wrote .*results\.json, .*latency-cdf\.svg$/m);
    const res = JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8'));
    expect(curveColours(readFileSync(path.join(out, 'latency-cdf.svg'), 'utf8'), res.runs.map((x: { name: string }) => ({ name: x.name, base: x.name })))).toBe(2);
    expect(res.config.commit).toMatch(/^[0-9a-f]{40}$/);
    expect(r.stdout).toMatch(/^host \(CPU \d+\): null system call \d+ ns/m);
    expect(r.stdout).toMatch(/^c-baseline\s+300\s+300\s/m);
    expect(r.stdout).not.toMatch(/API\.md|SEMANTICS|shared\//);
  });
});

describe.skipIf(!probe().available)('the default bench: same-work baselines and host facts', () => {
  it('has host, c-baseline-hot and c-sigbus (pinned and any-cpu), and one fault-around ratio in table and JSON', () => {
    const dir = mkdtempSync(path.join(out, 'default-'));
    const r = run(['bench', '--quick', '--faults', '500', '--out', dir], 150_000);
    expect(r.status, r.stderr).toBe(0);
    const res = JSON.parse(readFileSync(path.join(dir, 'results.json'), 'utf8'));
    for (const k of ['syscall_ns', 'plain_touch_us', 'plain_write_us', 'copy_fresh_source_us', 'copy_us']) expect(res.host[k], k).toBeGreaterThan(0);
    const names = res.runs.map((x: { name: string }) => x.name);
    for (const n of ['c-baseline', 'c-baseline-hot', 'c-sigbus', 'c-sigbus/sequential/1t/any-cpu']) expect(names).toContain(n);
    for (const k of ['inline_sigbus_p50', 'inline_sigbus_p99', 'c_sigbus_p50', 'c_baseline_hot_p50', 'c_fault_around_per_page', 'fault_around_c_per_page']) {
      expect(k in res.baseline_ratios, k).toBe(true);
    }
    // fault_around_per_page: the run's per_page_us ÷ c-baseline's p50, and the table prints that number.
    const byName = (n: string) => res.runs.find((x: { name: string }) => x.name === n);
    const fa = byName('fault-around-16');
    // A median 16-page group ÷ 16 lies between a page found back and a whole fault.
    expect(fa.per_page_us).toBeGreaterThan(fa.p50_us / 16);
    expect(fa.per_page_us).toBeLessThan(fa.max_us);
    const perPage = fa.per_page_us / byName('c-baseline').p50_us;
    expect(res.ratios.fault_around_per_page).toBeCloseTo(perPage, 9);
    // Per page in every column: the row's p50 is per_page.p50_us (= per_page_us), its p99 the p99 group ÷ 16.
    expect(fa.per_page.p50_us).toBe(fa.per_page_us);
    expect(fa.per_page.p99_us).toBeGreaterThanOrEqual(fa.per_page.p50_us);
    expect(fa.per_page.max_us).toBeLessThanOrEqual(fa.max_us * 16);
    const row = r.stdout.split('\n').find((l) => l.startsWith('fault-around-16 (per page) '))!;
    expect(row).toContain(`${perPage.toFixed(2)}x`);
    expect(row.split(/\s{2,}/)[4]).toBe(num(fa.per_page.p99_us));
    expect(r.stdout).toMatch(new RegExp(`^  fault_around_per_page\\s+${perPage.toFixed(2)}x$`, 'm'));
    // Its floor: the C handler filling each 16-page block with one copy, measured the same way.
    const cfa = byName('c-fault-around-16');
    expect(cfa.per_page_us).toBeGreaterThan(cfa.p50_us / 16);
    expect(res.baseline_ratios.c_fault_around_per_page).toBeCloseTo(cfa.per_page_us / byName('c-baseline').p50_us, 9);
    expect(res.baseline_ratios.fault_around_c_per_page).toBeCloseTo(fa.per_page_us / cfa.per_page_us, 9);
    expect(r.stdout.split('\n').find((l) => l.startsWith('c-fault-around-16 (per page) '))).toBeDefined();
    expect(r.stdout).toMatch(/^host \(CPU \d+\): null system call/m);
    // The host's kind, from its own facts, in the JSON and under the host line.
    expect(res.host.kind).toBe(res.host.syscall_ns < 200 ? 'fast' : 'slow');
    expect(res.host.first_read_charge_us).toBeCloseTo(res.host.copy_fresh_source_us - res.host.copy_us, 9);
    expect(typeof res.host.charges_first_read).toBe('boolean');
    expect(r.stdout).toMatch(new RegExp(`^  a ${res.host.kind} host \\(a null system call \\d+ ns`, 'm'));
    // Where the results came from: this checkout's version and commit.
    expect(res.config.version).toBe(JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).version);
    const head = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8' }).stdout.trim();
    expect(res.config.commit).toBe(head);
    // Every run of the plot in a colour of its own.
    expect(curveColours(readFileSync(path.join(dir, 'latency-cdf.svg'), 'utf8'), res.runs)).toBe(new Set(res.runs.map((x: { base: string }) => x.base)).size);
    defaultResults = path.join(dir, 'results.json');
  }, 160_000);
});

describe.skipIf(!probe().available)('the default bench without --full', () => {
  it('measures the random-order and two-thread variants only with --full, and MOVE only with --move', () => {
    const dir = mkdtempSync(path.join(out, 'plan-'));
    const r = run(['bench', '--quick', '--json', '--faults', '400', '--out', dir], 150_000);
    expect(r.status, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    const names: string[] = res.runs.map((x: { name: string }) => x.name);
    expect(names.filter((n) => n.includes('/random/') || n.includes('/2t'))).toEqual([]);
    const anyCpu = names.filter((n) => n.endsWith('/any-cpu')).map((n) => n.split('/')[0]);
    expect(anyCpu.sort()).toEqual(['c-baseline', 'c-sigbus', 'inline'].filter((n) => names.includes(n)).sort());
    expect(res.config.full).toBe(false);
    expect(res.move).toBeNull();
    expect(res.unavailable.move).toMatch(/--move/);
  }, 160_000);
});

describe.skipIf(!probe().available || !probe().features.move)('bench --move: UFFDIO_MOVE against UFFDIO_COPY', () => {
  it('serves every fault once (16 pages a fault with fault-around) and reports each figure beside its COPY twin', () => {
    const dir = mkdtempSync(path.join(out, 'move-'));
    const faults = 480;
    const r = run(['bench', '--quick', '--move', '--faults', String(faults), '--out', dir], 150_000);
    expect(r.status, r.stderr).toBe(0);
    const res = JSON.parse(readFileSync(path.join(dir, 'results.json'), 'utf8'));
    const m = res.move;
    expect(m, JSON.stringify(res.unavailable)).not.toBeNull();
    // One round: the handler served one fault a page, or one per 16 pages with fault-around.
    expect(m.copy.faults_served).toBe(faults);
    expect(m.move.faults_served).toBe(faults);
    expect(m.copy_around16.faults_served).toBe(faults / 16);
    expect(m.move_around16.faults_served).toBe(faults / 16);
    for (const k of ['copy', 'move', 'copy_around16', 'move_around16']) {
      for (const f of ['p50_us', 'p99_us', 'mean_us', 'fault_p50_us']) expect(m[k][f], `${k}.${f}`).toBeGreaterThan(0);
    }
    expect(m.single_p50_ratio).toBeCloseTo(m.move.p50_us / m.copy.p50_us, 9);
    expect(m.around16_fault_p50_ratio).toBeCloseTo(m.move_around16.fault_p50_us / m.copy_around16.fault_p50_us, 9);
    const b = m.bulk;
    for (const f of ['copy_back_us', 'move_back_us', 'copy_to_device_us', 'refill_to_device_us', 'move_to_device_us', 'single_copy_us', 'single_move_us']) {
      expect(b[f], f).toBeGreaterThan(0);
    }
    expect(m.round_trip_us.copy).toBeCloseTo(b.copy_back_us + b.copy_to_device_us, 9);
    expect(m.round_trip_us.move_refill).toBeCloseTo(b.move_back_us + b.refill_to_device_us, 9);
    expect(m.round_trip_us.move_both).toBeCloseTo(b.move_back_us + b.move_to_device_us, 9);
    expect(r.stdout).toMatch(/^UFFDIO_MOVE vs UFFDIO_COPY/m);
    expect(r.stdout).toMatch(/^  round trip per page: COPY [\d.]+, MOVE \+ refill [\d.]+, MOVE both ways [\d.]+$/m);
  }, 160_000);
});

describe('bench --compare', () => {
  it('refuses a missing file, a second file missing, and measuring options, with exit 2', () => {
    for (const [args, message] of [
      [['bench', '--compare', 'no-such.json', 'other.json'], /--compare: cannot read 'no-such.json'/],
      [['bench', '--compare', 'package.json'], /--compare needs two results files/],
      [['bench', '--compare', 'package.json', 'package.json'], /'package.json' is not a results\.json written by 'uffd-hmm bench'/],
      [['bench', '--compare', 'a.json', 'b.json', '--faults', '100'], /--faults does not go with it/],
      [['bench', 'stray.json'], /unexpected argument 'stray.json'/],
    ] as Array<[string[], RegExp]>) {
      const r = run(args);
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toMatch(message);
    }
  });

  it.skipIf(!probe().available)('puts two results side by side: host kinds, each run and ratio, and the change from A to B', () => {
    expect(defaultResults, 'the default bench test runs first and writes results.json').toBeDefined();
    const a = JSON.parse(readFileSync(defaultResults!, 'utf8'));
    // B: another host (cheap system calls), whose worker run is 10% slower and whose c-baseline is as A's.
    const b = structuredClone(a);
    b.host.syscall_ns = 61;
    delete b.host.kind; // as in a file written before hosts were classified: --compare classifies it
    const w = b.runs.find((x: { name: string }) => x.name === 'worker');
    w.p50_us *= 1.1;
    w.p99_us *= 1.2;
    b.ratios.worker_p50 *= 1.1;
    b.config.commit = null;
    const fileB = path.join(out, 'b.json');
    writeFileSync(fileB, JSON.stringify(b));
    const r = run(['bench', '--compare', defaultResults!, fileB, '--json']);
    expect(r.status, r.stderr).toBe(0);
    const c = JSON.parse(r.stdout);
    expect(c.a.host.kind).toBe(a.host.kind);
    expect(c.b.host.kind).toBe('fast');
    expect(c.a.commit).toBe(a.config.commit);
    const cw = c.runs.find((x: { name: string }) => x.name === 'worker');
    expect(cw.p50_change).toBeCloseTo(0.1, 9);
    expect(cw.p99_change).toBeCloseTo(0.2, 9);
    expect(cw.ratio_change).toBeCloseTo(cw.a.p50_ratio * 0.1, 9);
    expect(c.runs.find((x: { name: string }) => x.name === 'c-baseline').p50_change).toBe(0);
    expect(c.runs.find((x: { name: string }) => x.name === 'fault-around-16').per_page).toBe(true);
    expect(c.ratios.worker_p50.change).toBeCloseTo(a.ratios.worker_p50 * 0.1, 9);
    const t = run(['bench', '--compare', defaultResults!, fileB]);
    expect(t.status, t.stderr).toBe(0);
    expect(t.stdout).toMatch(/^B: .*b\.json — /m);
    expect(t.stdout).toMatch(/a fast host \(a null system call 61 ns/);
    expect(t.stdout).toMatch(/^worker\s.*\+10\.0%.*\+20\.0%/m);
  });
});
