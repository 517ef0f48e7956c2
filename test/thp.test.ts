// Transparent huge pages (MapOptions.thp): a THP migrates whole into one huge device page (a
// PMD-level device entry) and comes back whole on the first fault, as the kernel's device-private
// THP migration does; failed huge allocations and partial changes split it into base entries.
import { expect, it } from 'vitest';
import {
  Device,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_PMD,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  Region,
  mirrorMigrate,
} from 'uffd-hmm';
import { SERVICERS, checkPages, closeAfterEach, describeUffd, fillPages } from './helpers.js';

const N = 512; // 4 KiB pages per PMD
const HUGE_LOCAL_WRITE = HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD;
const track = closeAfterEach();

/** A THP region of `pmds` PMDs, filled with the test pattern and collapsed into THPs. */
function thpRegion(servicer: (typeof SERVICERS)[number], pmds = 1): Region {
  const r = track(Region.map({ pages: pmds * N, servicer, thp: true }));
  expect(r.address % BigInt(N * r.pageSize)).toBe(0n);
  fillPages(r, 0, pmds * N);
  r.collapse(0, pmds * N);
  return r;
}

describeUffd('THP regions', () => {
  for (const servicer of SERVICERS) {
    it(`${servicer}: a THP migrates whole and the first fault brings all of it back`, () => {
      const r = thpRegion(servicer, 2);
      const d = track(new Device({ capacity: 2 * N }));
      const t = r.trace();
      expect(r.migrate(0, 2 * N, d)).toBe(2 * N);
      const snap = r.snapshot(0, 2 * N, d);
      expect(snap.every((b) => b === HUGE_LOCAL_WRITE)).toBe(true);
      // A huge device page is one aligned run of device pfns.
      const e = r.entry(N + 7);
      expect(e).toMatchObject({ kind: 'device', write: true });
      expect((e as { pfn: number }).pfn % N).toBe(7);
      void r.bytes[(N + 300) * r.pageSize]; // one fault, in the middle of the second THP
      expect(d.used).toBe(N);
      expect(t.records()).toHaveLength(1);
      expect(t.records()[0]).toMatchObject({ page: N + 300, outcome: 'migrated' });
      expect(r.entry(N)).toEqual({ kind: 'present', write: true });
      expect(r.entry(2 * N - 1)).toEqual({ kind: 'present', write: true });
      expect(r.entry(0)).toMatchObject({ kind: 'device' });
      expect(checkPages(r, 0, 2 * N)).toBeNull();
      expect(d.used).toBe(0);
      expect(r.stats().migratedBack).toBe(2 * N);
      expect(d.stats()).toMatchObject({ faults: 2, migratedToDevice: 2 * N, migratedToRam: 2 * N, freed: 2 * N });
    });

    it(`${servicer}: a failed huge allocation splits the THP, on the device side and on the CPU side`, () => {
      const r = thpRegion(servicer);
      const d = track(new Device({ capacity: N }));
      d.failNextHugeAllocation();
      expect(r.migrate(0, N, d)).toBe(N);
      expect(r.snapshot(0, 1, d)[0]).toBe(HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE);
      void r.bytes[5 * r.pageSize];
      expect(d.used).toBe(N - 1); // base entries: one page per fault
      r.migrateToRam(0, N);
      expect(d.used).toBe(0);

      r.collapse(0, N);
      expect(r.migrate(0, N, d)).toBe(N);
      expect(r.snapshot(0, 1, d)[0]).toBe(HUGE_LOCAL_WRITE);
      d.failNextHugeAllocation();
      void r.bytes[5 * r.pageSize];
      expect(d.used).toBe(N - 1);
      expect(r.snapshot(0, 1, d)[0] & HMM_DMIRROR_PROT_PMD).toBe(0); // split into PTE-level entries
      expect(checkPages(r, 0, N)).toBeNull();
    });

    it(`${servicer}: discarding or protecting part of a huge entry splits it`, () => {
      const r = thpRegion(servicer, 2);
      const d = track(new Device({ capacity: 2 * N }));
      expect(r.migrate(0, 2 * N, d)).toBe(2 * N);
      r.discard(10, 1);
      r.mprotect(N + 10, 1, 'read');
      const snap = r.snapshot(0, 2 * N, d);
      expect(snap[0] & HMM_DMIRROR_PROT_PMD).toBe(0);
      expect(snap[N] & HMM_DMIRROR_PROT_PMD).toBe(0);
      expect(snap[N + 10]).toBe(HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_READ);
      expect(d.used).toBe(2 * N - 1);
      void r.bytes[0];
      void r.bytes[N * r.pageSize];
      expect(d.used).toBe(2 * N - 3); // split entries come back one page at a time
      expect(r.bytes[10 * r.pageSize]).toBe(0);
      fillPages(r, 10, 1);
      expect(checkPages(r, 0, 2 * N)).toBeNull();
    });
  }

  for (const servicer of SERVICERS) {
    it(`${servicer}: a huge read entry split by mprotect comes back one page, freeing that page's device page`, () => {
      // The 2 MiB COPY fails across the split (two vmas), and the fault falls back to the one page:
      // the fallback freed the block's first device page (page 0's) instead of page 300's.
      const r = track(Region.map({ pages: N, servicer, thp: true }));
      for (let p = 0; p < N; p++) r.bytes.fill(p & 0xff, p * r.pageSize, (p + 1) * r.pageSize);
      r.collapse(0, N);
      const d = track(new Device({ capacity: N + 1 }));
      expect(r.migrate(0, N, d, { write: false })).toBe(N);
      expect(r.snapshot(0, 1, d)[0]).toBe(HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_READ | HMM_DMIRROR_PROT_PMD);
      const pfn = (p: number) => (r.entry(p) as { pfn: number }).pfn;
      const [pfn0, pfn300] = [pfn(0), pfn(300)];
      r.mprotect(256, 256, 'read');
      expect(r.bytes[300 * r.pageSize + 5]).toBe(300 & 0xff);
      expect(r.entry(300)).toEqual({ kind: 'present', write: false });
      expect({ page0: d.refcount(pfn0), page300: d.refcount(pfn300), used: d.used }).toEqual({ page0: 1, page300: 0, used: N - 1 });
      expect(r.entry(0)).toEqual({ kind: 'device', write: false, device: d, pfn: pfn0 });
      // A second region's migration gets a free page: never the one page 0 still names.
      const r2 = track(Region.map({ pages: 1, servicer }));
      r2.bytes.fill(0xee);
      expect(r2.migrate(0, 1, d)).toBe(1);
      expect(pfn0).not.toBe((r2.entry(0) as { pfn: number }).pfn);
      for (let p = 0; p < N; p++) {
        const at = p * r.pageSize;
        if (r.bytes[at] !== (p & 0xff) || r.bytes[at + r.pageSize - 1] !== (p & 0xff)) throw new Error(`page ${p} reads ${r.bytes[at]}`);
      }
      expect(d.used).toBe(1);
    });
  }

  it('a huge entry shared with a forked child comes back page by page', async () => {
    const r = thpRegion('native');
    const d = track(new Device({ capacity: N }));
    expect(r.migrate(0, N, d)).toBe(N);
    const child = await r.fork([{ op: 'read', page: 3, offset: 1 }]);
    expect(child).toMatchObject({ exitCode: 0, signal: null });
    // fork made every entry a read entry in both processes; the child's read brought page 3 back
    // for both, and the rest stayed, still one huge read entry minus page 3 (so: split).
    expect(r.entry(3)).toMatchObject({ kind: 'present' });
    expect(d.used).toBe(N - 1);
    expect(checkPages(r, 0, N)).toBeNull();
  });

  it('collapse says why it cannot', () => {
    const plain = track(Region.map({ pages: N, servicer: 'native' }));
    fillPages(plain, 0, N);
    expect(() => plain.collapse(0, N)).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'madvise(MADV_COLLAPSE)' }));
    // A hole and a device entry look alike to the kernel (no pte), and it fills neither in a
    // userfaultfd region: EBUSY.
    const holes = track(Region.map({ pages: N, servicer: 'native', thp: true }));
    holes.bytes[0] = 1;
    const missing = { code: 'EBUSY', syscall: 'madvise(MADV_COLLAPSE)', message: expect.stringContaining('missing pages or device entries') };
    expect(() => holes.collapse(0, N)).toThrow(expect.objectContaining(missing));
    const entries = track(Region.map({ pages: N, servicer: 'native', thp: true }));
    fillPages(entries, 0, N);
    const d = new Device({ capacity: 1 });
    try {
      mirrorMigrate(entries, 5, 1, d);
      expect(() => entries.collapse(0, N)).toThrow(expect.objectContaining(missing));
      // A read entry comes back write-protected (uffd-wp), which the kernel will not collapse.
      entries.mprotect(0, N, 'read');
      entries.mprotect(0, N, 'readwrite');
      expect(checkPages(entries, 5, 1)).toBeNull();
      expect(entries.entry(5)).toEqual({ kind: 'present', write: false });
      expect(() => entries.collapse(0, N)).toThrow(
        expect.objectContaining({ code: 'EINVAL', message: expect.stringContaining('write-protected') }),
      );
      fillPages(entries, 0, N);
      entries.collapse(0, N);
      expect(checkPages(entries, 0, N)).toBeNull();
    } finally {
      entries.close();
      d.close();
    }
    expect(() => Region.map({ pages: N, thp: true, shared: true })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
  });
});
