// Memory cost of the library: main-thread JS heap and RSS around a fault run (the hot path must
// not allocate), and the JS-visible bytes a region's page table costs per page.
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import { Region } from '../region.js';
import { WorkerServicer } from '../servicer/host.js';

/**
 * A full-GC function, so heap readings count live objects rather than garbage waiting for
 * collection. Node exposes one only under --expose-gc; the flag can be set at run time and the
 * function picked up from a fresh context. Undefined if that ever stops working.
 */
const gc: (() => void) | undefined = (() => {
  if (typeof globalThis.gc === 'function') return globalThis.gc as () => void;
  try {
    setFlagsFromString('--expose-gc');
    const fn = runInNewContext('gc') as unknown;
    return typeof fn === 'function' ? (fn as () => void) : undefined;
  } catch {
    return undefined;
  }
})();

export interface MemoryReading {
  heapUsed: number;
  rss: number;
  /** The worker servicer's isolate heap (its hot path is what must not allocate). */
  workerHeapUsed: number;
}

export function canCollect(): boolean {
  return gc !== undefined;
}

/**
 * Collects garbage, then lets the event loop turn so array-buffer memory freed by the GC is
 * really released (V8 frees backing stores after the collection), then collects again.
 */
async function settle(): Promise<void> {
  if (!gc) return;
  gc();
  await sleep(20);
  gc();
}

export async function readMemory(): Promise<MemoryReading> {
  await settle();
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, rss: m.rss, workerHeapUsed: await WorkerServicer.get().heapUsed() };
}

/**
 * Bytes per page that mapping a region of `pages` pages allocates in JS-visible memory (array
 * buffers: the shared page table and per-page protection), measured by mapping one.
 */
export async function tableBytesPerPage(pages: number): Promise<number> {
  await settle();
  const before = process.memoryUsage();
  const region = Region.map({ pages, servicer: 'native' });
  const after = process.memoryUsage();
  await region.close();
  const grown = after.arrayBuffers - before.arrayBuffers + (after.heapUsed - before.heapUsed);
  return Math.max(0, grown) / pages;
}
