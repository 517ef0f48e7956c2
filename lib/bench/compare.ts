// `uffd-hmm bench --compare A.json B.json`: two results files (two hosts, two kernels, two commits)
// side by side — where each came from, what each host charges, and every run's p50, p99 and ratio
// to its own same-run baseline, with the change from A to B. Ratios are compared as well as times
// because only a ratio measured within one run carries from one host to another.
import { readFileSync } from 'node:fs';

import { benchUsage } from './errors.js';
import { describeHost, hostKindOf } from './provenance.js';
import { grid, num, ratio } from './table.js';
import type { HostFacts, LatencySummary } from './types.js';

/** The parts of a results file a comparison reads (the default benchmark's or a workload's). */
interface Comparable {
  kind?: string;
  kernel: string;
  cpus: number;
  host: HostFacts;
  runs: Array<LatencySummary & { name: string; base?: string; pattern?: string; threads?: number; placement?: string; per_page?: LatencySummary }>;
  ratios: Record<string, number | null>;
  baseline_ratios?: Record<string, number | null>;
  config: { date: string; node: string; version?: string; commit?: string | null };
}

export interface CompareSide {
  file: string;
  date: string;
  version: string | null;
  commit: string | null;
  node: string;
  kernel: string;
  cpus: number;
  host: HostFacts;
}

export interface CompareRun {
  name: string;
  /** Per page (fault-around runs) or per touch. */
  per_page: boolean;
  a: { p50_us: number; p99_us: number; p50_ratio: number | null } | null;
  b: { p50_us: number; p99_us: number; p50_ratio: number | null } | null;
  /** b ÷ a − 1, when both have the run. */
  p50_change: number | null;
  p99_change: number | null;
  /** b's p50 ratio − a's p50 ratio (ratios to each file's own baseline). */
  ratio_change: number | null;
}

export interface Comparison {
  kind: 'compare';
  a: CompareSide;
  b: CompareSide;
  runs: CompareRun[];
  /** Each published ratio of either file, side by side. */
  ratios: Record<string, { a: number | null; b: number | null; change: number | null }>;
}

function load(file: string): Comparable {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw benchUsage(`--compare: cannot read '${file}': ${(e as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw benchUsage(`--compare: '${file}' is not JSON (${(e as Error).message})`);
  }
  const o = v as Partial<Comparable> | null;
  const ok =
    o !== null &&
    typeof o === 'object' &&
    Array.isArray(o.runs) &&
    o.runs.every((r) => typeof r?.name === 'string' && typeof r.p50_us === 'number' && typeof r.p99_us === 'number') &&
    typeof o.host?.syscall_ns === 'number' &&
    typeof o.ratios === 'object' &&
    typeof o.config?.date === 'string';
  if (!ok) throw benchUsage(`--compare: '${file}' is not a results.json written by 'uffd-hmm bench' (no runs, host or config)`);
  return o as Comparable;
}

function side(file: string, r: Comparable): CompareSide {
  // Files written before hosts were classified carry only the raw facts: classify them the same way.
  const host = r.host.kind ? r.host : { ...r.host, ...hostKindOf(r.host.syscall_ns, r.host.copy_fresh_source_us, r.host.copy_us) };
  return { file, date: r.config.date, version: r.config.version ?? null, commit: r.config.commit ?? null, node: r.config.node, kernel: r.kernel, cpus: r.cpus, host };
}

/** A run's figures and its p50 over its own file's baseline of the same variant (per page for fault-around). */
function figures(res: Comparable, name: string): CompareRun['a'] {
  const r = res.runs.find((x) => x.name === name);
  if (!r) return null;
  const s = r.per_page ?? r;
  const base =
    res.kind === 'workload'
      ? res.runs.find((x) => x.name === 'c-baseline')
      : res.runs.find((x) => (x.base ?? x.name) === 'c-baseline' && x.pattern === r.pattern && x.threads === r.threads && x.placement === r.placement);
  return { p50_us: s.p50_us, p99_us: s.p99_us, p50_ratio: base ? s.p50_us / base.p50_us : null };
}

const change = (a: number | null | undefined, b: number | null | undefined): number | null =>
  a === null || a === undefined || b === null || b === undefined || a === 0 ? null : b / a - 1;

export function compareResults(fileA: string, fileB: string): Comparison {
  const A = load(fileA);
  const B = load(fileB);
  const names = [...A.runs.map((r) => r.name), ...B.runs.map((r) => r.name).filter((n) => !A.runs.some((r) => r.name === n))];
  const runs = names.map((name): CompareRun => {
    const a = figures(A, name);
    const b = figures(B, name);
    const perPage = [A, B].some((res) => res.runs.find((x) => x.name === name)?.per_page !== undefined);
    return {
      name,
      per_page: perPage,
      a,
      b,
      p50_change: change(a?.p50_us, b?.p50_us),
      p99_change: change(a?.p99_us, b?.p99_us),
      ratio_change: a?.p50_ratio != null && b?.p50_ratio != null ? b.p50_ratio - a.p50_ratio : null,
    };
  });
  const ratios: Comparison['ratios'] = {};
  const all = (r: Comparable): Record<string, number | null> => ({ ...r.ratios, ...(r.baseline_ratios ?? {}) });
  const ra = all(A);
  const rb = all(B);
  for (const k of [...Object.keys(ra), ...Object.keys(rb).filter((k) => !(k in ra))]) {
    const a = typeof ra[k] === 'number' ? ra[k] : null;
    const b = typeof rb[k] === 'number' ? rb[k] : null;
    ratios[k] = { a, b, change: a !== null && b !== null ? b - a : null };
  }
  return { kind: 'compare', a: side(fileA, A), b: side(fileB, B), runs, ratios };
}

function pct(x: number | null): string {
  if (x === null || !Number.isFinite(x)) return '-';
  return `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%`;
}

function delta(x: number | null): string {
  return x === null || !Number.isFinite(x) ? '-' : `${x >= 0 ? '+' : ''}${x.toFixed(2)}`;
}

export function formatComparison(c: Comparison): string {
  const out: string[] = [];
  for (const [label, s] of [['A', c.a], ['B', c.b]] as const) {
    out.push(
      `${label}: ${s.file} — ${s.date}, uffd-hmm ${s.version ?? '?'}${s.commit ? ` (${s.commit.slice(0, 12)})` : ''}, node ${s.node}, ` +
        `kernel ${s.kernel}, ${s.cpus} CPUs`,
    );
    const h = s.host;
    out.push(
      `   host: null system call ${h.syscall_ns.toFixed(0)} ns, plain first touch ${num(h.plain_touch_us)} µs, UFFDIO_COPY ` +
        `${num(h.copy_fresh_source_us)} µs fresh / ${num(h.copy_us)} µs warm: a ${describeHost(h)}`,
    );
  }
  out.push('');
  const rows = c.runs.map((r) => [
    r.per_page ? `${r.name} (per page)` : r.name,
    r.a ? num(r.a.p50_us) : '-',
    r.b ? num(r.b.p50_us) : '-',
    pct(r.p50_change),
    r.a ? num(r.a.p99_us) : '-',
    r.b ? num(r.b.p99_us) : '-',
    pct(r.p99_change),
    ratio(r.a?.p50_ratio),
    ratio(r.b?.p50_ratio),
    delta(r.ratio_change),
  ]);
  out.push(grid(['run', 'A p50 µs', 'B p50 µs', 'p50 Δ', 'A p99 µs', 'B p99 µs', 'p99 Δ', 'A p50/c', 'B p50/c', 'p50/c Δ'], rows));
  out.push('');
  out.push('ratios (each to its own file\'s same-run baseline):');
  out.push(
    grid(
      ['ratio', 'A', 'B', 'Δ'],
      Object.entries(c.ratios).map(([k, v]) => [k, ratio(v.a), ratio(v.b), delta(v.change)]),
    ),
  );
  out.push('');
  out.push(
    'Times compare hosts as much as code: a slow host is slow for every run. The p50/c columns (each run over the c-baseline ' +
      'measured in the same file, same variant) and the ratios are what carries from one host to another; Δ of a time is B ÷ A − 1, ' +
      'Δ of a ratio is B − A.',
  );
  return out.join('\n') + '\n';
}
