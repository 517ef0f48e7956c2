// The driver module the benchmark hands the servicer instead of the user's: it imports the user's
// module (its URL in this module's query string) and exports the same hooks, each timed with
// performance.now() into preallocated arrays (no allocation per call), decisions counted. The
// worker's instance reports once, when a fault or free of the flush device (named in the query
// string) arrives after the run, into the report file; the main thread's instance is read
// directly (hookStats).
import { writeFileSync } from 'node:fs';
import { isMainThread } from 'node:worker_threads';

import type { Driver, FaultContext, PageFreeContext } from '../driver.js';

const params = new URL(import.meta.url).searchParams;
const user = (await import(params.get('driver')!)) as Driver;
const capacity = Number(params.get('n'));
const flushDevice = params.get('flush')!;
const reportFile = params.get('report')!;

/** What one module instance saw: times in ms (performance.now), counts. */
export interface HookStats {
  thread: 'worker' | 'main';
  fault: Float64Array;
  pageFree: Float64Array;
  migrated: number;
  refused: number;
  /** Calls past the preallocated capacity: counted, not timed. */
  untimed: number;
}

const faultMs = new Float64Array(capacity);
const freeMs = new Float64Array(capacity);
let faults = 0;
let frees = 0;
let migrated = 0;
let refused = 0;
let untimed = 0;

/** This instance's tallies (copies of the filled part). */
export function hookStats(): HookStats {
  return {
    thread: isMainThread ? 'main' : 'worker',
    fault: faultMs.slice(0, faults),
    pageFree: freeMs.slice(0, frees),
    migrated,
    refused,
    untimed,
  };
}

/**
 * Writes this instance's tallies to the report file, synchronously: the flush fault that asks for
 * it is not answered before the file is complete, so the main thread reads it as soon as its
 * access returns, with no message to wait for.
 */
function flush(): void {
  const s = hookStats();
  const head = Buffer.from(JSON.stringify({ faults: s.fault.length, frees: s.pageFree.length, migrated, refused, untimed }) + '\n');
  writeFileSync(reportFile, Buffer.concat([head, Buffer.from(s.fault.buffer), Buffer.from(s.pageFree.buffer)]));
}

const userFault = user.fault?.bind(user);
const userFree = user.pageFree?.bind(user);

function timedFault(ctx: FaultContext): ReturnType<NonNullable<Driver['fault']>> {
  if (ctx.deviceName === flushDevice) {
    if (!isMainThread) flush();
    return 'migrate';
  }
  const t0 = performance.now();
  try {
    const d = userFault!(ctx);
    if (d === 'sigbus') refused++;
    else migrated++;
    return d;
  } finally {
    if (faults < capacity) faultMs[faults++] = performance.now() - t0;
    else untimed++;
  }
}

function timedFree(ctx: PageFreeContext): void {
  if (ctx.deviceName === flushDevice) {
    // Without a fault hook the flush device's free is the signal; with one, its fault was.
    if (!isMainThread && userFault === undefined) flush();
    return;
  }
  const t0 = performance.now();
  try {
    userFree!(ctx);
  } finally {
    if (frees < capacity) freeMs[frees++] = performance.now() - t0;
    else untimed++;
  }
}

// Exported only when the user's module has them: a hook the servicer sees is a hook it calls, and
// calling one the user never wrote would add its cost to every fault.
export const fault = userFault ? timedFault : undefined;
export const pageFree = userFree ? timedFree : undefined;
