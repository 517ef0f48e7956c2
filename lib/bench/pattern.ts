// A workload's access stream: which page each successive CPU touch hits, and whether it writes.
// Generated from a named pattern (seeded, so every run and its baseline replay the same stream) or
// read from a trace file captured elsewhere.
import { readFileSync } from 'node:fs';

import { benchUsage } from './errors.js';
import { accessOrder } from './order.js';

export interface AccessStream {
  /** Page of each touch, in order. */
  order: Int32Array;
  /** 1 where the touch writes, 0 where it reads. */
  writes: Uint8Array;
  /** Pages the stream spans: 1 + its highest page. */
  pages: number;
  /** How the stream was made, for the report: 'random', 'hot:10', 'trace.json (12 touches)'. */
  description: string;
}

/** A trace entry: a page index (a read, unless the write ratio says otherwise) or a record. */
export type TraceEntry =
  | number
  | {
      /** The page touched, an index into the region. */
      page: number;
      /** The touch writes; absent: drawn by the write ratio. */
      write?: boolean;
    };

/** The largest page a trace may name: regions are limited to 2^31 − 1 pages by their Int32 orders. */
const MAX_PAGE = 0x7fffffff;

/** xorshift32: reproducible numbers without a dependency; `next()` is uniform in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

/**
 * Pages 0..pages−1 touched once each, K apart: 0, K, 2K, … then 1, K+1, … (a column walk over a
 * row-major matrix of K columns).
 */
function strided(pages: number, k: number): Int32Array {
  const order = new Int32Array(pages);
  let i = 0;
  for (let s = 0; s < k && s < pages; s++) for (let p = s; p < pages; p += k) order[i++] = p;
  return order;
}

/**
 * `pages` touches, 90% of them (seeded, at random) on a hot set of P% of the pages (the first
 * ones), the rest anywhere: a working set with a hot core, where a page is touched again and again.
 */
function hot(pages: number, percent: number, seed: number): Int32Array {
  const hotPages = Math.max(1, Math.round((pages * percent) / 100));
  const next = rng(seed);
  const order = new Int32Array(pages);
  for (let i = 0; i < pages; i++) {
    order[i] = next() < 0.9 ? Math.floor(next() * hotPages) : Math.floor(next() * pages);
  }
  return order;
}

function writesFor(n: number, writeRatio: number, seed: number): Uint8Array {
  const writes = new Uint8Array(n);
  if (writeRatio <= 0) return writes;
  const next = rng(seed ^ 0x5bd1e995);
  for (let i = 0; i < n; i++) writes[i] = next() < writeRatio ? 1 : 0;
  return writes;
}

/** A trace, from a parsed JSON value: every entry checked, the first bad one named. */
export function fromTrace(entries: unknown, writeRatio: number, source: string): AccessStream {
  if (!Array.isArray(entries) || entries.length === 0) {
    throw benchUsage(`${source}: a trace is a non-empty JSON list of page indices or {page, write} records`);
  }
  const n = entries.length;
  const order = new Int32Array(n);
  const drawn = writesFor(n, writeRatio, 0x2545f491);
  const writes = new Uint8Array(n);
  let max = 0;
  for (let i = 0; i < n; i++) {
    const e = entries[i] as unknown;
    const record = typeof e === 'object' && e !== null ? (e as { page?: unknown; write?: unknown }) : undefined;
    const page = record ? record.page : e;
    if (typeof page !== 'number' || !Number.isInteger(page) || page < 0 || page > MAX_PAGE) {
      throw benchUsage(`${source}: entry ${i} is not a page index from 0 to ${MAX_PAGE} or a {page, write} record: ${JSON.stringify(e)}`);
    }
    if (record && record.write !== undefined && typeof record.write !== 'boolean') {
      throw benchUsage(`${source}: entry ${i}: write must be true or false, got ${JSON.stringify(record.write)}`);
    }
    order[i] = page;
    // A record that says whether it writes is replayed as it says; the write ratio draws the rest.
    writes[i] = record && record.write !== undefined ? Number(record.write) : drawn[i];
    if (page > max) max = page;
  }
  return { order, writes, pages: max + 1, description: `${source} (${n} touches)` };
}

/**
 * The stream for a pattern spec: 'sequential', 'random', 'strided:K', 'hot:P', a path ending in
 * .json (a trace file), or a trace given as a list. `pages` sizes the generated patterns (a trace
 * brings its own); `writeRatio` is the share of touches that write, drawn per touch (seeded).
 */
export function accessStream(pattern: string | readonly TraceEntry[], pages: number, writeRatio: number): AccessStream {
  if (typeof pattern !== 'string') return fromTrace(pattern, writeRatio, 'the trace');
  if (pattern.endsWith('.json')) {
    let text: string;
    try {
      text = readFileSync(pattern, 'utf8');
    } catch (e) {
      throw benchUsage(`cannot read the trace file '${pattern}': ${(e as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      throw benchUsage(`${pattern} is not valid JSON: ${(e as Error).message}`);
    }
    return fromTrace(parsed, writeRatio, pattern);
  }
  const [name, arg, extra] = pattern.split(':');
  const number = (what: string, min: number, max: number): number => {
    const v = Number(arg);
    if (arg === undefined || extra !== undefined || !/^\d+$/.test(arg) || v < min || v > max) {
      throw benchUsage(`pattern ${name}:${what} needs a whole number ${what} from ${min} to ${max}, got '${pattern}'`);
    }
    return v;
  };
  let order: Int32Array;
  if ((name === 'sequential' || name === 'random') && arg === undefined) order = accessOrder(name, pages);
  else if (name === 'strided') order = strided(pages, number('K', 1, Math.max(1, pages)));
  else if (name === 'hot') order = hot(pages, number('P', 1, 100), 0x9e3779b9);
  else {
    throw benchUsage(`unknown pattern '${pattern}': use sequential, random, strided:K, hot:P or a trace file ending in .json`);
  }
  return { order, writes: writesFor(order.length, writeRatio, 0x9e3779b9), pages, description: pattern };
}
