// The human-readable report of a workload run: the workload and its same-work C baseline in the
// benchmark's table, then the driver's hook times and decisions.
import { finish, grid, hostLine, latencyCells, num, ratio } from './table.js';
import type { HookTiming, WorkloadResults, WorkloadRun } from './workload.js';

function row(r: WorkloadRun, base: WorkloadRun): string[] {
  return [
    r.name,
    String(r.device_touches),
    String(r.faults_served),
    ...latencyCells(r),
    num(r.faults_per_s, 0),
    ratio(r.p50_us / base.p50_us),
    ratio(r.p99_us / base.p99_us),
  ];
}

function hookLine(name: string, t: HookTiming | null): string {
  if (!t) return `  ${name.padEnd(11)} not exported`;
  return `  ${name.padEnd(11)} ${String(t.calls).padStart(8)} calls   p50 ${num(t.p50_us)} µs   p99 ${num(t.p99_us)} µs   mean ${num(t.mean_us)} µs   max ${num(t.max_us)} µs`;
}

export function formatWorkload(res: WorkloadResults, files: string[]): string {
  const w = res.workload;
  const [run, base] = res.runs;
  const out: string[] = [];
  out.push(`uffd-hmm bench — kernel ${res.kernel}, ${res.cpus} CPUs, ${res.config.date}`);
  out.push(hostLine(res.host));
  out.push(
    `workload: ${w.driver ? `driver ${w.driver}` : 'no driver (default policy)'}, servicer ${w.servicer}, pattern ${w.pattern}, ` +
      `${w.pages} pages, ${w.touches} touches, ${w.threads} thread(s), write ratio ${w.write_ratio}, fault-around ${w.fault_around}, ` +
      `device ${w.device_capacity} pages, batch ${w.batch}`,
  );
  out.push('');
  out.push(grid(['run', 'device touches', 'faults', 'p50 µs', 'p90 µs', 'p99 µs', 'p99.9 µs', 'max µs', 'mean µs', 'faults/s', 'p50/c', 'p99/c'], [row(run, base), row(base, base)]));
  out.push('');
  if (w.driver) {
    out.push('driver hooks (time inside each call):');
    out.push(hookLine('fault', res.hooks.fault));
    out.push(hookLine('pageFree', res.hooks.page_free));
    out.push(hookLine('deviceTurn', res.hooks.device_turn));
    out.push('');
  }
  const d = res.decisions;
  out.push(`decisions: ${d.migrated} migrated back, ${d.refused} refused (SIGBUS), ${d.hook_errors} hook errors`);
  if (res.hooks.device_turn) {
    out.push(`device turns: ${d.to_ram} pages to RAM, ${d.to_device} to the device, ${d.not_admitted} not admitted (device full)`);
  }
  const dev = res.device;
  out.push(`device: ${dev.resident_at_start} of ${dev.capacity} pages in use at the start, ${dev.resident_at_end} at the end`);
  out.push(`time: ${num(dev.touching_s, 3)} s touching, ${num(dev.device_turns_s, 3)} s in device turns`);
  return finish(out, res.notes, files);
}
