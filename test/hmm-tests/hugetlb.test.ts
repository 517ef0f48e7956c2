// hmm-tests.c's hugetlbfs cases: a device writing a MAP_HUGETLB range (anon_write_hugetlbfs) and
// snapshotting one, which must show the huge page's level on every 4 KiB page (compound).
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  Device,
  HMM_DMIRROR_PROT_PMD,
  HMM_DMIRROR_PROT_PUD,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  PAGE_SIZE,
  Region,
  hugePageSize,
  mirrorMigrate,
  mirrorSnapshot,
  mirrorWrite,
} from 'uffd-hmm';
import { describeUffd } from '../helpers.js';
import { INTS, fillInts, firstIntMismatch, track } from './fixtures/common.js';
import { reserveHugePages } from './fixtures/hugepages.js';

const SERVICERS = ['worker', 'native'] as const;
/** ALIGN(TWOMEG, default_hsize) in 4 KiB pages: one huge page of the default size. */
const NPAGES = Math.max(2 << 20, hugePageSize()) / PAGE_SIZE;

let restore: (() => void) | null = null;
beforeAll(async () => {
  restore = await reserveHugePages(2);
}, 40_000);
afterAll(() => restore?.());

describeUffd('hmm-tests.c: hugetlbfs', () => {
  it('anon_write_hugetlbfs', (ctx) => {
    if (restore === null) return ctx.skip(); // UFFD_HMM_ALLOW_NO_HUGEPAGES=1 and no pool: the kernel test SKIPs too
    for (const servicer of SERVICERS) {
      const r = track(Region.map({ pages: NPAGES, servicer, hugetlb: true }));
      const d = track(new Device({ capacity: NPAGES }));
      expect(r.mapping).toBe('private-hugetlb');
      const data = new Int32Array(NPAGES * INTS);
      fillInts(data);
      const res = mirrorWrite(r, 0, NPAGES, d, new Uint8Array(data.buffer));
      expect(res.cpages).toBe(NPAGES);
      expect(res.faults).toBe(1);
      expect(firstIntMismatch(new Int32Array(r.bytes.buffer, r.bytes.byteOffset, NPAGES * INTS))).toBe(-1);
      // Beyond the kernel test: no fault of the range came to us, and it cannot migrate.
      expect(r.stats().faults).toBe(0);
      expect(() => mirrorMigrate(r, 0, NPAGES, d)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      expect(r.migrate(0, NPAGES, d)).toBe(0);
    }
  });

  it('compound', (ctx) => {
    if (restore === null) return ctx.skip();
    const level = hugePageSize() >= 1 << 30 ? HMM_DMIRROR_PROT_PUD : HMM_DMIRROR_PROT_PMD;
    for (const servicer of SERVICERS) {
      const r = track(Region.map({ pages: NPAGES, servicer, hugetlb: true }));
      const d = track(new Device({ capacity: 1 }));
      fillInts(new Int32Array(r.bytes.buffer, r.bytes.byteOffset, NPAGES * INTS));
      // Every 4 KiB page of the huge page reports the same level, writable.
      let m = mirrorSnapshot(r, 0, NPAGES, d);
      expect(m.length).toBe(NPAGES);
      expect(m.every((b) => b === (HMM_DMIRROR_PROT_WRITE | level))).toBe(true);
      r.mprotect(0, NPAGES, 'read');
      m = mirrorSnapshot(r, 0, NPAGES, d);
      expect(m.every((b) => b === (HMM_DMIRROR_PROT_READ | level))).toBe(true);
    }
  });
  it('beyond the kernel tests: a hugetlb region is plain kernel memory: unregistered, unmigratable, whole huge pages only', async (ctx) => {
    if (restore === null) return ctx.skip();
    {
      const huge = NPAGES;
      const r = track(Region.map({ pages: huge, servicer: 'native', hugetlb: true }));
      const d = track(new Device({ capacity: huge }));
      r.bytes[PAGE_SIZE] = 3;
      expect(r.stats().faults).toBe(0);
      expect(r.entry(1)).toEqual({ kind: 'present', write: true });
      expect(r.migrate(0, huge, d)).toBe(0);
      expect(() => r.discard(0, 1)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE', message: expect.stringMatching(/whole huge pages/) }));
      expect(() => r.mprotect(1, huge - 1, 'read')).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
      await expect(r.fork([])).rejects.toMatchObject({ code: 'ERR_BACKING_UNSUPPORTED' });
      expect(() => r.remap(huge * 2)).toThrow(expect.objectContaining({ code: 'ERR_BACKING_UNSUPPORTED' }));
      r.discard(0, huge);
      expect(r.bytes[PAGE_SIZE]).toBe(0);
      expect(() => Region.map({ pages: huge + 1, hugetlb: true })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE', message: expect.stringMatching(/multiple of/) }));
      expect(() => Region.map({ pages: huge, hugetlb: true, file: 0 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
      expect(() => Region.map({ pages: huge, hugetlb: true, servicer: 'inline' })).toThrow(expect.objectContaining({ code: 'ERR_SERVICER_UNSUPPORTED' }));
      await r.close();
    }
  });
});
