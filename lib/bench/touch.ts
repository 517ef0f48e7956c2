// One measured run: produce the faults the run definition asks for, in the given order, and
// return each touch's latency (ns) as the faulting thread saw it, plus the wall time of it all.
import { Device } from '../device.js';
import { benchCheckFailed } from '../errors.js';
import { native } from '../native.js';
import { Region } from '../region.js';
import { addon } from './addon.js';
import { withPlacement } from './placement.js';
import type { RunDef, Variant } from './runs.js';

export interface Touched {
  latencies: Float64Array;
  wallNs: number;
  /** Faults the region's servicer counted, for region runs. */
  served?: number;
  /** The worker servicer's returns to JS on account of the region's faults (Region#servicerStats). */
  jsEntries?: number;
}

export interface TouchHooks {
  /** Called between chunks with the fraction of touches done. */
  progress(fraction: number): void;
  /** Called with the region mapped and its pages on the device, just before and after the touches. */
  beforeTouches?(region: Region): Promise<void>;
  afterTouches?(region: Region): Promise<void>;
}

/** Chunks per region run: the progress bar moves between them; the touchers restart at each. */
const CHUNKS = 20;
/** JS touches between progress updates. */
const JS_STRIDE = 4096;

function hr(): bigint {
  return process.hrtime.bigint();
}

export async function touchRun(def: RunDef, v: Variant, order: Int32Array, cpu: number, hooks: TouchHooks): Promise<Touched> {
  const n = order.length;
  const latencies = new Float64Array(n);
  if (def.kind !== 'region') {
    // The C runs map, serve and unmap inside one call: they cannot be split without changing what
    // they measure. The handlers' runs time their touches themselves: their setup writes a source.
    const t0 = hr();
    let wallNs = 0;
    withPlacement(v.placement, cpu, () => {
      if (def.kind === 'c-baseline') wallNs = addon.benchBaseline(n, order, v.threads, latencies, def.hot === true, undefined, def.faultAround);
      else if (def.kind === 'c-sigbus') wallNs = addon.benchSigbus(n, order, v.threads, latencies);
      else addon.benchPlainTouch(n, order, v.threads, latencies, def.write === true);
    });
    hooks.progress(1);
    return { latencies, wallNs: def.kind === 'plain' ? Number(hr() - t0) : wallNs };
  }

  const region = Region.map({ pages: n, servicer: def.servicer, faultAround: def.faultAround });
  const device = new Device({ name: `bench-${def.name}`, capacity: n });
  try {
    // The ring holds every fault of the run, so tracing costs its recording only, never an overflow path.
    const trace = def.trace ? region.trace({ capacity: n }) : undefined;
    const moved = region.migrate(0, n, device);
    if (moved !== n) throw benchCheckFailed(`only ${moved} of ${n} pages reached the device`);
    await hooks.beforeTouches?.(region);
    let wall = 0n;
    // Placed once for all chunks: moving threads between chunks would add migrations of its own.
    withPlacement(v.placement, cpu, () => {
      if (def.toucher === 'native') {
        for (let c = 0; c < CHUNKS; c++) {
          const from = Math.floor((c * n) / CHUNKS);
          const to = Math.floor(((c + 1) * n) / CHUNKS);
          if (to === from) continue;
          const t0 = hr();
          native.benchTouch(region.handle, order.subarray(from, to), v.threads, latencies.subarray(from, to), false);
          wall += hr() - t0;
          hooks.progress(to / n);
        }
      } else {
        for (let from = 0; from < n; from += JS_STRIDE) {
          const to = Math.min(n, from + JS_STRIDE);
          const t0 = hr();
          jsTouch(region, order, latencies, from, to);
          wall += hr() - t0;
          hooks.progress(to / n);
        }
      }
    });
    await hooks.afterTouches?.(region);
    if (trace && trace.recorded < n) throw benchCheckFailed(`the trace recorded ${trace.recorded} of ${n} faults`);
    return { latencies, wallNs: Number(wall), served: region.stats().faults, jsEntries: region.servicerStats().jsEntries };
  } finally {
    await region.close();
    await device.close();
  }
}

let sink = 0;
/**
 * JS on the main thread reads one byte per page, timing each read with performance.now(): the
 * latency a JS program sees, including the timer calls (tens of ns), not a native measurement.
 */
function jsTouch(region: Region, order: Int32Array, out: Float64Array, from: number, to: number): void {
  const bytes = region.bytes;
  const ps = region.pageSize;
  let s = 0;
  for (let i = from; i < to; i++) {
    const at = order[i] * ps;
    const t0 = performance.now();
    s += bytes[at];
    out[i] = (performance.now() - t0) * 1e6;
  }
  // Keeps the reads observable, so no compiler may drop them.
  sink ^= s;
}

