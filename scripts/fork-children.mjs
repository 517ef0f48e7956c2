#!/usr/bin/env node
// Concurrent region.fork children on shared device pages: N children each checksum the same 64
// device-resident pages at once; every touch is a real fault in a child, served by the parent, and
// each page migrates back for every process that maps it. The cost should grow about linearly in N.
//
// Usage: node scripts/fork-children.mjs [--children 1,2,4,8,32] [--servicer worker,native] [--pages 64]
//                                        [--repeat 3] [--max-ratio 3]
// Build first (npm run build). Prints the best wall time of `repeat` runs per N and its ratio to
// N x the time of one child; exits 1 if a child fails, is killed or reads a wrong checksum, or if
// N children cost more than max-ratio x N x one child (the bound of linear cost). Timings taken on
// a loaded machine are not figures to quote.
// test/fork-children.test.ts runs the same engine (forkChildren, exported below) for correctness.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Device, Region } from 'uffd-hmm';

function crc32(data) {
  let crc = ~0;
  for (let i = 0; i < data.length; i++) {
    crc ^= data[i];
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return ~crc >>> 0;
}

/**
 * Maps `pages` pages, fills them, migrates them to a device, then forks `children` children at once,
 * each checksumming every page. Resolves to { ms, results, expected, used, bad } where bad lists
 * what went wrong (a child that did not exit 0, a wrong checksum, device pages left in use).
 */
export async function forkChildren({ servicer, children, pages = 64, timeoutMs = 60_000 }) {
  const r = Region.map({ pages, servicer });
  const d = new Device({ capacity: pages });
  const bad = [];
  try {
    for (let p = 0; p < pages; p++) r.bytes.fill((p * 37 + 11) & 0xff, p * r.pageSize, (p + 1) * r.pageSize);
    const expected = crc32(r.bytes);
    r.migrate(0, pages, d);
    const started = performance.now();
    const results = await Promise.all(
      Array.from({ length: children }, () => r.fork([{ op: 'checksum', first: 0, count: pages }], { timeoutMs })),
    );
    const ms = performance.now() - started;
    results.forEach((res, i) => {
      if (res.exitCode !== 0 || res.signal !== null) bad.push(`child ${i}: exit ${res.exitCode} signal ${res.signal}`);
      else if (res.results[0] !== expected) bad.push(`child ${i}: checksum ${res.results[0]} != ${expected}`);
    });
    if (crc32(r.bytes) !== expected) bad.push('parent: checksum changed');
    await r.close();
    if (d.used !== 0) bad.push(`device.used ${d.used} after the region closed`);
    return { ms, results, expected, bad };
  } finally {
    await r.close();
    await d.close();
  }
}

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const counts = arg('children', '1,2,4,8,32').split(',').map(Number);
  const pages = Number(arg('pages', 64));
  const repeat = Number(arg('repeat', 3));
  const maxRatio = Number(arg('max-ratio', 3));
  let failed = false;
  for (const servicer of arg('servicer', 'worker,native').split(',')) {
    let one;
    for (const n of counts) {
      const times = [];
      for (let i = 0; i < repeat; i++) {
        const res = await forkChildren({ servicer, children: n, pages });
        times.push(res.ms);
        if (res.bad.length) {
          failed = true;
          console.log(`${servicer} ${n} children: ${res.bad.slice(0, 4).join('; ')}`);
        }
      }
      const best = Math.min(...times);
      if (n === 1) one = best;
      const ratio = one ? best / (n * one) : 0;
      const over = ratio > maxRatio;
      if (over) failed = true;
      console.log(
        `${servicer}: ${String(n).padStart(2)} children ${best.toFixed(1).padStart(8)} ms best of ${repeat}` +
          (one ? ` (${ratio.toFixed(2)} x N x one child${over ? `: over the bound of ${maxRatio}` : ''})` : ''),
      );
    }
  }
  process.exit(failed ? 1 : 0);
}
