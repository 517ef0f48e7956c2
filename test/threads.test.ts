// Threads: regions faulted from worker_threads and native threads at once, regions on different
// servicers side by side, and region.close() while other threads fault on it: data, never a hang.
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { expect, it } from 'vitest';
import { Device, NativeToucher, Region, type ServicerKind } from 'uffd-hmm';
import { SERVICERS, checkPages, describeUffd, fillPages, runNode } from './helpers.js';

// region.bytes is an external ArrayBuffer over the mapping: it cannot be transferred or cloned to
// another thread (cloning would read, i.e. fault in, every page). So a worker_thread faults on a
// Region it maps itself, while native threads (NativeToucher) fault on the main thread's regions.
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = pathToFileURL(createRequire(import.meta.url).resolve('uffd-hmm')).href;
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
(async () => {
  const { Device, Region } = await import(workerData.pkg);
  const out = { rounds: 0, bad: [] };
  const d = new Device({ capacity: 32 });
  for (const servicer of workerData.servicers) {
    const r = Region.map({ pages: 32, servicer });
    for (let round = 0; round < workerData.rounds; round++) {
      const v = (round * 7 + 1) & 0xff;
      r.bytes.fill(v);
      if (r.migrate(0, 32, d, { write: round % 2 === 0 }) !== 32) out.bad.push('partial migrate');
      // This worker's own faults: every page comes back with its bytes.
      for (let p = 0; p < 32; p++) {
        const at = p * r.pageSize;
        if (r.bytes[at] !== v || r.bytes[at + r.pageSize - 1] !== v) out.bad.push(servicer + ' page ' + p + ' round ' + round);
      }
      if (d.used !== 0) out.bad.push('device pages left: ' + d.used);
      out.rounds++;
    }
    await r.close();
  }
  await d.close();
  parentPort.postMessage(out);
})().catch((e) => parentPort.postMessage({ error: String(e && e.stack || e) }));
`;

function runWorker(servicers: ServicerKind[], rounds: number): Promise<{ rounds: number; bad: string[]; error?: string }> {
  return new Promise((resolve, reject) => {
    const w = new Worker(WORKER, { eval: true, workerData: { pkg, servicers, rounds } });
    const timer = setTimeout(() => {
      void w.terminate();
      reject(new Error('worker_thread did not finish within 30 s'));
    }, 30_000);
    w.once('message', (m) => {
      clearTimeout(timer);
      void w.terminate().then(() => resolve(m));
    });
    w.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** Counter sums per toucher thread equal its touch counts: no increment lost. */
function checkCounters(r: Region, counts: number[]): void {
  const words = new Uint32Array(r.bytes.buffer, r.bytes.byteOffset, r.length / 4);
  counts.forEach((n, k) => {
    let sum = 0;
    for (let p = 0; p < r.pages; p++) sum += words[(p * r.pageSize) / 4 + k];
    expect(sum, `thread ${k}`).toBe(n);
  });
}

describeUffd('threads', () => {
  it('worker_threads fault on their own regions while native threads fault on the main thread\'s, all at once', async () => {
    const main = Region.map({ pages: 64, servicer: 'native' });
    const d = new Device({ capacity: 64 });
    const t = new NativeToucher(main, { threads: 2, iterations: 0, mode: 'increment', seed: 5 });
    // Two worker_threads: one with a native servicer, one whose regions have a worker servicer of
    // their own (a worker_thread of the worker_thread).
    const workers = Promise.all([runWorker(['native', 'inline'], 150), runWorker(['worker'], 150)]);
    let migrations = 0;
    let done = false;
    void workers.finally(() => (done = true));
    const deadline = Date.now() + 30_000;
    while (!done || migrations < 200) {
      expect(Date.now()).toBeLessThan(deadline);
      main.migrate(migrations % 60, 4, d, { write: migrations % 3 !== 0 });
      if (migrations % 7 === 0) main.migrateToRam(0, 64);
      migrations++;
      if (migrations % 16 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    const results = await workers;
    t.stop();
    await t.finished(20_000);
    expect(results[0]).toEqual({ rounds: 300, bad: [] });
    expect(results[1]).toEqual({ rounds: 150, bad: [] });
    checkCounters(main, t.counts());
    expect(main.stats().faults).toBeGreaterThan(100);
    await main.close();
    await d.close();
  }, 60_000);

  it('regions on the worker, native and inline servicers, churned side by side with native threads on each', async () => {
    const d = new Device({ capacity: 3 * 32 });
    const regions = SERVICERS.map((servicer) => Region.map({ pages: 32, servicer }));
    const touchers = regions.map((r, i) => new NativeToucher(r, { threads: 2, iterations: 0, mode: 'increment', seed: 11 + i }));
    const started = Date.now();
    for (let round = 0; round < 3000; round++) {
      expect(Date.now() - started).toBeLessThan(30_000);
      const r = regions[round % 3];
      r.migrate((round * 5) % 28, 4, d, { write: round % 4 !== 0 });
      if (round % 11 === 0) r.migrateToRam(0, 32);
      if (round % 128 === 0) await new Promise((res) => setImmediate(res));
    }
    for (const t of touchers) t.stop();
    for (const t of touchers) await t.finished(20_000);
    regions.forEach((r, i) => {
      checkCounters(r, touchers[i].counts());
      expect(r.stats().faults, r.servicer).toBeGreaterThan(50);
    });
    for (const r of regions) await r.close();
    expect(d.used).toBe(0);
    await d.close();
  }, 60_000);

  it.each(SERVICERS)('%s: region.close() while native threads fault on it: they finish with data, never hang or crash', async (servicer) => {
    // In a child process: a library bug here kills the process (it once did, with SIGBUS), and
    // that must show as this test failing with the signal, not as a dead test runner.
    const code = `
      import { Device, NativeToucher, Region } from 'uffd-hmm';
      let reads = 0, faultsBeforeClose = 0;
      // 150 rounds: the inline servicer's close race (a fault between the SIGBUS handler letting go
      // of the region and the unregister) killed the process within that many in most runs.
      for (let round = 0; round < 150; round++) {
        const r = Region.map({ pages: 64, servicer: '${servicer}' });
        const d = new Device({ capacity: 64 });
        r.bytes.fill(round + 1);
        r.migrate(0, 64, d, { write: round % 2 === 0 });
        // Readers and a writer that fault on every page, in flight when the region goes away.
        const readers = new NativeToucher(r, { threads: 3, iterations: 0, mode: 'read', seed: round + 1 });
        const writers = new NativeToucher(r, { threads: 1, iterations: 0, mode: 'increment', seed: round + 2 });
        // Close at varying moments: as the threads start, and with faults well under way.
        await new Promise((res) => setTimeout(res, round % 4));
        faultsBeforeClose += r.stats().faults;
        await r.close();
        if (r.bytes.length !== 0 || d.used !== 0) throw new Error('close left bytes or device pages behind');
        // After close the touchers see plain memory (their reference keeps the mapping alive):
        // they stop when asked, within the deadline; a thread stuck on an unserved fault never would.
        readers.stop();
        writers.stop();
        await readers.finished(10_000);
        await writers.finished(10_000);
        // A thread asked to stop before it first ran makes no touch: count over all rounds.
        reads += readers.counts().reduce((a, b) => a + b, 0);
        await d.close();
      }
      console.log(JSON.stringify({ reads, faultsBeforeClose }));
    `;
    const res = await runNode(['--input-type=module', '-e', code], { cwd: repo, timeoutMs: 40_000 });
    expect({ code: res.code, signal: res.signal, timedOut: res.timedOut }, res.out).toEqual({ code: 0, signal: null, timedOut: false });
    const { reads, faultsBeforeClose } = JSON.parse(res.out.trim().split('\n').pop()!) as { reads: number; faultsBeforeClose: number };
    expect(faultsBeforeClose).toBeGreaterThan(150);
    expect(reads).toBeGreaterThan(1000);
  }, 60_000);

  it('a region closed mid-run leaves other regions of the same servicer serving', async () => {
    const keep = Region.map({ pages: 16 });
    const gone = Region.map({ pages: 16 });
    const d = new Device({ capacity: 32 });
    fillPages(keep, 0, 16, 3);
    fillPages(gone, 0, 16, 4);
    keep.migrate(0, 16, d);
    gone.migrate(0, 16, d);
    const t = new NativeToucher(gone, { threads: 2, iterations: 0, mode: 'read' });
    await gone.close();
    t.stop();
    await t.finished(10_000);
    expect(checkPages(keep, 0, 16, 3)).toBeNull();
    await keep.close();
    await d.close();
  });
});
