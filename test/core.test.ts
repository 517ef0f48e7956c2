// The core behaviours of SEMANTICS.md S1, S2, S11, S12 on real faults, run against every servicer:
// migrate then read back, fault back page by page, read entries and write-protect faults, device
// writes, repeated migration, two devices, capacity, device removal and region teardown.
import { expect, it } from 'vitest';
import {
  Device,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE,
  HMM_DMIRROR_PROT_NONE,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  NativeToucher,
  PM_PRESENT,
  PM_SWAP,
  Region,
  SWP_DEVICE_WRITE,
} from 'uffd-hmm';
import { checkPages, closeAfterEach, crc32, describeUffd, expectNoLostIncrement, fillPages, pattern, SERVICERS } from './helpers.js';

const track = closeAfterEach();

describeUffd.each(SERVICERS)('core with the %s servicer', (servicer) => {
  const map = (pages: number) => track(Region.map({ pages, servicer }));
  const device = (capacity = 1024, name?: string) => track(new Device({ capacity, name }));

  it('migrates pages to the device and reads them back intact; the CPU page is really gone', () => {
    const r = map(64);
    const d = device();
    fillPages(r, 0, 64);
    expect(r.migrate(0, 64, d)).toBe(64);
    expect(d.used).toBe(64);
    const pm = r.pagemap(0, 64);
    for (let p = 0; p < 64; p++) {
      const e = r.entry(p);
      expect(e).toMatchObject({ kind: 'device', write: true, device: d });
      // Not present: no CPU page behind a device entry; shown as the device swap entry instead.
      expect(pm[p] & PM_PRESENT).toBe(0n);
      expect(pm[p] & PM_SWAP).toBe(PM_SWAP);
      expect(Number(pm[p] & 31n)).toBe(SWP_DEVICE_WRITE);
      expect(d.read((e as { pfn: number }).pfn)[100]).toBe(pattern(p, 100));
    }
    expect(checkPages(r, 0, 64)).toBeNull();
    for (let p = 0; p < 64; p++) expect(r.entry(p)).toEqual({ kind: 'present', write: true });
    expect(d.used).toBe(0);
    expect(r.stats().migratedBack).toBe(64);
    expect(d.stats()).toMatchObject({ migratedToDevice: 64, migratedToRam: 64, faults: 64, freed: 64 });
  });

  it('faults pages back one at a time with exact stats (migrate_fault)', () => {
    const r = map(16);
    const d = device();
    fillPages(r, 0, 16, 3);
    const before = r.stats();
    r.migrate(0, 16, d);
    for (let p = 0; p < 16; p++) {
      expect(r.bytes[p * r.pageSize + 5]).toBe(pattern(p, 5, 3));
      const s = r.stats();
      expect(s.migratedBack - before.migratedBack).toBe(p + 1);
      expect(s.faults - before.faults).toBe(p + 1);
      expect(d.used).toBe(15 - p);
      for (let q = p + 1; q < 16; q++) expect(r.entry(q).kind).toBe('device');
    }
    expect(r.stats().writeFaults).toBe(before.writeFaults);
  });

  it('brings a read entry back write-protected: the first write is a write-protect fault', () => {
    const r = map(4);
    const d = device();
    fillPages(r, 0, 4);
    expect(r.migrate(0, 4, d, { write: false })).toBe(4);
    expect(r.entry(0)).toMatchObject({ kind: 'device', write: false });
    const s0 = r.stats();
    expect(r.bytes[10]).toBe(pattern(0, 10));
    expect(r.entry(0)).toEqual({ kind: 'present', write: false });
    expect(r.stats().wpFaults).toBe(s0.wpFaults);
    r.bytes[10] = 200;
    expect(r.bytes[10]).toBe(200);
    expect(r.entry(0)).toEqual({ kind: 'present', write: true });
    expect(r.stats().wpFaults).toBe(s0.wpFaults + 1);
    // A write entry comes back writable: a write to it is one fault, not two. (Page 1 was a
    // read entry; back in RAM it is write-protected, and a forced write migration upgrades it.)
    expect(r.migrateToRam(1, 3)).toBe(3);
    expect(r.entry(1)).toEqual({ kind: 'present', write: false });
    r.migrate(1, 1, d, { write: true });
    expect(r.entry(1)).toMatchObject({ kind: 'device', write: true });
    const s1 = r.stats();
    r.bytes[r.pageSize + 1] = 7;
    expect(r.stats().wpFaults).toBe(s1.wpFaults);
    expect(r.stats().faults).toBe(s1.faults + 1);
    expect(r.stats().writeFaults).toBe(s1.writeFaults + 1);
  });

  it('a write-protected CPU page migrates as a read entry', () => {
    const r = map(2);
    const d = device();
    fillPages(r, 0, 2);
    r.migrate(0, 1, d, { write: false });
    void r.bytes[0]; // back, write-protected
    expect(r.entry(0)).toEqual({ kind: 'present', write: false });
    r.migrate(0, 2, d);
    expect(r.entry(0)).toMatchObject({ kind: 'device', write: false });
    expect(r.entry(1)).toMatchObject({ kind: 'device', write: true });
    expect(checkPages(r, 0, 2)).toBeNull();
  });

  it('never-touched pages read as zeroes and migrate as zeroed device pages', () => {
    const r = map(8);
    const d = device();
    expect(r.entry(3)).toEqual({ kind: 'none' });
    expect(r.migrate(2, 4, d)).toBe(4);
    const e = r.entry(3) as { pfn: number };
    expect(d.read(e.pfn).every((b) => b === 0)).toBe(true);
    expect(r.bytes.subarray(0, 8 * r.pageSize).every((b) => b === 0)).toBe(true);
    r.bytes[7 * r.pageSize] = 1;
    expect(r.bytes[7 * r.pageSize]).toBe(1);
  });

  it('shows what the device wrote once the page comes back', () => {
    const r = map(2);
    const d = device();
    fillPages(r, 0, 2);
    r.migrate(0, 2, d);
    const { pfn } = r.entry(1) as { pfn: number };
    const data = new Uint8Array(64).fill(0xab);
    d.write(pfn, data, 128);
    expect(d.read(pfn)[130]).toBe(0xab);
    expect(r.bytes[r.pageSize + 127]).toBe(pattern(1, 127));
    expect(r.bytes[r.pageSize + 128]).toBe(0xab);
    expect(r.bytes[r.pageSize + 191]).toBe(0xab);
    expect(r.bytes[r.pageSize + 192]).toBe(pattern(1, 192));
  });

  it('migrates, faults back and migrates again 1,000 times with matching checksums (migrate_multiple)', () => {
    const pages = 8;
    const r = map(pages);
    const d = device(pages);
    fillPages(r, 0, pages, 9);
    const want = crc32(r.bytes.slice(0, pages * r.pageSize));
    for (let i = 0; i < 1000; i++) {
      expect(r.migrate(0, pages, d)).toBe(pages);
      if (i % 2 === 0) {
        // Fault back through the CPU and mutate a byte the next round checks.
        r.bytes[(i % pages) * r.pageSize] ^= 0xff;
        r.bytes[(i % pages) * r.pageSize] ^= 0xff;
      } else {
        expect(r.migrateToRam(0, pages)).toBe(pages);
      }
      if (i % 100 === 99) expect(crc32(r.bytes.slice(0, pages * r.pageSize))).toBe(want);
      expect(d.used).toBeLessThanOrEqual(pages);
    }
    expect(crc32(r.bytes.slice(0, pages * r.pageSize))).toBe(want);
    expect(d.used).toBe(0);
  });

  it('moves pages device to device; the snapshot shows LOCAL and REMOTE (migrate_mixed, snapshot)', () => {
    const r = map(6);
    const d0 = device(16, 'd0');
    const d1 = device(16, 'd1');
    fillPages(r, 0, 6);
    r.migrate(0, 4, d0);
    expect(r.migrate(2, 2, d1)).toBe(2);
    expect(d0.used).toBe(2);
    expect(d1.used).toBe(2);
    expect(r.entry(2)).toMatchObject({ kind: 'device', device: d1 });
    const snap0 = r.snapshot(0, 6, d0);
    expect([...snap0]).toEqual([
      HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE,
      HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE,
      HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE | HMM_DMIRROR_PROT_WRITE,
      HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE | HMM_DMIRROR_PROT_WRITE,
      HMM_DMIRROR_PROT_WRITE,
      HMM_DMIRROR_PROT_WRITE,
    ]);
    expect(r.snapshot(2, 1, d1)[0]).toBe(HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE);
    expect(checkPages(r, 0, 6)).toBeNull();
    expect(d0.used + d1.used).toBe(0);
    const fresh = map(1);
    expect(fresh.snapshot()[0]).toBe(HMM_DMIRROR_PROT_NONE);
    void fresh.bytes[0];
    expect(fresh.snapshot()[0] & HMM_DMIRROR_PROT_READ).toBe(HMM_DMIRROR_PROT_READ);
  });

  it('migrates only what fits when device capacity runs out', () => {
    const r = map(10);
    const d = device(4);
    fillPages(r, 0, 10);
    expect(r.migrate(0, 10, d)).toBe(4);
    expect(d.used).toBe(4);
    for (let p = 0; p < 4; p++) expect(r.entry(p).kind).toBe('device');
    for (let p = 4; p < 10; p++) expect(r.entry(p)).toEqual({ kind: 'present', write: true });
    // Pages already there count as on the device; none more fit.
    expect(r.migrate(0, 10, d)).toBe(4);
    expect(checkPages(r, 0, 10)).toBeNull();
  });

  it('device.close() migrates every page back first: nothing is lost (device removal)', async () => {
    const r = map(32);
    const d = new Device({ capacity: 64 });
    fillPages(r, 0, 32, 5);
    r.migrate(0, 32, d);
    await d.close();
    for (let p = 0; p < 32; p++) expect(r.entry(p).kind).toBe('present');
    expect(checkPages(r, 0, 32, 5)).toBeNull();
    expect(() => r.migrate(0, 1, d)).toThrow(expect.objectContaining({ code: 'ERR_DEVICE_CLOSED' }));
    expect(() => d.read(0)).toThrow(expect.objectContaining({ code: 'ERR_DEVICE_CLOSED' }));
  });

  it('region.close() frees the device pages it held and detaches bytes', async () => {
    const r = Region.map({ pages: 8, servicer });
    const d = device(16);
    fillPages(r, 0, 8);
    const bytes = r.bytes;
    r.migrate(0, 8, d);
    expect(d.used).toBe(8);
    await r.close();
    expect(d.used).toBe(0);
    expect(d.stats().freed).toBe(8);
    expect(r.bytes.length).toBe(0);
    expect(bytes.length).toBe(0);
    expect(bytes.buffer.byteLength).toBe(0);
    expect(() => r.entry(0)).toThrow(expect.objectContaining({ code: 'ERR_REGION_CLOSED' }));
    await r.close(); // idempotent
  });

  it('loses no write when native threads write pages while the main thread migrates them', async () => {
    const pages = 32;
    const r = map(pages);
    const d = device(pages);
    const threads = 2;
    const t = new NativeToucher(r, { threads, iterations: 0, mode: 'increment', seed: 7 });
    // Keep migrating until the touchers have really raced us: hundreds of faults served mid-churn.
    const deadline = Date.now() + 20_000;
    for (let round = 0; round < 400 || r.stats().faults < 200; round++) {
      expect(Date.now()).toBeLessThan(deadline);
      const first = round % pages;
      r.migrate(first, Math.min(1 + (round % 7), pages - first), d, { write: round % 3 !== 0 });
      if (round % 5 === 0) r.migrateToRam(0, pages);
      if (round % 64 === 0) await new Promise((res) => setImmediate(res));
    }
    t.stop();
    await t.finished(30_000);
    expectNoLostIncrement(r, pages, t.counts());
    expect(r.stats().faults).toBeGreaterThanOrEqual(200);
  });
});
