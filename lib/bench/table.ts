// The human-readable report: host facts, one row per run with its ratio to the c-baseline of the
// same variant, then the ratios, migration throughput, memory, and what was not measured.
import { describeHost } from './provenance.js';
import { C_FAULT_AROUND_RUN, FAULT_AROUND_RUN } from './runs.js';
import type { BenchResults, HostFacts, LatencySummary, MoveResult, RunResult } from './types.js';

export function num(x: number, digits = 2): string {
  if (!Number.isFinite(x)) return '-';
  if (x >= 10000) return x.toExponential(2);
  if (x >= 100) return x.toFixed(0);
  if (x >= 10) return x.toFixed(1);
  return x.toFixed(digits);
}

export function ratio(x: number | null | undefined): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '-' : `${x.toFixed(2)}x`;
}

function mib(bytes: number): string {
  return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}

/** A run's latency columns, p50 to mean, as both reports print them. */
export function latencyCells(r: LatencySummary): string[] {
  return [num(r.p50_us), num(r.p90_us), num(r.p99_us), num(r.p999_us), num(r.max_us), num(r.mean_us)];
}

export function grid(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** Host facts, one line: what the host charges every program, servicer or not. */
export function hostLine(h: HostFacts): string {
  return (
    `host (CPU ${h.cpu}): null system call ${h.syscall_ns.toFixed(0)} ns, plain first touch ${num(h.plain_touch_us)} µs read / ` +
    `${num(h.plain_write_us)} µs write (no userfaultfd), UFFDIO_COPY ${num(h.copy_fresh_source_us)} µs from a page user space ` +
    `just wrote / ${num(h.copy_us)} µs from it again\n` +
    `  a ${describeHost(h)}`
  );
}

/** The c-baseline run measured with the same pattern, threads and placement as `r`. */
function baselineFor(r: RunResult, runs: RunResult[]): RunResult | undefined {
  return runs.find(
    (b) => b.base === 'c-baseline' && b.pattern === r.pattern && b.threads === r.threads && b.placement === r.placement,
  );
}

export function formatReport(res: BenchResults, files: string[]): string {
  const out: string[] = [];
  out.push(`uffd-hmm bench — kernel ${res.kernel}, ${res.cpus} CPUs, ${res.config.faults} faults per run and round, ${res.config.date}`);
  out.push(hostLine(res.host));
  out.push('');
  const rows = res.runs.map((r) => {
    const b = baselineFor(r, res.runs);
    // Fault-around runs are shown per page in every column (a group of 16 touches ÷ 16: the same
    // definition as ratios.fault_around_per_page), so that a slow group reads as its cost per page.
    const s: LatencySummary = r.per_page ?? r;
    return [
      r.per_page ? `${r.name} (per page)` : r.name,
      String(r.faults),
      ...latencyCells(s),
      num(r.faults_per_s, 0),
      ratio(b ? s.p50_us / b.p50_us : null),
      ratio(b ? s.p99_us / b.p99_us : null),
    ];
  });
  out.push(grid(['run', 'faults', 'p50 µs', 'p90 µs', 'p99 µs', 'p99.9 µs', 'max µs', 'mean µs', 'faults/s', 'p50/c', 'p99/c'], rows));
  out.push(`p50/c, p99/c: ÷ c-baseline of the same pattern, threads and placement. ${FAULT_AROUND_RUN} and ${C_FAULT_AROUND_RUN} ` +
      `are per page in every latency column: each statistic of the time to touch a group of 16 pages (one fault, 15 pages ` +
      `found back) ÷ 16; their faults column counts touches.`);
  out.push('');
  out.push('ratios to the same-work baseline (c-baseline: distinct source pages, as the servicers copy):');
  const ratioLines = (ratios: Record<string, number | null>): void => {
    for (const [k, v] of Object.entries(ratios)) {
      out.push(`  ${k.padEnd(24)} ${v === null ? `n/a — ${res.unavailable[k] ?? 'not measured'}` : ratio(v)}`);
    }
  };
  ratioLines({ ...res.ratios });
  out.push('baselines (inline_sigbus_*: inline ÷ c-sigbus, the in-thread C floor):');
  ratioLines({ ...res.baseline_ratios });
  if (res.migration) {
    const m = res.migration;
    out.push('');
    out.push(`migration of ${mib(m.bytes)} (GiB/s):      ours    C memcpy+madvise   ratio`);
    out.push(`  to device                ${num(m.to_device_gib_s).padStart(7)}   ${num(m.c_to_device_gib_s).padStart(16)}   ${ratio(m.to_device_ratio).padStart(5)}`);
    out.push(`  back to RAM              ${num(m.to_ram_gib_s).padStart(7)}   ${num(m.c_to_ram_gib_s).padStart(16)}   ${ratio(m.to_ram_ratio).padStart(5)}`);
    out.push(
      `  to device, against C that stops writers first (write-protect + pagemap): ${num(m.c_stop_writers_to_device_gib_s)} GiB/s, ` +
        `ours ${ratio(m.to_device_stop_writers_ratio)}`,
    );
  }
  if (res.move) out.push('', ...moveLines(res.move));
  const to = res.trace_overhead;
  if (to.worker_p50 !== null || to.native_p50 !== null) {
    out.push('');
    const fmt = (r: number | null) => (r === null ? 'n/a' : `${((r - 1) * 100).toFixed(1)}%`);
    out.push(`trace overhead at p50 (traced ÷ untraced, same run): worker ${fmt(to.worker_p50)}, native ${fmt(to.native_p50)}`);
  }
  const js = res.runs.filter((r) => r.js_entries_per_fault !== undefined);
  if (js.length > 0) {
    out.push('');
    out.push(`worker servicer's returns to JS per served fault: ${js.map((r) => `${r.name} ${r.js_entries_per_fault!.toFixed(4)}`).join(', ')}`);
  }
  if (res.memory) {
    const m = res.memory;
    out.push('');
    out.push(`memory around the ${m.run} run (${m.faults} faults${m.gc ? ', after full GCs' : ''}):`);
    out.push(`  main-thread JS heap      ${mib(m.heap_used_before)} -> ${mib(m.heap_used_after)} (${m.heap_growth >= 0 ? '+' : ''}${(m.heap_growth / 1024).toFixed(0)} KiB)`);
    out.push(`  worker servicer JS heap  ${mib(m.worker_heap_before)} -> ${mib(m.worker_heap_after)} (${m.worker_heap_growth >= 0 ? '+' : ''}${(m.worker_heap_growth / 1024).toFixed(0)} KiB)`);
    out.push(`  RSS                      ${mib(m.rss_before)} -> ${mib(m.rss_after)} (pages faulted back: ${mib(m.rss_expected_growth)})`);
    if (m.table_pages > 0) out.push(`  page table               ${m.table_bytes_per_page.toFixed(2)} bytes/page (region of ${m.table_pages} pages)`);
  }
  const skipped = Object.entries(res.unavailable).filter(([k]) => !(k in res.ratios) && !(k in res.baseline_ratios));
  if (skipped.length > 0) {
    out.push('');
    out.push('not measured:');
    for (const [k, why] of skipped) out.push(`  ${k}: ${why}`);
  }
  return finish(out, res.notes, files);
}

/** UFFDIO_MOVE against UFFDIO_COPY: each figure beside its COPY twin and their ratio. */
function moveLines(m: MoveResult): string[] {
  const row = (label: string, copy: number, move: number): string =>
    `  ${label.padEnd(34)} ${num(copy).padStart(7)}  ${num(move).padStart(7)}  ${ratio(move / copy).padStart(6)}`;
  const b = m.bulk;
  const rt = m.round_trip_us;
  return [
    `UFFDIO_MOVE vs UFFDIO_COPY (raw C handler, µs):       COPY     MOVE  MOVE/COPY`,
    row('single fault, p50', m.copy.p50_us, m.move.p50_us),
    row('single fault, p99', m.copy.p99_us, m.move.p99_us),
    row('fault-around 16: the fault, p50', m.copy_around16.fault_p50_us, m.move_around16.fault_p50_us),
    row('fault-around 16: per page (mean)', m.copy_around16.mean_us, m.move_around16.mean_us),
    row(`${b.pages} pages back, per page`, b.copy_back_us, b.move_back_us),
    row('one page per ioctl, no waiter', b.single_copy_us, b.single_move_us),
    `  to the device, per page: memcpy into its pages ${num(b.copy_to_device_us)}, refill of MOVE's holes ${num(b.refill_to_device_us)}, MOVE ${num(b.move_to_device_us)}`,
    `  round trip per page: COPY ${num(rt.copy)}, MOVE + refill ${num(rt.move_refill)}, MOVE both ways ${num(rt.move_both)}`,
  ];
}

/** The report's end, shared by both reports: notes, the files written, the text. */
export function finish(out: string[], notes: string[], files: string[]): string {
  out.push('');
  out.push('notes:');
  for (const n of notes) out.push(`  - ${n}`);
  if (files.length > 0) {
    out.push('');
    out.push(`wrote ${files.join(', ')}`);
  }
  return out.join('\n') + '\n';
}
