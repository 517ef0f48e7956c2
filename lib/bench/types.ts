// The shapes the benchmark produces: the JSON object of `uffd-hmm bench --json` (kernel, cpus,
// host, runs, ratios, and the extra fields: variants, migration, memory, what could not be
// measured and why).

/** A run's latency record; every latency in µs. */
export interface LatencySummary {
  /** Touches in the statistics (warm-up and refused touches left out). */
  faults: number;
  /** Median latency, µs. */
  p50_us: number;
  /** 90th percentile, µs. */
  p90_us: number;
  /** 99th percentile, µs. */
  p99_us: number;
  /** 99.9th percentile, µs. */
  p999_us: number;
  /** The slowest, µs. */
  max_us: number;
  /** The mean, µs. */
  mean_us: number;
}

export type Pattern = 'sequential' | 'random';
/** 'one-cpu': the whole process on one CPU; 'any': wherever the scheduler puts each thread. */
export type Placement = 'one-cpu' | 'any';

export interface RunResult extends LatencySummary {
  name: string;
  /** The run this is a variant of (equal to `name` for the main runs). */
  base: string;
  pattern: Pattern;
  threads: number;
  placement: Placement;
  /** Where each touch was timed: clock_gettime in native threads, or performance.now() in JS. */
  timed_in: 'native' | 'js';
  faults_per_s: number;
  /** Wall time of the run, setup (mapping, migrating to the device) and teardown included. */
  elapsed_s: number;
  /** First touches left out of the statistics. */
  warmup: number;
  /** Faults the region's servicer counted (region runs only): equals touches when each touch faulted once. */
  faults_served?: number;
  /**
   * Worker runs: the worker servicer's returns to JS per served fault (Region#servicerStats): about
   * 0 when every fault is served natively, 1 when a driver's fault hook decides each.
   */
  js_entries_per_fault?: number;
  /** p50 of each round, when the run had several: how much the rounds agree. */
  round_p50_us?: number[];
  /**
   * Fault-around runs: the median time to touch a group of N pages (one fault bringing N back, then
   * N-1 touches finding theirs) ÷ N, µs: the per-page cost.
   */
  per_page_us?: number;
  /**
   * Fault-around runs: every statistic per page, from the same groups (a group's time ÷ N): what
   * the table shows for these runs, so that a slow group reads as what it costs each page.
   * per_page.p50_us is per_page_us.
   */
  per_page?: LatencySummary;
}

/**
 * Ratios of one invocation, each run's statistic ÷ the same statistic of the same-work baseline,
 * same variant: c-baseline, a C poll thread copying each page from its own source page, as the
 * servicers copy from device pages. `fault_around_per_page` is the fault-around-16 run's
 * `per_page_us` (the median 16-page group ÷ 16) ÷ c-baseline's p50.
 */
export interface Ratios {
  worker_p50: number | null;
  worker_p99: number | null;
  native_p50: number | null;
  native_p99: number | null;
  fault_around_per_page: number | null;
  inline_p50: number | null;
  inline_p99: number | null;
  inline_js_p50: number | null;
}

/** The baselines among themselves, and inline against its own floor; same variant, same invocation. */
export interface BaselineRatios {
  /** inline ÷ c-sigbus (the in-thread C floor), p50 and p99. */
  inline_sigbus_p50: number | null;
  inline_sigbus_p99: number | null;
  /** c-sigbus ÷ c-baseline, p50: what handling in the faulting thread saves (or costs) on this host. */
  c_sigbus_p50: number | null;
  /** c-baseline-hot ÷ c-baseline, p50: what copying from distinct pages costs over one cache-hot page. */
  c_baseline_hot_p50: number | null;
  /**
   * c-fault-around-16's per_page_us ÷ c-baseline's p50: a raw C handler filling each fault's 16-page
   * block with one UFFDIO_COPY, per page. The floor of `ratios.fault_around_per_page` on this host.
   */
  c_fault_around_per_page: number | null;
  /** fault-around-16's per_page_us ÷ c-fault-around-16's: fault-around against its C floor. */
  fault_around_c_per_page: number | null;
}

/** What this host charges for everything, userfaultfd or not, measured in the same invocation. */
export interface HostFacts {
  /** A null system call (getppid), ns. */
  syscall_ns: number;
  /** Median first read of a fresh anonymous page (maps the zero page), µs, no userfaultfd. */
  plain_touch_us: number;
  /** Median first write of a fresh anonymous page (allocates and zeroes one), µs, no userfaultfd. */
  plain_write_us: number;
  /**
   * Median UFFDIO_COPY of a page, µs, from a source page user space has just written and no kernel
   * has read: the state of a device page a fault copies from after a migration. A host that
   * shadows the guest's page tables charges the kernel's first read of each such page.
   */
  copy_fresh_source_us: number;
  /** The same copies from the same source pages again, into fresh pages, µs. */
  copy_us: number;
  /** The CPU the measurement ran on. */
  cpu: number;
  /**
   * What kind of host this is, from the facts above: 'fast' when a null
   * system call costs under 200 ns (user-space work per fault shows in every ratio), 'slow' when it
   * costs more (each system call hides user-space work of about its own cost).
   */
  kind: HostKind;
  /**
   * copy_fresh_source_us − copy_us: what the host charges for the kernel's first read of a page user
   * space wrote, µs (about 0 where the host does not shadow the guest's page tables).
   */
  first_read_charge_us: number;
  /** Whether that charge is real here: over 1 µs and over half a warm copy. */
  charges_first_read: boolean;
}

/** 'fast': a null system call under 200 ns (user-space work per fault shows); 'slow': one that costs more (it hides such work). */
export type HostKind = 'fast' | 'slow';

/** Where the results came from, so that two results files can be told apart. */
export interface Provenance {
  /** The uffd-hmm package version. */
  version: string;
  /** The git commit of the package's source tree, when it is a checkout (else null). */
  commit: string | null;
}

export interface MigrationResult {
  bytes: number;
  /** region.migrate of every page, GiB/s. */
  to_device_gib_s: number;
  /** region.migrateToRam of every page, GiB/s. */
  to_ram_gib_s: number;
  /** C: memcpy into device memory + madvise(MADV_DONTNEED). */
  c_to_device_gib_s: number;
  /** C: memcpy back into the freed range. */
  c_to_ram_gib_s: number;
  to_device_ratio: number;
  to_ram_ratio: number;
  /**
   * C again, doing first what a migration that loses no concurrent write must (as migrate_vma's
   * migration entries do): UFFDIO_WRITEPROTECT over the range and a /proc/self/pagemap read, then
   * memcpy + madvise(MADV_DONTNEED). The floor of a faithful migration to the device.
   */
  c_stop_writers_to_device_gib_s: number;
  /** to_device_gib_s ÷ c_stop_writers_to_device_gib_s. */
  to_device_stop_writers_ratio: number;
}

/** One way of serving faults in the MOVE comparison: a raw C handler thread, pinned, sequential touches. */
export interface ServeResult {
  /** Touches in the statistics (warm-up left out). */
  touches: number;
  /** Faults the handler served (one per touch, or one per 16 with fault-around). */
  faults_served: number;
  /** Median touch latency, µs. */
  p50_us: number;
  p99_us: number;
  /** Mean touch latency, µs: with fault-around, the per-page cost. */
  mean_us: number;
  /** Median latency of the touches that faulted (every 16th with fault-around), µs. */
  fault_p50_us: number;
}

/**
 * UFFDIO_MOVE (Linux 6.8+) against UFFDIO_COPY for bringing device pages back, measured by raw C
 * handlers on their own numbers in the same invocation. MOVE takes the page from the device store,
 * which then holds a hole the device fills again (a first touch) when it takes a page back.
 */
export interface MoveResult {
  /** Single faults: each served with one ioctl of one page. */
  copy: ServeResult;
  move: ServeResult;
  /** move.p50_us ÷ copy.p50_us. */
  single_p50_ratio: number;
  /** Fault-around 16: each fault served with one ioctl of 16 pages. */
  copy_around16: ServeResult;
  move_around16: ServeResult;
  /** move_around16.fault_p50_us ÷ copy_around16.fault_p50_us: one MOVE of 16 pages vs one COPY of 16. */
  around16_fault_p50_ratio: number;
  /** Per page (mean touch), MOVE ÷ COPY. */
  around16_per_page_ratio: number;
  /** Bulk: `pages` pages in one ioctl each way, medians of `repeats` repetitions, µs per page. */
  bulk: {
    pages: number;
    repeats: number;
    /** Back by one UFFDIO_COPY from populated device pages. */
    copy_back_us: number;
    /** Back by one UFFDIO_MOVE. */
    move_back_us: number;
    /** To the device by memcpy into its populated pages + MADV_DONTNEED (what COPY's design pays). */
    copy_to_device_us: number;
    /** To the device by memcpy into the holes MOVE left (first touches: the refill) + MADV_DONTNEED. */
    refill_to_device_us: number;
    /** To the device by one UFFDIO_MOVE into those holes (the device store registered with the userfaultfd). */
    move_to_device_us: number;
    /** Back one ioctl per page with nothing waiting to be woken: the kernel's work per served fault. */
    single_copy_us: number;
    single_move_us: number;
    /** move_back_us ÷ copy_back_us. */
    back_ratio: number;
  };
  /** A page back and to the device again, µs per page (bulk figures). */
  round_trip_us: {
    /** COPY back, memcpy + MADV_DONTNEED to the device. */
    copy: number;
    /** MOVE back, refill (first touch + memcpy) + MADV_DONTNEED to the device. */
    move_refill: number;
    /** MOVE both ways: no allocation and no copy at all. */
    move_both: number;
  };
}

export interface MemoryResult {
  /** The run whose hot path was watched. */
  run: string;
  faults: number;
  /** Whether a full GC ran before each reading (heap numbers are then live data, not garbage). */
  gc: boolean;
  heap_used_before: number;
  heap_used_after: number;
  heap_growth: number;
  /** The worker servicer's isolate heap, which serves every fault of the run (no GC forced there). */
  worker_heap_before: number;
  worker_heap_after: number;
  worker_heap_growth: number;
  rss_before: number;
  rss_after: number;
  /** Region bytes the faults brought back into RAM: the RSS growth that is expected. */
  rss_expected_growth: number;
  /** JS-visible bytes a region allocates per page (its shared page table and protection array). */
  table_bytes_per_page: number;
  table_pages: number;
}

export interface BenchResults {
  kernel: string;
  cpus: number;
  host: HostFacts;
  runs: RunResult[];
  ratios: Ratios;
  baseline_ratios: BaselineRatios;
  /** Runs (and the ratios needing them) that could not be measured, with the reason. */
  unavailable: Record<string, string>;
  notes: string[];
  migration: MigrationResult | null;
  memory: MemoryResult | null;
  /** UFFDIO_MOVE against UFFDIO_COPY (with --move or --full); null when not measured (see unavailable.move). */
  move: MoveResult | null;
  /** Cost of region.trace(): the traced run's p50 ÷ the same servicer's untraced p50, same invocation. */
  trace_overhead: { worker_p50: number | null; native_p50: number | null };
  config: { faults: number; rounds: number; quick: boolean; full: boolean; cpu: number; date: string; node: string } & Provenance;
}
