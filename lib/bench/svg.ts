// The latency CDF of every run on one plot, log-x in µs, as a self-contained SVG string. Colour
// names the run, dash pattern the variant, so the main runs read at a glance among the variants.
import type { WorkloadResults } from './workload-types.js';
import type { BenchResults, RunResult } from './types.js';

/** One colour per run of the benchmark, none shared, so that every curve can be told from the legend. */
export const PALETTE: Readonly<Record<string, string>> = {
  'c-baseline': '#222222',
  'c-baseline-hot': '#999999',
  'c-fault-around-16': '#8c6d31',
  'c-sigbus': '#006400',
  native: '#1f77b4',
  'native-traced': '#6baed6',
  worker: '#d62728',
  'worker-traced': '#ff9896',
  'worker-js-toucher': '#ff7f0e',
  'fault-around-16': '#9467bd',
  inline: '#2ca02c',
  'inline-js-toucher': '#17becf',
  plain: '#8c564b',
  'plain-write': '#e377c2',
};
const SPARE = ['#bcbd22', '#7f7f7f', '#aec7e8', '#98df8a', '#c5b0d5', '#f7b6d2'];

/** The run's colour: its own, or one that no other run on this plot has (spares are in no run's palette entry). */
export function colour(base: string, seen: Map<string, string>): string {
  const known = seen.get(base);
  if (known) return known;
  const taken = new Set(seen.values());
  let c: string | undefined = PALETTE[base];
  if (c === undefined || taken.has(c)) c = SPARE.find((x) => !taken.has(x));
  // Past the spares: hues a golden angle apart.
  for (let i = seen.size; c === undefined || taken.has(c); i++) c = `hsl(${Math.round((i * 137.508) % 360)}, 65%, 45%)`;
  seen.set(base, c);
  return c;
}

/** What a curve needs: its name, the run it is a variant of, the variant, and the figures in its legend. */
type PlotRun = Pick<RunResult, 'name' | 'base' | 'p50_us' | 'p99_us' | 'max_us'> & Partial<Pick<RunResult, 'pattern' | 'threads' | 'placement'>>;

function dash(r: PlotRun): string {
  if (r.name === r.base) return '';
  if (r.threads === 1 && r.placement === 'any') return '2 3';
  if (r.threads === 1) return '7 3';
  return r.pattern === 'sequential' ? '9 3 2 3' : '3 5';
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function fmtUs(x: number): string {
  return x >= 1000 ? `${x / 1000}ms` : x >= 1 ? `${x}µs` : `${Math.round(x * 1000)}ns`;
}

export function cdfSvg(res: BenchResults, cdfs: Map<string, Array<[number, number]>>): string {
  return drawCdfs(
    `uffd-hmm fault latency CDF — ${res.config.faults} faults per run and round`,
    `kernel ${res.kernel}, ${res.cpus} CPUs, node ${res.config.node}, ${res.config.date}`,
    res.runs,
    cdfs,
  );
}

/** A workload's plot: its run beside the c-baseline that served the same faults. */
export function workloadSvg(res: WorkloadResults, cdfs: Map<string, Array<[number, number]>>): string {
  const w = res.workload;
  return drawCdfs(
    `uffd-hmm workload latency CDF — ${w.driver ?? 'default policy'}, ${w.pattern}, ${w.touches} touches`,
    `kernel ${res.kernel}, ${res.cpus} CPUs, node ${res.config.node}, ${res.config.date}; latencies of device touches`,
    res.runs.map((r) => ({ ...r, base: r.name })),
    cdfs,
  );
}

function drawCdfs(title: string, subtitle: string, all: readonly PlotRun[], cdfs: Map<string, Array<[number, number]>>): string {
  const runs = all.filter((r) => (cdfs.get(r.name)?.length ?? 0) > 0);
  // The axis spans the runs' bodies and tails up to p99.99; the few slower touches run off the
  // right edge (clipped) rather than squeezing every curve into a corner.
  const at = (r: PlotRun, f: number): number => cdfs.get(r.name)!.find(([, q]) => q >= f - 1e-9)?.[0] ?? r.max_us;
  const lows = runs.map((r) => at(r, 0.01)).filter((v) => v > 0);
  const highs = runs.map((r) => at(r, 0.9999)).filter((v) => v > 0);
  const lo = Math.floor(Math.log10(lows.length ? Math.min(...lows) : 0.1));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(highs.length ? Math.max(...highs) : 1000)));
  const L = 70;
  const T = 50;
  const W = 640;
  const legendRow = 15;
  const H = Math.max(420, runs.length * legendRow + 20);
  const width = L + W + 420;
  const height = T + H + 60;
  const x = (us: number): number => L + ((Math.log10(Math.max(us, 10 ** (lo - 1))) - lo) / (hi - lo)) * W;
  const y = (f: number): number => T + (1 - f) * H;
  const p: string[] = [];
  p.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  p.push(`<rect width="100%" height="100%" fill="white"/>`);
  p.push(`<defs><clipPath id="plot"><rect x="${L}" y="${T - 2}" width="${W}" height="${H + 4}"/></clipPath></defs>`);
  p.push(
    `<text x="${L}" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`,
    `<text x="${L}" y="40" fill="#555">${esc(subtitle)}</text>`,
  );
  // Grid: decades solid, 2× and 5× faint; fractions every 10%.
  for (let e = lo; e <= hi; e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v > 10 ** hi) break;
      const gx = x(v).toFixed(1);
      p.push(`<line x1="${gx}" y1="${T}" x2="${gx}" y2="${T + H}" stroke="${m === 1 ? '#bbb' : '#e6e6e6'}"/>`);
      if (m === 1 || hi - lo <= 3) p.push(`<text x="${gx}" y="${T + H + 16}" text-anchor="middle" fill="#333">${esc(fmtUs(Number(v.toPrecision(3))))}</text>`);
    }
  }
  for (let i = 0; i <= 10; i++) {
    const gy = y(i / 10).toFixed(1);
    p.push(`<line x1="${L}" y1="${gy}" x2="${L + W}" y2="${gy}" stroke="${i % 5 === 0 ? '#bbb' : '#eee'}"/>`);
    p.push(`<text x="${L - 6}" y="${Number(gy) + 4}" text-anchor="end" fill="#333">${i * 10}%</text>`);
  }
  p.push(`<rect x="${L}" y="${T}" width="${W}" height="${H}" fill="none" stroke="#444"/>`);
  p.push(`<text x="${L + W / 2}" y="${T + H + 40}" text-anchor="middle">latency of one touch (log scale; beyond p99.99 clipped, see max in the table)</text>`);
  p.push(`<text transform="translate(18 ${T + H / 2}) rotate(-90)" text-anchor="middle">fraction of touches at or below</text>`);

  const seen = new Map<string, string>();
  runs.forEach((r, i) => {
    const c = colour(r.base, seen);
    const d = dash(r);
    const pts = cdfs.get(r.name)!;
    const path = [[pts[0][0], 0] as [number, number], ...pts].map(([us, f]) => `${x(us).toFixed(1)},${y(f).toFixed(1)}`).join(' ');
    const main = r.name === r.base;
    p.push(
      `<polyline clip-path="url(#plot)" points="${path}" fill="none" stroke="${c}" stroke-width="${main ? 2.2 : 1.2}"${d ? ` stroke-dasharray="${d}"` : ''}${main ? '' : ' opacity="0.8"'}><title>${esc(r.name)}</title></polyline>`,
    );
    const ly = T + 8 + i * legendRow;
    const lx = L + W + 16;
    p.push(`<line x1="${lx}" y1="${ly}" x2="${lx + 28}" y2="${ly}" stroke="${c}" stroke-width="${main ? 2.2 : 1.2}"${d ? ` stroke-dasharray="${d}"` : ''}/>`);
    p.push(
      `<text x="${lx + 34}" y="${ly + 4}" font-size="11"${main ? ' font-weight="bold"' : ''}>${esc(`${r.name}  p50 ${r.p50_us.toFixed(1)} p99 ${r.p99_us.toFixed(1)} µs`)}</text>`,
    );
  });
  p.push('</svg>');
  return p.join('\n') + '\n';
}
