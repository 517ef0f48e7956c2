// Latencies → statistics through Node's HDR histogram (perf_hooks.createHistogram): percentiles,
// max, mean and the points of the latency CDF, with no percentile code of our own. A run measured
// in several rounds accumulates every round into one histogram.
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';

import type { LatencySummary } from './types.js';

/** Percentiles sampled for the CDF plot: dense in the body, denser in the tail. */
const CDF_PERCENTILES: number[] = [
  ...Array.from({ length: 99 }, (_, i) => i + 1),
  ...Array.from({ length: 9 }, (_, i) => 99.1 + i * 0.1),
  99.95,
  99.99,
  100,
];

export interface Summary extends LatencySummary {
  /** [latency µs, cumulative fraction] pairs, increasing. */
  cdf: Array<[number, number]>;
}

export class LatencyRecorder {
  // 3 significant digits: 0.1% resolution at every magnitude, from ns to seconds.
  readonly #h: RecordableHistogram = createHistogram({ lowest: 1, highest: 1e12, figures: 3 });

  /** Records latenciesNs[from..]; values below 1 ns are recorded as 1 (the histogram's floor). */
  record(latenciesNs: Float64Array, from: number): void {
    for (let i = from; i < latenciesNs.length; i++) this.#h.record(Math.max(1, Math.round(latenciesNs[i])));
  }

  summary(): Summary {
    const h = this.#h;
    const us = (ns: number): number => ns / 1000;
    return {
      faults: h.count,
      p50_us: us(h.percentile(50)),
      p90_us: us(h.percentile(90)),
      p99_us: us(h.percentile(99)),
      p999_us: us(h.percentile(99.9)),
      max_us: us(h.max),
      mean_us: us(h.mean),
      cdf: CDF_PERCENTILES.map((p) => [us(h.percentile(p)), p / 100]),
    };
  }
}
