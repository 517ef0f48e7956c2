// The shapes of a workload benchmark: what `bench()` (and `uffd-hmm bench --driver …`) takes,
// what a driver's bench-only deviceTurn hook sees and decides, and the results object it returns.
import type { ServicerKind } from '../region.js';
import type { TraceEntry } from './pattern.js';
import type { HostFacts, LatencySummary, Placement, Provenance } from './types.js';

/** What `deviceTurn` receives: the device's view between two batches of CPU touches. */
export interface DeviceTurnContext {
  /** The device's name. */
  readonly deviceName: string;
  /** Device memory, pages. */
  readonly capacity: number;
  /** Device pages in use now. */
  readonly used: number;
  /** 0 before the first batch, then the number of batches run so far. */
  readonly turn: number;
  /** The pages the CPU touched in the batch just run, in order (empty before the first). */
  readonly touched: Int32Array;
  /** 1 where the touch at the same index of `touched` wrote. */
  readonly writes: Uint8Array;
  /** Pages of the region (the working set spans 0..pages-1). */
  readonly pages: number;
  /** Whether `page`'s entry names this device now. */
  onDevice(page: number): boolean;
}

/**
 * What `deviceTurn` decides: pages to migrate back to RAM (evictions, prefetches for the CPU),
 * applied first, then pages to migrate to the device. A page the full device cannot take stays
 * in RAM (counted as not admitted), as the kernel's dmirror driver leaves a page it cannot
 * allocate device memory for.
 */
export interface DeviceTurnDecision {
  /** Pages to migrate back to RAM, first: evictions, or prefetches for the CPU. */
  toRam?: Iterable<number>;
  /** Pages to migrate to the device, after: each one a full device cannot take stays in RAM. */
  toDevice?: Iterable<number>;
}

import type { FaultTrace } from '../trace.js';

/** The bench-only export of a driver module: the device's side of the workload, on the main thread. */
export type DeviceTurn = (ctx: DeviceTurnContext) => DeviceTurnDecision | void;

/** What to run: every field is optional. */
export interface WorkloadOptions {
  /** The driver module (path or URL); none: the default policy (every fault migrates back). */
  driver?: string | URL;
  /** Default 'worker', the only servicer that calls a driver's hooks. */
  servicer?: ServicerKind;
  /**
   * 'sequential' (default), 'random', 'strided:K', 'hot:P', a path ending in .json (a trace), or
   * the trace itself: a list of page indices or {page, write} records.
   */
  pattern?: string | readonly TraceEntry[];
  /** The working set in pages (generated patterns touch this many times); default 100000, 5000 with quick. */
  pages?: number;
  /** Native touching threads; default 1. */
  threads?: number;
  /** Share of touches that write, 0..1 (drawn per touch, seeded); default 0. Trace records with `write` keep theirs. */
  writeRatio?: number;
  /** Region fault-around, 1..512; default 1. */
  faultAround?: number;
  /** Device memory in pages; default the working set. Smaller: the device holds pages 0..capacity-1 at the start. */
  deviceCapacity?: number;
  /** CPU touches between two device turns; default 256 when the driver has deviceTurn, else 1/20 of the stream. */
  batch?: number;
  /** Smaller defaults (5000 pages). */
  quick?: boolean;
  /** The CPU a one-thread workload and its servicer run on; default the last one. */
  cpu?: number;
  /**
   * A file to write the run's fault trace to, in the Chrome Trace Event Format
   * ({@link FaultTrace#toTraceEvents}): the last 65,536 faults (and spans), the
   * migrations and every device turn. Tracing adds a wake-up per fault, so the latencies of a
   * traced run are not comparable with an untraced one.
   */
  trace?: string;
}

/** The most faults (and spans) `bench --trace` keeps: the last ones of the run. */
export const WORKLOAD_TRACE_CAPACITY = 65_536;

/** A run's latency over its device touches (the first touch of a device-resident page in each batch). */
export interface WorkloadRun extends LatencySummary {
  /** The driver module's file name, the servicer's name without a driver, or 'c-baseline'. */
  name: string;
  /** Every touch of the run. */
  touches: number;
  /** Touches of a page that was on the device: the ones the statistics describe. */
  device_touches: number;
  /** Faults the servicer counted (the C baseline: one per device touch). */
  faults_served: number;
  /** Device touches that raised SIGBUS (the driver refused); left out of the statistics. */
  refused: number;
  /** Device touches per second of touching. */
  faults_per_s: number;
  /** Mean of every touch, device or not, µs. */
  touch_mean_us: number;
}

/** Time inside one hook, over all its calls. */
export interface HookTiming {
  /** Calls timed. */
  calls: number;
  /** Median time inside the hook, µs. */
  p50_us: number;
  /** 99th percentile, µs. */
  p99_us: number;
  /** Mean, µs. */
  mean_us: number;
  /** The slowest call, µs. */
  max_us: number;
}

/** What `bench()` returns and `uffd-hmm bench --driver … --json` prints. */
export interface WorkloadResults {
  /** Tells this object from the default benchmark's. */
  kind: 'workload';
  /** The kernel release (uname -r). */
  kernel: string;
  /** CPUs this process may use. */
  cpus: number;
  /** What this host charges every program, measured in the same invocation. */
  host: HostFacts;
  /** The workload as run, defaults filled in. */
  workload: {
    /** The driver module's URL; null without one. */
    driver: string | null;
    /** Who served the faults. */
    servicer: ServicerKind;
    /** The pattern, or the trace file and its length. */
    pattern: string;
    /** Pages of the region: the working set. */
    pages: number;
    /** CPU touches replayed. */
    touches: number;
    /** Native threads touching. */
    threads: number;
    /** Share of generated touches that write. */
    write_ratio: number;
    /** The region's fault-around. */
    fault_around: number;
    /** Device memory, pages. */
    device_capacity: number;
    /** Touches between two device turns. */
    batch: number;
    /** Where the threads ran. */
    placement: Placement;
  };
  /** The workload, then c-baseline, which serves the same device touches, in the same order, from distinct source pages. */
  runs: [WorkloadRun, WorkloadRun];
  /** Workload ÷ c-baseline, same invocation. */
  ratios: {
    /** Median ÷ median. */
    p50: number;
    /** 99th percentile ÷ 99th percentile. */
    p99: number;
    /** Mean ÷ mean. */
    mean: number;
  };
  /** Time inside the driver's hooks; null for a hook the module does not export. */
  hooks: {
    /** The fault hook, in the servicer. */
    fault: HookTiming | null;
    /** pageFree calls in the servicer (after each fault) and on the main thread (evictions, close). */
    page_free: HookTiming | null;
    /** deviceTurn, on the main thread (its migrations not included: see device.device_turns_s). */
    device_turn: HookTiming | null;
  };
  /** What the driver decided. */
  decisions: {
    /** Faults migrated back: by the fault hook's answer, or by the default policy without one. */
    migrated: number;
    /** Faults the fault hook refused ('sigbus'). */
    refused: number;
    /** Hook calls that threw or answered something else (reported on the device, served by the default policy). */
    hook_errors: number;
    /** Pages deviceTurn migrated back to RAM. */
    to_ram: number;
    /** Pages deviceTurn migrated to the device. */
    to_device: number;
    /** Pages deviceTurn sent to a full device, left in RAM. */
    not_admitted: number;
  };
  /**
   * Device pages at the start and the end of the workload; seconds spent touching (the CPU's
   * side) and in device turns (deviceTurn and the migrations it asked for).
   */
  device: {
    /** Device memory, pages. */
    capacity: number;
    /** Device pages in use as the first batch began. */
    resident_at_start: number;
    /** Device pages in use after the last batch. */
    resident_at_end: number;
    /** Wall time of the CPU's touches, s. */
    touching_s: number;
    /** Wall time of the device turns, deviceTurn and its migrations, s. */
    device_turns_s: number;
  };
  /** How to read the numbers, and anything that did not add up. */
  notes: string[];
  /** The invocation. */
  config: {
    /** The quick defaults were used. */
    quick: boolean;
    /** The CPU a one-thread workload ran on. */
    cpu: number;
    /** When, ISO 8601. */
    date: string;
    /** Node's version. */
    node: string;
  } & Provenance;
}
