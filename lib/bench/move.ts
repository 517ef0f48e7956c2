// UFFDIO_MOVE against UFFDIO_COPY for bringing device pages back, on raw C handlers: single
// faults, 16-page fault-around, and bulk migration with the refill a moved-out device page costs.
// Measured pinned, in interleaved rounds, on numbers of its own; no servicer is involved.
import { accessOrder } from './order.js';
import { withPlacement } from './placement.js';
import { LatencyRecorder } from './summary.js';
import type { MoveResult, ServeResult } from './types.js';
import { benchCheckFailed } from '../errors.js';
import { native } from '../native.js';

interface MoveAddon {
  benchMoveProbe(): boolean;
  /** Each returns what held the wrong data afterwards, or undefined. */
  benchServe(pages: number, order: Int32Array, threads: number, out: Float64Array, move: boolean, around: number, stats: Float64Array): string | undefined;
  benchMoveBulk(pages: number, out: Float64Array): string | undefined;
}
const addon = native as unknown as MoveAddon;

/** Pages moved each way in the bulk measurement, as the issue of a 16 MiB migration. */
export const BULK_PAGES = 4096;
const BULK_REPEATS = 5;

/** Why MOVE cannot be measured here, or undefined when it can. */
export function moveUnavailable(): string | undefined {
  return addon.benchMoveProbe() ? undefined : 'this kernel does not offer UFFD_FEATURE_MOVE (Linux 6.8 or later)';
}

interface Tally {
  all: LatencyRecorder;
  faulting: LatencyRecorder;
  served: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/**
 * `faults` touches per way and round, `rounds` rounds with the four ways interleaved (so a
 * disturbance lands on all of them), then the bulk measurement. `progress` gets 0..1.
 */
export function measureMove(faults: number, rounds: number, warmup: number, cpu: number, progress: (f: number) => void): MoveResult {
  const order = accessOrder('sequential', faults);
  const ways = [
    { move: false, around: 1 },
    { move: true, around: 1 },
    { move: false, around: 16 },
    { move: true, around: 16 },
  ];
  const tallies: Tally[] = ways.map(() => ({ all: new LatencyRecorder(), faulting: new LatencyRecorder(), served: 0 }));
  const lat = new Float64Array(faults);
  const stats = new Float64Array(2);
  const bulk: number[][] = Array.from({ length: 7 }, () => []);
  withPlacement('one-cpu', cpu, () => {
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < ways.length; i++) {
        const w = (i + r) % ways.length;
        const { move, around } = ways[w];
        const wrong = addon.benchServe(faults, order, 1, lat, move, around, stats);
        if (wrong !== undefined) throw benchCheckFailed(`${wrong} hold the wrong data`);
        const t = tallies[w];
        t.all.record(lat, warmup);
        // The touches that faulted: sequential order, so every `around`-th page.
        const faulting = around === 1 ? lat : lat.filter((_, k) => order[k] % around === 0);
        t.faulting.record(faulting, Math.ceil(warmup / around));
        t.served += stats[0];
        progress((r * ways.length + i + 1) / (rounds * ways.length + 1));
      }
    }
    const out = new Float64Array(7);
    for (let k = 0; k < BULK_REPEATS; k++) {
      const wrong = addon.benchMoveBulk(BULK_PAGES, out);
      if (wrong !== undefined) throw benchCheckFailed(`${wrong} hold the wrong data`);
      out.forEach((ns, j) => bulk[j].push(ns / BULK_PAGES / 1000));
    }
    progress(1);
  });
  const serve = (t: Tally): ServeResult => {
    const s = t.all.summary();
    return { touches: s.faults, faults_served: t.served, p50_us: s.p50_us, p99_us: s.p99_us, mean_us: s.mean_us, fault_p50_us: t.faulting.summary().p50_us };
  };
  const [copy, move, copy16, move16] = tallies.map(serve);
  const [copyBack, copyToDevice, moveBack, refillToDevice, moveToDevice, singleCopy, singleMove] = bulk.map(median);
  return {
    copy,
    move,
    single_p50_ratio: move.p50_us / copy.p50_us,
    copy_around16: copy16,
    move_around16: move16,
    around16_fault_p50_ratio: move16.fault_p50_us / copy16.fault_p50_us,
    around16_per_page_ratio: move16.mean_us / copy16.mean_us,
    bulk: {
      pages: BULK_PAGES,
      repeats: BULK_REPEATS,
      copy_back_us: copyBack,
      move_back_us: moveBack,
      copy_to_device_us: copyToDevice,
      refill_to_device_us: refillToDevice,
      move_to_device_us: moveToDevice,
      single_copy_us: singleCopy,
      single_move_us: singleMove,
      back_ratio: moveBack / copyBack,
    },
    round_trip_us: {
      copy: copyBack + copyToDevice,
      move_refill: moveBack + refillToDevice,
      move_both: moveBack + moveToDevice,
    },
  };
}
