// JS entries per served fault under the worker servicer: its native poller serves every fault that
// needs no driver decision without handing control back to JS, and returns to JS once per fault a
// driver's fault hook decides. Counted by the poller itself (Region#servicerStats().jsEntries).
import { performance } from 'node:perf_hooks';
import { afterEach, expect, it } from 'vitest';
import { Device, NativeToucher, Region } from 'uffd-hmm';
import { describeUffd } from './helpers.js';

const hook = new URL('./fixtures/semantics/drivers/migrate-all.mjs', import.meta.url);
/** The worker's time slice (lib/servicer/worker.ts passes 250 ms to pollerWait). */
const SLICE_MS = 250;
const open: Array<Region | Device> = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close();
});

/** Migrates every page of a fresh region to a fresh device, then lets a native thread read pages at random. */
async function run(servicer: 'worker' | 'native' | 'inline', pages: number, driver?: URL) {
  const region = Region.map({ pages, servicer });
  const device = new Device({ capacity: pages, ...(driver ? { driver } : {}) });
  open.push(region, device);
  region.bytes.fill(1);
  region.migrate(0, pages, device);
  const before = { entries: region.servicerStats().jsEntries, back: region.stats().migratedBack };
  const t0 = performance.now();
  const toucher = new NativeToucher(region, { iterations: 4 * pages, mode: 'read', seed: 3 });
  await toucher.finished(60_000);
  return {
    faults: region.stats().migratedBack - before.back,
    entries: region.servicerStats().jsEntries - before.entries,
    elapsedMs: performance.now() - t0,
  };
}

describeUffd('worker servicer: JS entries per served fault', () => {
  it('0 without a fault hook: every fault is served in native code, JS runs only at the end of a time slice', async () => {
    const r = await run('worker', 2000);
    expect(r.faults).toBeGreaterThan(1800);
    expect(r.entries).toBeLessThanOrEqual(Math.ceil(r.elapsedMs / SLICE_MS) + 2);
    expect(r.entries / r.faults).toBeLessThan(0.02);
  });

  it('1 with a fault hook: each fault the driver decides is one return to JS', async () => {
    const r = await run('worker', 300, hook);
    expect(r.faults).toBeGreaterThan(250);
    expect(r.entries).toBeGreaterThanOrEqual(r.faults);
    expect(r.entries).toBeLessThanOrEqual(r.faults + Math.ceil(r.elapsedMs / SLICE_MS) + 2);
  });

  it.each(['native', 'inline'] as const)('0 under the %s servicer, which has no JS', async (servicer) => {
    const r = await run(servicer, 500);
    expect(r.faults).toBeGreaterThan(450);
    expect(r.entries).toBe(0);
  });
});
