// Your own device, measured: a driver module, an access pattern (or a replayed trace) and a
// workload, run on real faults beside the same-work C baseline in the same invocation, with the
// time spent inside the driver's hooks and what they decided.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';

import { Device } from '../device.js';
import { benchCheckFailed } from '../errors.js';
import { probe } from '../probe.js';
import { Region } from '../region.js';
import { FaultTrace } from '../trace.js';
import { addon } from './addon.js';
import { benchUsage } from './errors.js';
import type { HookStats } from './hooks.js';
import { measureHost } from './host.js';
import { accessStream } from './pattern.js';
import { withPlacement } from './placement.js';
import { LatencyRecorder } from './summary.js';
import { provenance } from './provenance.js';
import type { Placement } from './types.js';
import { WORKLOAD_TRACE_CAPACITY, type DeviceTurn, type DeviceTurnContext, type HookTiming, type WorkloadOptions, type WorkloadResults, type WorkloadRun } from './workload-types.js';

export type { DeviceTurn, DeviceTurnContext, DeviceTurnDecision, HookTiming, WorkloadOptions, WorkloadResults, WorkloadRun } from './workload-types.js';

const DEFAULT_PAGES = 100_000;
const QUICK_PAGES = 5_000;
export const MAX_WORKLOAD_PAGES = 1 << 22;

let runs = 0;
/** Flush pages: one per report, a few spare for faults the servicer takes before loading the driver. */
const FLUSH_PAGES = 16;

function resolveUrl(driver: string | URL): string {
  if (driver instanceof URL) return driver.href;
  if (/^[a-z][a-z0-9+.-]*:/i.test(driver)) return driver;
  return pathToFileURL(path.resolve(driver)).href;
}

function intIn(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw benchUsage(`${name} must be a whole number from ${min} to ${max}, got ${String(v)}`);
  }
  return v;
}

function timing(ms: Float64Array | number[]): HookTiming | null {
  if (ms.length === 0) return null;
  const r = new LatencyRecorder();
  const ns = Float64Array.from(ms, (x) => x * 1e6);
  r.record(ns, 0);
  const s = r.summary();
  return { calls: ms.length, p50_us: s.p50_us, p99_us: s.p99_us, mean_us: s.mean_us, max_us: s.max_us };
}

/** The report the servicer's wrapper instance wrote (see hooks.ts). */
function readReport(file: string): HookStats {
  const buf = readFileSync(file);
  const nl = buf.indexOf(10);
  const head = JSON.parse(buf.subarray(0, nl).toString()) as { faults: number; frees: number; migrated: number; refused: number; untimed: number };
  const data = buf.subarray(nl + 1);
  const f64 = new Float64Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
  return {
    thread: 'worker',
    fault: f64.subarray(0, head.faults),
    pageFree: f64.subarray(head.faults, head.faults + head.frees),
    migrated: head.migrated,
    refused: head.refused,
    untimed: head.untimed,
  };
}

function summarize(name: string, lat: Float64Array, counted: Uint8Array, wallNs: number, served: number, refused: number, cdfs: Cdfs): WorkloadRun {
  const rec = new LatencyRecorder();
  let all = 0;
  let device = 0;
  const picked = new Float64Array(lat.length);
  for (let i = 0; i < lat.length; i++) {
    all += lat[i];
    if (counted[i]) picked[device++] = lat[i];
  }
  rec.record(picked.subarray(0, device), 0);
  const { cdf, ...stats } = rec.summary();
  cdfs.set(name, cdf);
  return {
    name,
    ...stats,
    touches: lat.length,
    device_touches: device + refused,
    faults_served: served,
    refused,
    faults_per_s: wallNs > 0 ? (device + refused) / (wallNs / 1e9) : 0,
    touch_mean_us: lat.length > 0 ? all / lat.length / 1000 : 0,
  };
}

/**
 * Runs the workload and its same-work C baseline, and returns the JSON object `uffd-hmm bench
 * --driver … --json` prints. Bad options throw a RangeError (code ERR_INVALID_ARG_VALUE).
 */
export async function runWorkload(opts: WorkloadOptions = {}): Promise<WorkloadResults> {
  return (await runWorkloadWithCdfs(opts)).results;
}

/** Each run's latency CDF, [µs, fraction] points, for the plot. */
type Cdfs = Map<string, Array<[number, number]>>;

/** {@link runWorkload}, with each run's latency CDF for `uffd-hmm bench --driver`'s plot. */
export async function runWorkloadWithCdfs(opts: WorkloadOptions = {}): Promise<{ results: WorkloadResults; cdfs: Cdfs }> {
  const cdfs: Cdfs = new Map();
  const quick = opts.quick === true;
  const servicer = opts.servicer ?? 'worker';
  if (!['worker', 'native', 'inline'].includes(servicer)) throw benchUsage(`servicer must be worker, native or inline, got '${String(servicer)}'`);
  if (opts.driver !== undefined && servicer !== 'worker') {
    throw benchUsage(`a driver needs the worker servicer: '${servicer}' applies the default policy and never calls a driver's hooks`);
  }
  const threads = opts.threads === undefined ? 1 : intIn('threads', opts.threads, 1, 64);
  const writeRatio = opts.writeRatio ?? 0;
  if (typeof writeRatio !== 'number' || !(writeRatio >= 0 && writeRatio <= 1)) throw benchUsage(`writeRatio must be from 0 to 1, got ${String(writeRatio)}`);
  const faultAround = opts.faultAround === undefined ? 1 : intIn('faultAround', opts.faultAround, 1, 512);
  const requestedPages = opts.pages === undefined ? (quick ? QUICK_PAGES : DEFAULT_PAGES) : intIn('pages', opts.pages, 1, MAX_WORKLOAD_PAGES);
  const stream = accessStream(opts.pattern ?? 'sequential', requestedPages, writeRatio);
  if (stream.pages > MAX_WORKLOAD_PAGES) throw benchUsage(`the trace names page ${stream.pages - 1}; at most ${MAX_WORKLOAD_PAGES - 1}`);
  const pages = typeof opts.pattern === 'string' && !opts.pattern.endsWith('.json') ? requestedPages : Math.max(stream.pages, opts.pages ?? 0);
  const capacity = opts.deviceCapacity === undefined ? pages : intIn('deviceCapacity', opts.deviceCapacity, 1, MAX_WORKLOAD_PAGES);
  const cpus = os.availableParallelism();
  const cpu = opts.cpu === undefined ? cpus - 1 : intIn('cpu', opts.cpu, 0, 1023);
  const placement: Placement = threads === 1 ? 'one-cpu' : 'any';

  // The driver: its own module on the main thread (deviceTurn), and the timing wrapper the
  // servicer loads in its place.
  const id = `${process.pid}-${++runs}`;
  let driverUrl: string | undefined;
  let deviceTurn: DeviceTurn | undefined;
  let wrapperUrl: string | undefined;
  let hasHooks = false;
  const reportDir = mkdtempSync(path.join(os.tmpdir(), 'uffd-hmm-bench-'));
  const reportFile = path.join(reportDir, 'hooks.bin');
  const flushName = `bench-flush-${id}`;
  if (opts.driver !== undefined) {
    driverUrl = resolveUrl(opts.driver);
    let mod: Record<string, unknown>;
    try {
      mod = (await import(driverUrl)) as Record<string, unknown>;
    } catch (e) {
      throw benchUsage(`the driver ${String(opts.driver)} does not load: ${(e as Error).message}`);
    }
    for (const hook of ['fault', 'pageFree', 'deviceTurn']) {
      if (mod[hook] !== undefined && typeof mod[hook] !== 'function') throw benchUsage(`the driver's ${hook} export is not a function`);
    }
    deviceTurn = mod.deviceTurn as DeviceTurn | undefined;
    hasHooks = mod.fault !== undefined || mod.pageFree !== undefined;
    if (hasHooks) {
      const w = new URL('./hooks.js', import.meta.url);
      w.searchParams.set('driver', driverUrl);
      w.searchParams.set('n', String(stream.order.length + pages + 16));
      w.searchParams.set('flush', flushName);
      w.searchParams.set('report', reportFile);
      wrapperUrl = w.href;
    }
  }
  const batch =
    opts.batch === undefined
      ? deviceTurn
        ? 256
        : Math.max(1, Math.ceil(stream.order.length / 20))
      : intIn('batch', opts.batch, 1, MAX_WORKLOAD_PAGES);

  const host = measureHost(cpu);
  const n = stream.order.length;
  const lat = new Float64Array(n);
  const refusedAt = new Uint8Array(n);
  const counted = new Uint8Array(n);
  const notes: string[] = [];
  const errors: Error[] = [];
  const decisions = { migrated: 0, refused: 0, hook_errors: 0, to_ram: 0, to_device: 0, not_admitted: 0 };
  const turnMs: number[] = [];
  let turnsMs = 0;
  let served = 0;
  let wallNs = 0;
  let residentAtStart = 0;
  let residentAtEnd = 0;
  let report: HookStats | undefined;
  let mainStats: HookStats | undefined;

  const region = Region.map({ pages, servicer, faultAround });
  const trace = opts.trace === undefined ? undefined : region.trace({ capacity: WORKLOAD_TRACE_CAPACITY });
  const device = new Device({ name: `bench-device-${id}`, capacity, driver: wrapperUrl ?? driverUrl });
  device.on('error', (e: Error) => errors.push(e));
  // The flush device: a fault on one of its pages makes the servicer's wrapper instance write its
  // report (see hooks.ts) before the fault is answered.
  const flushRegion = wrapperUrl ? Region.map({ pages: FLUSH_PAGES, servicer: 'worker' }) : undefined;
  const flushDevice = wrapperUrl ? new Device({ name: flushName, capacity: FLUSH_PAGES, driver: wrapperUrl }) : undefined;
  let nextFlushPage = 0;
  /**
   * Touches flush pages until the report file appears. The servicer may take a device's first
   * fault before it has loaded that device's driver (and serve it without hooks), so a ping can
   * need a second page, after a pause that lets the load settle.
   */
  const ping = async (): Promise<boolean> => {
    rmSync(reportFile, { force: true });
    while (nextFlushPage < FLUSH_PAGES) {
      void flushRegion!.bytes[nextFlushPage++ * flushRegion!.pageSize];
      if (existsSync(reportFile)) return true;
      await sleep(20);
    }
    return false;
  };
  try {
    if (flushRegion && flushDevice && flushRegion.migrate(0, FLUSH_PAGES, flushDevice) !== FLUSH_PAGES) {
      throw benchCheckFailed('the flush pages did not reach their device');
    }
    const checkedPage = (p: unknown, what: string): number => {
      if (typeof p !== 'number' || !Number.isInteger(p) || p < 0 || p >= pages) {
        throw benchUsage(`deviceTurn's ${what} names ${String(p)}, not a page from 0 to ${pages - 1}`);
      }
      return p;
    };
    const turn = (t: number, touched: Int32Array, writes: Uint8Array): void => {
      if (!deviceTurn) return;
      const ctx: DeviceTurnContext = {
        deviceName: device.name,
        capacity,
        get used() {
          return device.used;
        },
        turn: t,
        touched,
        writes,
        pages,
        onDevice: (page) => {
          const e = region.entry(page);
          return e.kind === 'device' && e.device === device;
        },
      };
      const t0 = performance.now();
      const t0Us = trace ? FaultTrace.now() : 0;
      const before = trace ? { ...decisions } : undefined;
      const d = deviceTurn(ctx);
      turnMs.push(performance.now() - t0);
      if (d) {
        for (const p of d.toRam ?? []) decisions.to_ram += region.migrateToRam(checkedPage(p, 'toRam'), 1);
        for (const p of d.toDevice ?? []) {
          const page = checkedPage(p, 'toDevice');
          if (ctx.onDevice(page)) continue;
          if (device.used >= capacity) decisions.not_admitted++;
          else decisions.to_device += region.migrate(page, 1, device);
        }
      }
      turnsMs += performance.now() - t0;
      if (trace && before) {
        trace.mark('device turn', t0Us, FaultTrace.now(), {
          turn: t,
          touched: touched.length,
          toRam: decisions.to_ram - before.to_ram,
          toDevice: decisions.to_device - before.to_device,
          notAdmitted: decisions.not_admitted - before.not_admitted,
        });
      }
    };

    // The working set's pages beyond the device's memory start in RAM, populated, so that only
    // device pages fault (a hole would fault too, for a zero page). A trip through a scratch
    // device without a driver populates them without a fault, and without calling your hooks.
    if (capacity < pages) {
      const scratch = new Device({ name: `bench-scratch-${id}`, capacity: Math.min(pages - capacity, 1 << 16) });
      try {
        for (let first = capacity; first < pages; first += scratch.capacity) {
          const count = Math.min(scratch.capacity, pages - first);
          if (region.migrate(first, count, scratch) !== count || region.migrateToRam(first, count) !== count) {
            throw benchCheckFailed(`pages ${first}..${first + count - 1} did not make the trip to the device and back`);
          }
        }
      } finally {
        await scratch.close();
      }
    }
    // The device's memory at the start: the region's first pages, as many as it holds.
    residentAtStart = region.migrate(0, Math.min(capacity, pages), device);
    turn(0, new Int32Array(0), new Uint8Array(0));
    residentAtStart = device.used;
    // Once a ping is answered with a report, the servicer has loaded the driver for both devices
    // (announced before the ping): every fault of the workload goes through the hooks.
    if (flushRegion && !(await ping())) throw benchCheckFailed('the servicer did not load the driver for the flush device');

    const seenAt = new Int32Array(pages).fill(-1);
  // Only a driver's fault hook refuses (SIGBUS); the inline servicer serves every fault through
  // SIGBUS, which the touchers must leave to it.
  const recover = servicer === 'worker' && driverUrl !== undefined;
    const { order, writes } = stream;
    withPlacement(placement, cpu, () => {
      for (let from = 0, b = 0; from < n; from += batch, b++) {
        const to = Math.min(n, from + batch);
        // A touch is a device touch when its page is on the device as the batch starts and no
        // earlier touch of this batch took it back.
        for (let i = from; i < to; i++) {
          const p = order[i];
          if (seenAt[p] === b) continue;
          seenAt[p] = b;
          const e = region.entry(p);
          if (e.kind === 'device') counted[i] = 1;
        }
        const t0 = process.hrtime.bigint();
        addon.benchTouch(region.handle, order.subarray(from, to), threads, lat.subarray(from, to), false, writes.subarray(from, to), recover ? refusedAt.subarray(from, to) : undefined);
        wallNs += Number(process.hrtime.bigint() - t0);
        turn(b + 1, order.subarray(from, to), writes.subarray(from, to));
      }
    });
    served = region.stats().faults;
    residentAtEnd = device.used;
    if (trace && opts.trace !== undefined) {
      trace.stop();
      writeFileSync(opts.trace, JSON.stringify(trace.toTraceEvents()));
    }

    if (wrapperUrl) {
      if (!(await ping())) throw benchCheckFailed('the servicer served every flush fault without its hook report');
      report = readReport(reportFile);
      // Hook errors travel as messages, posted before the flush fault was answered: let them land.
      await sleep(50);
    }
  } finally {
    await flushRegion?.close();
    await flushDevice?.close();
    await region.close();
    await device.close();
    rmSync(reportDir, { recursive: true, force: true });
  }
  if (wrapperUrl) mainStats = ((await import(wrapperUrl)) as { hookStats(): HookStats }).hookStats();

  let refused = 0;
  for (let i = 0; i < n; i++) {
    if (refusedAt[i]) {
      refused++;
      counted[i] = 0;
    }
  }
  const name = driverUrl ? path.basename(new URL(driverUrl).pathname) : `${servicer}`;
  const run = summarize(name, lat, counted, wallNs, served, refused, cdfs);

  // The baseline serves the same device touches in the same order, each from its own source page:
  // a page the workload touched on the device again (after a device turn) gets a fresh page here.
  const deviceTouches: number[] = [];
  const baseWrites: number[] = [];
  const used = new Uint8Array(pages);
  let extra = pages;
  for (let i = 0; i < n; i++) {
    if (!counted[i] && !refusedAt[i]) continue;
    const p = stream.order[i];
    deviceTouches.push(used[p] ? extra++ : p);
    used[p] = 1;
    baseWrites.push(stream.writes[i]);
  }
  let baseline: WorkloadRun;
  if (deviceTouches.length > 0) {
    const bOrder = Int32Array.from(deviceTouches);
    const bLat = new Float64Array(bOrder.length);
    let bWall = 0;
    withPlacement(placement, cpu, () => (bWall = addon.benchBaseline(extra, bOrder, threads, bLat, false, Uint8Array.from(baseWrites))));
    baseline = summarize('c-baseline', bLat, new Uint8Array(bLat.length).fill(1), bWall, bLat.length, 0, cdfs);
  } else {
    throw benchCheckFailed('the workload touched no device-resident page: nothing faulted, so there is nothing to compare');
  }

  if (report) {
    decisions.migrated = report.migrated;
    decisions.refused = report.refused;
  } else {
    decisions.migrated = served - refused;
  }
  decisions.hook_errors = errors.filter((e) => (e as Error & { code?: string }).code === 'ERR_DRIVER_HOOK').length;
  const loadError = errors.find((e) => (e as Error & { code?: string }).code === 'ERR_DRIVER_LOAD');
  if (loadError) throw loadError;
  const frees = [...(report?.pageFree ?? []), ...(mainStats?.pageFree ?? [])];

  if (report && report.fault.length + report.untimed > 0 && report.migrated + report.refused + decisions.hook_errors !== served) {
    notes.push(`the fault hook answered ${report.migrated + report.refused} of ${served} faults (${decisions.hook_errors} threw)`);
  }
  if (threads > 1) {
    notes.push(`With ${threads} threads, a page touched twice in a batch counts its first touch in stream order, which another thread's may have beaten to the fault.`);
  }
  if (faultAround === 1 && threads === 1 && served !== run.device_touches) {
    notes.push(`the servicer counted ${served} faults for ${run.device_touches} device touches`);
  }
  notes.push(
    `Latencies are of device touches: the first touch, in each batch of ${batch}, of a page on the device as the batch began` +
      `${faultAround > 1 ? ` (with fault-around ${faultAround}, many find it already back: see faults_served)` : ''}; ` +
      `touch_mean_us covers every touch.`,
    `c-baseline is a C thread (poll + read + UFFDIO_COPY) serving the same device touches in the same order, each from its own source page, ` +
      `with the same threads and placement (${placement === 'one-cpu' ? `every thread on CPU ${cpu}` : 'left to the scheduler'}).`,
    `Hook times are measured around each call with performance.now() in the thread that calls it (fault and pageFree in the servicer, ` +
      `deviceTurn and some pageFree on the main thread); fault latencies include them.`,
  );

  const results: WorkloadResults = {
    kind: 'workload',
    kernel: probe().kernel,
    cpus,
    host,
    workload: {
      driver: driverUrl ?? null,
      servicer,
      pattern: stream.description,
      pages,
      touches: n,
      threads,
      write_ratio: writeRatio,
      fault_around: faultAround,
      device_capacity: capacity,
      batch,
      placement,
    },
    runs: [run, baseline],
    ratios: { p50: run.p50_us / baseline.p50_us, p99: run.p99_us / baseline.p99_us, mean: run.mean_us / baseline.mean_us },
    hooks: {
      fault: report ? timing(report.fault) : null,
      page_free: timing(frees),
      device_turn: timing(turnMs),
    },
    decisions,
    device: {
      capacity,
      resident_at_start: residentAtStart,
      resident_at_end: residentAtEnd,
      touching_s: wallNs / 1e9,
      device_turns_s: turnsMs / 1e3,
    },
    notes,
    config: { quick, cpu, date: new Date().toISOString(), node: process.version, ...provenance() },
  };
  return { results, cdfs };
}
