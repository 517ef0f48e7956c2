#!/usr/bin/env node
// The teardown paths under fire, for scripts/asan.sh (also runs on a normal build): region.close
// and device.close while native threads fault, a guard taking over from a terminated worker
// servicer, device removal under region.fork children, many children at once, and worker threads
// that end with faults in flight. Each scenario checks its bytes; exits 1 on any failure.
//
// Usage: node scripts/teardown-scenarios.mjs [--rounds N]
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Device, NativeToucher, Region } from 'uffd-hmm';
import { WorkerServicer } from '../dist/servicer/host.js';
import { forkChildren } from './fork-children.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const i = process.argv.indexOf('--rounds');
const rounds = i > 0 ? Number(process.argv[i + 1]) : 10;
const failures = [];

function fill(r, seed) {
  for (let p = 0; p < r.pages; p++) r.bytes.fill((p * 13 + seed) & 0xff, p * r.pageSize, (p + 1) * r.pageSize);
}

function check(r, seed, what) {
  for (let p = 0; p < r.pages; p++) {
    const want = (p * 13 + seed) & 0xff;
    if (r.bytes[p * r.pageSize] !== want || r.bytes[(p + 1) * r.pageSize - 1] !== want) {
      failures.push(`${what}: page ${p} reads ${r.bytes[p * r.pageSize]}, not ${want}`);
      return;
    }
  }
}

async function scenario(name, fn) {
  const started = Date.now();
  try {
    await fn();
    console.log(`${name}: done in ${Date.now() - started} ms`);
  } catch (e) {
    failures.push(`${name}: ${e.stack ?? e}`);
  }
}

await scenario('region.close and device.close while native threads fault', async () => {
  for (let k = 0; k < rounds; k++) {
    for (const servicer of ['worker', 'native', 'inline']) {
      const r = Region.map({ pages: 64, servicer });
      const d = new Device({ capacity: 64 });
      fill(r, k);
      r.migrate(0, 64, d);
      const t = new NativeToucher(r, { threads: 2, iterations: 20_000, mode: 'read', seed: k + 1 });
      r.migrate(0, 64, d);
      if (k % 2) {
        await d.close(); // eviction under fire: every byte comes back
        check(r, k, `${servicer} eviction`);
        await r.close();
      } else {
        await r.close(); // munmap under fire: the touchers see plain memory
        await d.close();
      }
      await t.finished(20_000);
      if (d.used !== 0) failures.push(`${servicer}: device.used ${d.used} after close`);
    }
  }
});

await scenario('a guard takes over from a terminated worker servicer', async () => {
  for (let k = 0; k < Math.max(1, rounds / 2); k++) {
    const r = Region.map({ pages: 128, servicer: 'worker' });
    const d = new Device({ capacity: 128 });
    r.on('error', () => {});
    fill(r, 40 + k);
    r.migrate(0, 128, d);
    const t = new NativeToucher(r, { threads: 2, iterations: 20_000, mode: 'read' });
    await WorkerServicer.get().terminateForTest();
    await t.finished(20_000);
    check(r, 40 + k, 'guard');
    await r.close();
    await d.close();
  }
});

await scenario('device.close under region.fork children', async () => {
  for (let k = 0; k < rounds; k++) {
    for (const servicer of ['worker', 'native']) {
      const r = Region.map({ pages: 8, servicer });
      const d = new Device({ capacity: 8 });
      fill(r, 80 + k);
      r.migrate(0, 8, d);
      const want = (3 * 13 + 80 + k) & 0xff;
      const child = r.fork([{ op: 'sleep', ms: 20 }, { op: 'read', page: 3, offset: 0 }], { timeoutMs: 10_000 });
      await d.close();
      const res = await child;
      if (res.exitCode !== 0 || res.results[1] !== want) failures.push(`fork ${servicer}: ${JSON.stringify(res)}`);
      if (d.used !== 0) failures.push(`fork ${servicer}: device.used ${d.used} after close`);
      await r.close();
    }
  }
});

await scenario('32 concurrent region.fork children', async () => {
  for (const servicer of ['worker', 'native']) {
    const res = await forkChildren({ servicer, children: 32, timeoutMs: 30_000 });
    for (const b of res.bad) failures.push(`children ${servicer}: ${b}`);
  }
});

await scenario('worker threads that end with faults in flight', async () => {
  const fixture = path.join(root, 'test', 'fixtures', 'worker-env-end.mjs');
  for (let k = 0; k < Math.max(1, rounds / 2); k++) {
    for (const servicer of ['worker', 'native', 'inline']) {
      const res = spawnSync(process.execPath, [fixture, servicer], { timeout: 30_000, killSignal: 'SIGKILL', encoding: 'utf8' });
      if (res.status !== 0) failures.push(`worker thread ${servicer}: exit ${res.status} ${res.signal ?? ''} ${res.stderr.slice(-300)}`);
    }
  }
});

for (const f of failures) console.log(`FAILED ${f}`);
process.exit(failures.length ? 1 : 0);
