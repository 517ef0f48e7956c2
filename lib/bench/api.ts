/**
 * Fault-latency benchmarking from code: `import { bench } from 'uffd-hmm/bench'`.
 *
 * `bench(options)` runs your workload — a driver module, an access pattern or a replayed trace,
 * threads, writes, fault-around, a device smaller than the working set — on real page faults,
 * beside a C userfaultfd handler serving the same faults in the same invocation, and returns the
 * object `uffd-hmm bench --driver … --json` prints: both runs' latency percentiles, their ratios,
 * the time inside the driver's hooks and what they decided.
 *
 * @example
 * ```ts
 * import { bench } from 'uffd-hmm/bench';
 * const res = await bench({ driver: new URL('./my-driver.mjs', import.meta.url), pattern: 'random', pages: 20_000 });
 * expect(res.ratios.p99).toBeLessThan(2);   // p99 under 2x the C handler's, same run, same faults
 * ```
 *
 * @module
 */
import { runWorkload, type WorkloadOptions, type WorkloadResults } from './workload.js';

export type {
  DeviceTurn,
  DeviceTurnContext,
  DeviceTurnDecision,
  HookTiming,
  WorkloadOptions,
  WorkloadResults,
  WorkloadRun,
} from './workload.js';
export type { TraceEntry } from './pattern.js';
export type { HostFacts, HostKind, LatencySummary, Placement, Provenance } from './types.js';

/**
 * Runs the workload and its same-work C baseline; resolves to the results object. Bad options
 * reject with a RangeError (`code: 'ERR_INVALID_ARG_VALUE'`); a process that cannot use
 * userfaultfd with `ERR_UFFD_UNAVAILABLE`.
 */
export function bench(options: WorkloadOptions = {}): Promise<WorkloadResults> {
  return runWorkload(options);
}
