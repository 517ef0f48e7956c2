// free_devpage runs once for every device page freed, whoever freed it: the driver's pageFree is
// called exactly once per freed page under every servicer and on every path (a fault, migrateToRam,
// discard, region.close, device.close, a fork child dropping its references, a zap by someone else).
import { afterEach, expect, it } from 'vitest';
import { Device, Region } from 'uffd-hmm';
import { SERVICERS, describeUffd } from './helpers.js';
import { native } from '../dist/native.js';

const driver = new URL('./fixtures/semantics/drivers/recording.mjs', import.meta.url);
const CHANNEL = 'uffd-hmm-semantics-recording-driver';

let seq = 0;
const channels: BroadcastChannel[] = [];
afterEach(() => {
  for (const c of channels.splice(0)) c.close();
});

/** A device with the recording driver, and the pfns its pageFree was called with, in order. */
function recordedDevice(capacity: number): { device: Device; freed: number[] } {
  const name = `pagefree-${process.pid}-${seq++}`;
  const freed: number[] = [];
  const channel = new BroadcastChannel(CHANNEL);
  channels.push(channel);
  channel.onmessage = (e) => {
    const m = (e as MessageEvent<{ hook: string; deviceName: string; pfn: number }>).data;
    if (m.hook === 'pageFree' && m.deviceName === name) freed.push(m.pfn);
  };
  return { device: new Device({ name, capacity, driver }), freed };
}

/** Waits (with a deadline) for `n` pageFree calls, then a little longer so that a surplus would show. */
async function settle(freed: number[], n: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while (freed.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 100));
}

function pfnsOf(region: Region, first: number, count: number): number[] {
  const out: number[] = [];
  for (let p = first; p < first + count; p++) {
    const e = region.entry(p);
    if (e.kind !== 'device') throw new Error(`page ${p} is ${e.kind}, not on the device`);
    out.push(e.pfn);
  }
  return out;
}

const sorted = (a: number[]): number[] => [...a].sort((x, y) => x - y);

describeUffd('pageFree runs once per freed device page', () => {
  for (const servicer of SERVICERS) {
    it(`${servicer}: faults, migrateToRam, discard and region.close`, async () => {
      const { device, freed } = recordedDevice(64);
      const region = Region.map({ pages: 20, servicer });
      region.bytes.fill(1);
      expect(region.migrate(0, 20, device)).toBe(20);
      const pfns = pfnsOf(region, 0, 20);
      for (let p = 0; p < 8; p++) void region.bytes[p * region.pageSize]; // 8 faults
      expect(region.migrateToRam(8, 4)).toBe(4);
      region.discard(12, 4);
      await region.close(); // the last 4
      await settle(freed, 20);
      expect(sorted(freed)).toEqual(sorted(pfns));
      expect(device.used).toBe(0);
      expect(device.stats().freed).toBe(20);
      await device.close();
    });

    it(`${servicer}: device.close evicts, and each evicted page is freed once`, async () => {
      const { device, freed } = recordedDevice(16);
      const region = Region.map({ pages: 8, servicer });
      region.bytes.fill(2);
      region.migrate(0, 8, device);
      const pfns = pfnsOf(region, 0, 8);
      await device.close();
      await settle(freed, 8);
      expect(sorted(freed)).toEqual(sorted(pfns));
      expect(region.bytes[7 * region.pageSize]).toBe(2);
      await region.close();
    });

    it(`${servicer}: a zap by someone else (a raw MADV_DONTNEED) frees the device pages once`, async () => {
      const { device, freed } = recordedDevice(16);
      const region = Region.map({ pages: 8, servicer });
      region.bytes.fill(3);
      region.migrate(0, 8, device);
      const pfns = pfnsOf(region, 0, 8);
      expect(native.regionDiscard(region.handle, 0, 8, false)).toBe(0); // behind the library's back
      if (servicer === 'inline') {
        // No thread reads the inline region's events: its entries stay until the library zaps them.
        await region.close();
      } else {
        const deadline = Date.now() + 5000;
        while (device.used > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
        await region.close();
      }
      await settle(freed, 8);
      expect(sorted(freed)).toEqual(sorted(pfns));
      await device.close();
    });
  }

  for (const servicer of ['worker', 'native'] as const) {
    it(`${servicer}: pages a fork child shares are freed once, when the last mapping lets go`, async () => {
      const { device, freed } = recordedDevice(16);
      const region = Region.map({ pages: 4, servicer });
      region.bytes.fill(4);
      region.migrate(0, 4, device);
      const pfns = pfnsOf(region, 0, 4);
      // The child reads pages 0 and 1 (its faults migrate them back for it) and leaves 2 and 3.
      const child = await region.fork([
        { op: 'read', page: 0 },
        { op: 'read', page: 1 },
      ]);
      expect(child.exitCode).toBe(0);
      expect(child.results).toEqual([4, 4]);
      for (let p = 0; p < 4; p++) void region.bytes[p * region.pageSize];
      await settle(freed, 4);
      expect(sorted(freed)).toEqual(sorted(pfns));
      expect(device.used).toBe(0);
      await region.close();
      await device.close();
    });
  }
});

// free_devpage runs inside put_page, before anyone can allocate the page again: the hook must see
// its pfn free (refcount 0), never already handed out to the next migration (the free stack is
// LIFO: the pfn just freed is the next one given out).
const probing = new URL('./fixtures/semantics/drivers/probing.mjs', import.meta.url);
/** The same driver, named with a query: imported, never required, so it loads a turn of the event loop late. */
const probingAsync = new URL('./fixtures/semantics/drivers/probing.mjs?imported', import.meta.url);
type Probe = (ctx: { deviceName: string; pfn: number }) => void;

/** A device with the probing driver, and what its pageFree saw of the device as it ran. */
function probedDevice(): { device: Device; seen: { pfn: number; refcountNow: number }[] } {
  const name = `probing-${process.pid}-${seq++}`;
  const device = new Device({ name, capacity: 4, driver: probing });
  const seen: { pfn: number; refcountNow: number }[] = [];
  (globalThis as { __uffdHmmPageFreeProbe?: Probe }).__uffdHmmPageFreeProbe = (ctx) => {
    if (ctx.deviceName === name) seen.push({ pfn: ctx.pfn, refcountNow: device.refcount(ctx.pfn) });
  };
  return { device, seen };
}

async function calls(seen: unknown[], n: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while (seen.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  expect(seen.length, JSON.stringify(seen)).toBe(n);
}

describeUffd('pageFree has run before its pfn is handed out again', () => {
  afterEach(() => {
    delete (globalThis as { __uffdHmmPageFreeProbe?: Probe }).__uffdHmmPageFreeProbe;
  });

  for (const servicer of SERVICERS) {
    it(`${servicer}: a page freed on the main thread (discard), the next migration right after`, async () => {
      const { device, seen } = probedDevice();
      const region = Region.map({ pages: 2, servicer });
      region.bytes.fill(1);
      expect(region.migrate(0, 1, device)).toBe(1);
      const [pfn] = pfnsOf(region, 0, 1);
      region.discard(0, 1);
      expect(region.migrate(1, 1, device)).toBe(1);
      await calls(seen, 1);
      expect(seen).toEqual([{ pfn, refcountNow: 0 }]);
      await region.close();
      await calls(seen, 2);
      expect(device.used).toBe(0);
      await device.close();
    });

    it(`${servicer}: a page freed by native code (a fault), the next migration right after`, async () => {
      const { device, seen } = probedDevice();
      const region = Region.map({ pages: 2, servicer });
      region.bytes.fill(1);
      // The main thread's instance of the driver is loaded by a first free.
      region.migrate(0, 1, device);
      region.discard(0, 1);
      await calls(seen, 1);
      expect(region.migrate(1, 1, device)).toBe(1);
      const [pfn] = pfnsOf(region, 1, 1);
      expect(region.bytes[region.pageSize]).toBe(1); // the fault frees the device page natively
      expect(region.migrate(0, 1, device)).toBe(1);
      await calls(seen, 2);
      expect(seen[1]).toEqual({ pfn, refcountNow: 0 });
      await region.close();
      await calls(seen, 3);
      expect(device.used).toBe(0);
      await device.close();
    });
  }
});

describeUffd('pageFree before the main thread has loaded the driver module', () => {
  afterEach(() => {
    delete (globalThis as { __uffdHmmPageFreeProbe?: Probe }).__uffdHmmPageFreeProbe;
  });

  it('a full device hands out a freed page rather than looking full, and its pageFree still comes once; after the load, never early', async () => {
    const name = `probing-${process.pid}-${seq++}`;
    const device = new Device({ name, capacity: 1, driver: probingAsync });
    const seen: { pfn: number; refcountNow: number }[] = [];
    (globalThis as { __uffdHmmPageFreeProbe?: Probe }).__uffdHmmPageFreeProbe = (ctx) => {
      if (ctx.deviceName === name) seen.push({ pfn: ctx.pfn, refcountNow: device.refcount(ctx.pfn) });
    };
    const region = Region.map({ pages: 2, servicer: 'native' });
    // All synchronous: the import the first migration started has had no turn of the event loop.
    expect(region.migrate(0, 1, device)).toBe(1);
    region.discard(0, 1);
    expect(region.migrate(1, 1, device)).toBe(1); // the only page, its pageFree still to come
    expect(seen).toEqual([]);
    await calls(seen, 1);
    expect(seen).toEqual([{ pfn: 0, refcountNow: 1 }]);
    // Loaded now: a free, then an allocation at once, and the hook came in between.
    region.discard(1, 1);
    expect(region.migrate(0, 1, device)).toBe(1);
    expect(seen).toEqual([{ pfn: 0, refcountNow: 1 }, { pfn: 0, refcountNow: 0 }]);
    await region.close();
    await calls(seen, 3);
    expect(device.used).toBe(0);
    expect(device.stats().freed).toBe(3);
    await device.close();
  });

  it('a page handed out early and freed again before the load goes back on the free stack once the module loads', async () => {
    const name = `probing-${process.pid}-${seq++}`;
    const device = new Device({ name, capacity: 1, driver: probingAsync });
    const seen: { pfn: number; refcountNow: number }[] = [];
    (globalThis as { __uffdHmmPageFreeProbe?: Probe }).__uffdHmmPageFreeProbe = (ctx) => {
      if (ctx.deviceName === name) seen.push({ pfn: ctx.pfn, refcountNow: device.refcount(ctx.pfn) });
    };
    const region = Region.map({ pages: 1, servicer: 'native' });
    // All synchronous, before the import has a turn: pfn 0 freed, handed out early, freed again.
    expect(region.migrate(0, 1, device)).toBe(1);
    region.discard(0, 1);
    expect(region.migrate(0, 1, device)).toBe(1);
    region.discard(0, 1);
    await calls(seen, 2);
    // Both frees got their hook, and the page is free: the device is not full for good.
    expect(seen.map((x) => x.pfn)).toEqual([0, 0]);
    expect(device.used).toBe(0);
    expect(region.migrate(0, 1, device)).toBe(1);
    await region.close();
    await device.close();
  });
});
