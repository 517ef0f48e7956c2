// Freed device memory goes back to the kernel: RSS follows device.used, not the most the device
// ever held (device_private pages freed by dmirror go back to its free list, and a real device's
// memory is not process RSS at all). The store keeps a few MiB of recently freed pages warm.
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { Device, NativeToucher, Region } from 'uffd-hmm';
import { DEV_RELEASED } from '../dist/layout.js';
import { SERVICERS, describeUffd, expectNoLostIncrement, runNode } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/device-rss.mjs', import.meta.url));

describeUffd('device memory after it is freed', () => {
  it.each(SERVICERS)('%s servicer: 64 MiB faulted back or migrated back leaves RSS where it was', async (servicer) => {
    const o = await runNode([fixture, servicer], { timeoutMs: 60_000 });
    const line = o.stdout.split('\n').find((l) => l.startsWith('{'));
    expect({ code: o.code, timedOut: o.timedOut, line: line !== undefined }, o.out).toEqual({ code: 0, timedOut: false, line: true });
    const r = JSON.parse(line!) as Record<string, number>;
    expect(r).toMatchObject({ usedOnDevice: 16384, usedAfterFaults: 0, usedAfterMigrateToRam: 0, badAfterFaults: 0, badAfterMigrateToRam: 0 });
    // Migrated, the data moved from the region to the device: about the same RSS.
    expect(r.onDevice - r.base, JSON.stringify(r)).toBeLessThan(16);
    // Freed again, the device holds at most its warm reserve (4 MiB) and a batch (1 MiB); before,
    // RSS stayed 64 MiB higher until device.close().
    expect(r.afterFaults - r.base, JSON.stringify(r)).toBeLessThan(16);
    expect(r.afterMigrateToRam - r.base, JSON.stringify(r)).toBeLessThan(16);
  }, 90_000);

  it('loses no write while faults free pages the device gives back and migrations take them again', async () => {
    const pages = 4096;
    const r = Region.map({ pages, servicer: 'native' });
    const d = new Device({ capacity: pages });
    const threads = 2;
    const t = new NativeToucher(r, { threads, iterations: 0, mode: 'increment', seed: 11 });
    let releases = 0;
    let released = Atomics.load(d.shared, DEV_RELEASED);
    const deadline = Date.now() + 30_000;
    try {
      for (let round = 0; round < 150 || releases < 10; round++) {
        expect(Date.now()).toBeLessThan(deadline);
        const first = (round * 397) % pages;
        r.migrate(first, Math.min(512 + ((round * 131) % 1536), pages - first), d, { write: round % 3 !== 0 });
        if (round % 4 === 0) r.migrateToRam(0, pages);
        const now = Atomics.load(d.shared, DEV_RELEASED);
        if (now > released) releases++;
        released = now;
        // Pages go back only after sitting free for a whole release tick (250 ms): pause for two.
        if (round % 16 === 0) await new Promise((res) => setTimeout(res, 600));
      }
    } finally {
      t.stop();
      await t.finished(30_000);
    }
    r.migrateToRam(0, pages);
    expectNoLostIncrement(r, pages, t.counts());
    expect(releases).toBeGreaterThanOrEqual(10);
    expect(d.used).toBe(0);
    await r.close();
    await d.close();
  }, 60_000);
});
