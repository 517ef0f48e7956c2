#!/usr/bin/env node
// Churn soak (uffd-stress's bounce idea): native threads increment per-page counters while the main
// thread migrates, discards and mprotects; prints mismatches (must be 0), ops, time and ops/s.
//
// Usage: node scripts/soak.mjs [--ops N] [--servicer worker,native,inline] [--pages N] [--threads N] [--seed N]
// Build first (npx tsc -p tsconfig.json). Exits 1 on any mismatch, error or missed deadline.
// test/churn.test.ts runs the same engine (runChurn, exported below) with ~10^5 operations.
import { fileURLToPath } from 'node:url';
import { Device, NativeToucher, Region } from 'uffd-hmm';

/** A small seeded PRNG (mulberry32): a failing run is reproduced by its seed. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Runs one churn: `ops` main-thread operations on a region of `pages` pages served by `servicer`.
 *
 * Pages fall in four sets, so every expected byte is known although nothing stops the threads:
 *  - T (counters): `threads` native threads increment their own uint32 at offset 4*k of random T
 *    pages, for ever; only migrations touch T, because a discard would zero counts and a write under
 *    mprotect('read') would be a legitimate SIGSEGV. At the end the counters of thread k, summed
 *    over T, must equal the touches it reports: a lost or replayed write shows as a difference.
 *  - M (mprotect): filled by the main thread with one byte value per page; a native reader thread
 *    reads them all the time; the main thread flips ranges between 'read' and 'readwrite' (write
 *    entries become read entries) and only writes pages that are 'readwrite'.
 *  - D (discard): filled by the main thread; discard() ranges, after which they must read 0.
 *  - Z (none): flipped between 'none' and 'readwrite'; touched by nobody while 'none'.
 * Every main-thread operation on M, D, Z checks whole pages against the expected value.
 *
 * `sabotage` discards a T page mid-run: the run must then report mismatches (proves the check bites).
 */
export async function runChurn({
  servicer,
  ops,
  pages = 64,
  threads = 2,
  seed = 1,
  capacity,
  sabotage = false,
  deadlineMs = 600_000,
  progress,
} = {}) {
  const started = Date.now();
  const deadline = started + deadlineMs;
  const random = rng(seed);
  const int = (n) => Math.floor(random() * n);
  const region = Region.map({ pages, servicer });
  const ps = region.pageSize;
  // Small devices, so migrations are often partial (capacity exhausted) and pages move device to device.
  const cap = capacity ?? Math.max(4, Math.floor(pages / 3));
  const devices = [new Device({ capacity: cap, name: 'churnA' }), new Device({ capacity: cap, name: 'churnB' })];
  const errors = [];
  region.on('error', (e) => errors.push(e));
  for (const d of devices) d.on('error', (e) => errors.push(e));

  const q = Math.floor(pages / 8);
  const T = { first: 0, count: pages - 4 * q }; // half and more
  const M = { first: T.count, count: 2 * q };
  const D = { first: M.first + M.count, count: q };
  const Z = { first: D.first + D.count, count: q };
  const expected = new Uint8Array(pages); // fill value of each M, D, Z page (T pages: counters)
  const prot = new Uint8Array(pages).fill(3); // 1 read, 3 readwrite, 0 none
  const mismatches = [];
  const refs = new Map();
  const ref = (v) => {
    let b = refs.get(v);
    if (!b) refs.set(v, (b = Buffer.alloc(ps, v)));
    return b;
  };
  const view = Buffer.from(region.bytes.buffer, region.bytes.byteOffset, region.bytes.byteLength);
  const check = (page, when) => {
    const got = view.subarray(page * ps, (page + 1) * ps);
    if (got.equals(ref(expected[page]))) return;
    let at = 0;
    while (got[at] === expected[page]) at++;
    mismatches.push(`${when}: page ${page} offset ${at} is ${got[at]}, expected ${expected[page]}`);
    expected[page] = got[at]; // report each corruption once, then follow the page as it is
    got.fill(expected[page]);
  };
  const fill = (page) => {
    expected[page] = 1 + int(255);
    view.fill(expected[page], page * ps, (page + 1) * ps);
  };
  for (let p = M.first; p < pages; p++) fill(p);

  const Tpages = Array.from({ length: T.count }, (_, i) => T.first + i);
  const Mpages = Array.from({ length: M.count }, (_, i) => M.first + i);
  const writers = new NativeToucher(region, { threads, iterations: 0, mode: 'increment', pages: Tpages, seed });
  const readers = new NativeToucher(region, { threads: 1, iterations: 0, mode: 'read', pages: Mpages, seed: seed + 1 });

  const sub = (set) => {
    const first = set.first + int(set.count);
    return [first, 1 + int(Math.min(4, set.first + set.count - first))];
  };
  const counts = { migrate: 0, migrateToRam: 0, discard: 0, mprotect: 0, write: 0, check: 0, skipped: 0 };
  let done = 0;
  try {
    for (; done < ops; done++) {
      if ((done & 1023) === 0) {
        if (Date.now() > deadline) throw new Error(`churn missed its deadline after ${done} operations`);
        // Let 'error' events and driver reports reach us.
        await new Promise((r) => setImmediate(r));
        if (progress) progress(done);
      }
      if (sabotage && done === ops >> 1) region.discard(T.first, T.count);
      const x = random();
      if (x < 0.3) {
        const first = int(pages);
        const count = 1 + int(Math.min(8, pages - first));
        const w = int(3);
        region.migrate(first, count, devices[int(2)], w === 0 ? undefined : { write: w === 1 });
        counts.migrate++;
      } else if (x < 0.42) {
        const first = int(pages);
        region.migrateToRam(first, 1 + int(Math.min(8, pages - first)));
        counts.migrateToRam++;
      } else if (x < 0.5) {
        const [f, c] = sub(D);
        region.discard(f, c);
        expected.fill(0, f, f + c);
        counts.discard++;
      } else if (x < 0.6) {
        const [f, c] = sub(M);
        const bits = random() < 0.5 ? 1 : 3;
        region.mprotect(f, c, bits === 1 ? 'read' : 'readwrite');
        prot.fill(bits, f, f + c);
        counts.mprotect++;
      } else if (x < 0.65) {
        const [f, c] = sub(Z);
        const bits = random() < 0.5 ? 0 : 3;
        region.mprotect(f, c, bits === 0 ? 'none' : 'readwrite');
        prot.fill(bits, f, f + c);
        counts.mprotect++;
      } else {
        // A main-thread check of a whole page, then (mostly) a write: faults the page back if it is
        // on a device, and must land. Pages under 'none' are skipped (touching them is a SIGSEGV).
        const page = M.first + int(pages - M.first);
        if (prot[page] === 0) {
          counts.skipped++;
          continue;
        }
        check(page, `op #${done}`);
        counts.check++;
        if (x < 0.82 && prot[page] === 3) {
          fill(page);
          counts.write++;
        }
      }
    }
  } finally {
    writers.stop();
    readers.stop();
    // Touchers finish within a touch once asked; a thread stuck on an unserved fault never would.
    await Promise.all([writers.finished(30_000), readers.finished(30_000)]);
  }
  const touched = writers.counts();
  const reads = readers.counts()[0];
  // Unprotect everything, then check every byte of the region.
  region.mprotect(0, pages, 'readwrite');
  for (let p = M.first; p < pages; p++) check(p, 'end');
  const words = new Uint32Array(region.bytes.buffer, region.bytes.byteOffset, (pages * ps) / 4);
  const sums = new Array(threads).fill(0);
  for (let p = T.first; p < T.first + T.count; p++) {
    for (let k = 0; k < threads; k++) sums[k] += words[(p * ps) / 4 + k];
  }
  for (let k = 0; k < threads; k++) {
    if (sums[k] !== touched[k]) mismatches.push(`thread ${k}: counters sum to ${sums[k]}, it made ${touched[k]} increments`);
  }
  const stats = region.stats();
  await region.close();
  const used = devices.map((d) => d.used);
  for (const d of devices) await d.close();
  if (used.some((u) => u !== 0)) mismatches.push(`device pages still used after region.close(): ${used}`);
  const elapsedMs = Date.now() - started;
  return {
    servicer,
    ops: done,
    mismatches,
    errors: errors.map((e) => `${e.code ?? ''} ${e.message}`),
    touches: touched.reduce((a, b) => a + b, 0),
    reads,
    faults: stats.faults,
    counts,
    elapsedMs,
    opsPerSec: Math.round(done / (elapsedMs / 1000)),
  };
}

function parseArgs(argv) {
  const opts = { ops: 10_000_000, servicers: ['worker', 'native', 'inline'], pages: 64, threads: 2, seed: 1 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    const num = () => {
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${a} needs a positive integer, got ${v}`);
      i++;
      return n;
    };
    if (a === '--ops') opts.ops = num();
    else if (a === '--pages') opts.pages = num();
    else if (a === '--threads') opts.threads = num();
    else if (a === '--seed') opts.seed = num();
    else if (a === '--servicer' || a === '--servicers') {
      opts.servicers = String(v).split(',');
      i++;
    } else throw new Error(`unknown option ${a}`);
  }
  if (opts.pages < 16) throw new Error('--pages must be at least 16');
  return opts;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`soak: ${e.message}\n`);
    return 2;
  }
  let bad = 0;
  for (const servicer of opts.servicers) {
    const res = await runChurn({
      servicer,
      ops: opts.ops,
      pages: opts.pages,
      threads: opts.threads,
      seed: opts.seed,
      deadlineMs: 24 * 3600_000,
      progress: (n) => {
        if (n % 1_000_000 === 0 && n > 0) process.stderr.write(`  ${servicer}: ${n} operations\n`);
      },
    });
    bad += res.mismatches.length + res.errors.length;
    console.log(
      `${servicer.padEnd(7)} mismatches ${res.mismatches.length}  errors ${res.errors.length}  operations ${res.ops}  ` +
        `time ${(res.elapsedMs / 1000).toFixed(1)} s  ${res.opsPerSec} ops/s  ` +
        `(faults ${res.faults}, increments ${res.touches}, reads ${res.reads}, ${JSON.stringify(res.counts)})`,
    );
    for (const m of [...res.mismatches, ...res.errors].slice(0, 20)) console.log(`  ${m}`);
  }
  return bad === 0 ? 0 : 1;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  let code;
  try {
    code = await main();
  } catch (e) {
    process.stderr.write(`soak: ${e.stack ?? e}\n`);
    code = 1;
  }
  // Exit once output is flushed; library handles must not be what keeps the process alive.
  process.stdout.write('', () => process.exit(code));
}
