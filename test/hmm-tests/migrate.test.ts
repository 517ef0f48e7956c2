// hmm-tests.c's migration cases ported to uffd-hmm: migrate to the device and fault back, device
// release, repeated migration, mixed memory types on two devices, snapshots, partial munmap, PMD-sized ranges.
import { expect, it } from 'vitest';
import {
  Device,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE,
  HMM_DMIRROR_PROT_ERROR,
  HMM_DMIRROR_PROT_NONE,
  HMM_DMIRROR_PROT_PMD,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  HMM_DMIRROR_PROT_ZERO,
  PM_PRESENT,
  PM_SWAP,
  Region,
} from 'uffd-hmm';
import { native } from '../../dist/native.js';
import { HMM_DMIRROR_FLAG_FAIL_ALLOC, mirrorFlags, mirrorMigrate, mirrorMigrateToSys, mirrorSnapshot } from 'uffd-hmm';
import { describeUffd } from '../helpers.js';
import { INTS, NPAGES, NTIMES, PMD_PAGES, fillInts, firstIntMismatch, firstIntMismatchIn, ints, track, until } from './fixtures/common.js';

// Munmaps behind the library's back (migrate_mixed, snapshot, migrate_partial_unmap_fault) reach it
// only as EVENT_UNMAP, which the inline servicer cannot read; 'worker' is the default servicer.
const servicer = 'worker';

/**
 * A PMD-sized THP region holding `ptr[i] = i`, and a device as large: the writes fill it 4 KiB at a
 * time (UFFDIO_COPY has no PMD form), and MADV_COLLAPSE makes the THP the kernel's first touch
 * would have allocated.
 */
function collapsedThp(): { r: Region; d: Device; ptr: Int32Array } {
  const r = track(Region.map({ pages: PMD_PAGES, servicer, thp: true }));
  const d = track(new Device({ capacity: PMD_PAGES }));
  const ptr = ints(r);
  fillInts(ptr);
  r.collapse(0, PMD_PAGES);
  return { r, d, ptr };
}

describeUffd('hmm-tests.c: migration to device private memory', () => {
  it('migrate', () => {
    const r = track(Region.map({ pages: NPAGES, servicer }));
    const d = track(new Device({ capacity: NPAGES }));
    fillInts(ints(r));
    const res = mirrorMigrate(r, 0, NPAGES, d);
    expect(res.cpages).toBe(NPAGES);
    expect(firstIntMismatchIn(res.data)).toBe(-1);
    // The CPU pages are really gone: device write entries, swap entries in pagemap.
    expect(d.used).toBe(NPAGES);
    const pm = r.pagemap();
    for (let p = 0; p < NPAGES; p++) {
      if ((pm[p] & PM_PRESENT) !== 0n || (pm[p] & PM_SWAP) === 0n) expect.fail(`page ${p}: pagemap ${pm[p].toString(16)}`);
    }
    expect(r.entry(NPAGES - 1)).toMatchObject({ kind: 'device', write: true, device: d });
  });

  it('migrate_fault', () => {
    const r = track(Region.map({ pages: NPAGES, servicer }));
    const d = track(new Device({ capacity: NPAGES }));
    const ptr = ints(r);
    fillInts(ptr);
    let res = mirrorMigrate(r, 0, NPAGES, d);
    expect(res.cpages).toBe(NPAGES);
    expect(firstIntMismatchIn(res.data)).toBe(-1);

    // Fault half the pages back to system memory and check them.
    const s0 = r.stats();
    expect(firstIntMismatch(ptr.subarray(0, ptr.length / 2))).toBe(-1);
    expect(r.stats().faults - s0.faults).toBe(NPAGES / 2);
    expect(d.used).toBe(NPAGES / 2);

    // Migrate the mix of system and device pages to the device again.
    res = mirrorMigrate(r, 0, NPAGES, d);
    expect(res.cpages).toBe(NPAGES);
    expect(firstIntMismatchIn(res.data)).toBe(-1);
    expect(d.used).toBe(NPAGES);
  });

  it('migrate_release', async () => {
    const r = track(Region.map({ pages: NPAGES, servicer }));
    const d = track(new Device({ capacity: NPAGES }));
    const ptr = ints(r);
    fillInts(ptr);
    const res = mirrorMigrate(r, 0, NPAGES, d);
    expect(res.cpages).toBe(NPAGES);
    expect(firstIntMismatchIn(res.data)).toBe(-1);

    // HMM_DMIRROR_RELEASE removes the device's memory (dmirror_device_remove_chunks): every page
    // is evicted back to system memory first. Device.close() is that removal.
    await d.close();
    for (let p = 0; p < NPAGES; p++) if (r.entry(p).kind !== 'present') expect.fail(`page ${p} not evicted: ${r.entry(p).kind}`);

    // Fault pages back to system memory and check them.
    const s0 = r.stats();
    expect(firstIntMismatch(ptr.subarray(0, ptr.length / 2))).toBe(-1);
    expect(r.stats().faults).toBe(s0.faults); // already there: nothing left to fault
  });

  it('migrate_multiple', async () => {
    const d = track(new Device({ capacity: NPAGES }));
    for (let c = 0; c < NTIMES; c++) {
      const r = Region.map({ pages: NPAGES, servicer });
      try {
        const ptr = ints(r);
        fillInts(ptr);
        const res = mirrorMigrate(r, 0, NPAGES, d);
        expect(res.cpages).toBe(NPAGES);
        expect(firstIntMismatchIn(res.data)).toBe(-1);
        // Device private memory: the pages come back through CPU faults.
        expect(firstIntMismatch(ptr)).toBe(-1);
        expect(d.used).toBe(0);
      } finally {
        await r.close();
      }
    }
    expect(d.stats()).toMatchObject({ migratedToDevice: NTIMES * NPAGES, faults: NTIMES * NPAGES });
  });

  it('migrate_mixed', () => {
    // TEST_F(hmm2): migrating various memory types to device 1, then device 0.
    const npages = 6;
    const r = track(Region.map({ pages: npages, servicer }));
    const d0 = track(new Device({ capacity: npages, name: 'dmirror0' }));
    const d1 = track(new Device({ capacity: npages, name: 'dmirror1' }));
    r.mprotect(0, npages, 'none'); // reserve a range of addresses

    // Migrating a protected area is an error.
    expect(() => mirrorMigrate(r, 0, npages, d1)).toThrow(expect.objectContaining({ code: 'EINVAL', errno: -22 }));

    // Punch a hole after the first page; a vma that does not cover the range is an error.
    expect(native.regionUnmap(r.handle, 1, 1)).toBe(0);
    expect(() => mirrorMigrate(r, 0, 3, d1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));

    // Page 2: a read-only zero page.
    r.mprotect(2, 1, 'read');
    const val = ints(r, 2, 1)[0] + 3;
    expect(val).toBe(3);
    // Page 3: read-only, with data.
    r.mprotect(3, 1, 'readwrite');
    ints(r, 3, 1)[0] = val;
    r.mprotect(3, 1, 'read');
    // Pages 4-5: read-write.
    r.mprotect(4, 2, 'readwrite');
    ints(r, 4, 1)[0] = val;
    ints(r, 5, 1)[0] = val;

    // The hole alone is an error too, and nothing migrates.
    expect(() => mirrorMigrate(r, 1, 2, d1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(d1.used).toBe(0);

    // Now migrate pages 2-5 to device 1.
    const res = mirrorMigrate(r, 2, 4, d1);
    expect(res.cpages).toBe(4);
    const got = new Int32Array(res.data.buffer);
    expect([got[0], got[INTS], got[2 * INTS], got[3 * INTS]]).toEqual([0, 3, 3, 3]);
    expect([2, 3, 4, 5].map((p) => r.entry(p))).toMatchObject([
      { kind: 'device', device: d1, write: false },
      { kind: 'device', device: d1, write: false },
      { kind: 'device', device: d1, write: true },
      { kind: 'device', device: d1, write: true },
    ]);

    // Page 5 is not migrated to device 0 because it is on device 1 (the driver migrates system
    // memory only), so device 0 does not map it: ENOENT.
    expect(() => mirrorMigrate(r, 5, 1, d0)).toThrow(expect.objectContaining({ code: 'ENOENT', errno: -2 }));
    expect(r.entry(5)).toMatchObject({ kind: 'device', device: d1 });
    expect(d0.used).toBe(0);
    // The library's own region.migrate() moves device to device (SEMANTICS.md S1); dmirror's
    // policy, ported above, is the driver declining to.
    expect(r.migrate(5, 1, d0)).toBe(1);
    expect(r.entry(5)).toMatchObject({ kind: 'device', device: d0 });
    expect(ints(r, 5, 1)[0]).toBe(3);
  });

  it('snapshot', () => {
    // TEST_F(hmm2): the CPU page table as device 0 sees it, without faulting anything in.
    const npages = 7;
    const r = track(Region.map({ pages: npages, servicer }));
    const d0 = track(new Device({ capacity: npages, name: 'dmirror0' }));
    const d1 = track(new Device({ capacity: npages, name: 'dmirror1' }));
    r.mprotect(0, npages, 'none');
    expect(native.regionUnmap(r.handle, 1, 1)).toBe(0); // punch a hole after the first page
    // Page 2: read-only zero page.
    r.mprotect(2, 1, 'read');
    const val = ints(r, 2, 1)[0] + 3;
    expect(val).toBe(3);
    // Page 3: read-only.
    r.mprotect(3, 1, 'readwrite');
    ints(r, 3, 1)[0] = val;
    r.mprotect(3, 1, 'read');
    // Pages 4-6: read-write.
    r.mprotect(4, 3, 'readwrite');
    ints(r, 4, 1)[0] = val;
    // Page 5 to device 0, page 6 to device 1.
    expect(mirrorMigrate(r, 5, 1, d0).cpages).toBe(1);
    expect(mirrorMigrate(r, 6, 1, d1).cpages).toBe(1);

    const m = mirrorSnapshot(r, 0, npages, d0);
    expect([...m]).toEqual([
      HMM_DMIRROR_PROT_ERROR,
      HMM_DMIRROR_PROT_ERROR,
      HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ,
      HMM_DMIRROR_PROT_READ,
      HMM_DMIRROR_PROT_WRITE,
      HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE,
      // hmm_range_fault hands a driver only its own device-private pages: another device's is NONE.
      HMM_DMIRROR_PROT_NONE,
    ]);
    // The region's own page-table dump (SEMANTICS.md) names that page REMOTE instead.
    expect(r.snapshot(6, 1, d0)[0]).toBe(HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE | HMM_DMIRROR_PROT_WRITE);
    // Nothing was faulted in: the snapshot left both device pages where they were.
    expect([d0.used, d1.used]).toEqual([1, 1]);
  });

  it('migrate_partial_unmap_fault', async () => {
    // The kernel loops use_thp over {0, 1}; with 4 KiB-only regions both passes are the same, so
    // each offset runs once. Size: one PMD; half of it is unmapped at offsets 0, 1/4 and 1/2.
    const size = PMD_PAGES;
    const unmap = size / 2;
    const d = track(new Device({ capacity: size }));
    for (const offset of [0, size / 4, size / 2]) {
      const r = Region.map({ pages: size, servicer });
      try {
        const ptr = ints(r);
        fillInts(ptr);
        const res = mirrorMigrate(r, 0, size, d);
        expect(res.cpages).toBe(size);
        expect(firstIntMismatchIn(res.data)).toBe(-1);

        expect(native.regionUnmap(r.handle, offset, unmap)).toBe(0);
        // Fault the rest back and check it.
        expect(firstIntMismatch(ptr.subarray(0, offset * INTS))).toBe(-1);
        const after = (offset + unmap) * INTS;
        expect(firstIntMismatch(ptr.subarray(after), after)).toBe(-1);
        // The munmap dropped the references of the device pages it removed (zap_pte_range).
        await until(() => d.used === 0, 'the unmapped device pages to be freed');
      } finally {
        await r.close();
      }
    }
  });

  it('migrate_anon_huge_empty', () => {
    // A never-touched PMD-sized PROT_READ range (4 KiB pages here: no THP under userfaultfd).
    const r = track(Region.map({ pages: PMD_PAGES, servicer }));
    const d = track(new Device({ capacity: PMD_PAGES }));
    r.mprotect(0, PMD_PAGES, 'read');
    const res = mirrorMigrate(r, 0, PMD_PAGES, d);
    expect(res.cpages).toBe(PMD_PAGES);
    expect(res.data.every((b) => b === 0)).toBe(true);
    // No VM_WRITE: read entries, as dmirror sets MIGRATE_PFN_WRITE only for a writable vma.
    expect(r.entry(0)).toMatchObject({ kind: 'device', write: false });
  });

  it('migrate_anon_huge_free', () => {
    // Migrate a PMD-sized range, then madvise(MADV_FREE) it: the kernel test asserts only that the
    // call succeeds. madvise_free_pte_range skips non-present entries, so the device entries stay
    // (no pageFree, device.used unchanged) and the data still faults back intact.
    const r = track(Region.map({ pages: PMD_PAGES, servicer }));
    const d = track(new Device({ capacity: PMD_PAGES }));
    const ptr = ints(r);
    fillInts(ptr);
    const res = mirrorMigrate(r, 0, PMD_PAGES, d);
    expect(res.cpages).toBe(PMD_PAGES);
    expect(firstIntMismatchIn(res.data)).toBe(-1);
    r.discard(0, PMD_PAGES, { free: true });
    expect(d.used).toBe(PMD_PAGES);
    expect(d.stats().freed).toBe(0);
    for (const p of [0, PMD_PAGES >> 1, PMD_PAGES - 1]) expect(r.entry(p)).toMatchObject({ kind: 'device', device: d });
    expect(firstIntMismatch(ptr)).toBe(-1);
    expect(d.used).toBe(0);
  });

  it('migrate_anon_huge_zero', () => {
    // A PMD-sized PROT_READ range whose first read maps the zero page (the huge zero page in the
    // kernel; one 4 KiB zero page here, the rest untouched).
    const r = track(Region.map({ pages: PMD_PAGES, servicer }));
    const d = track(new Device({ capacity: PMD_PAGES }));
    r.mprotect(0, PMD_PAGES, 'read');
    const ptr = ints(r);
    expect(ptr[0]).toBe(0);
    const res = mirrorMigrate(r, 0, PMD_PAGES, d);
    expect(res.cpages).toBe(PMD_PAGES);
    expect(res.data.every((b) => b === 0)).toBe(true);
    // Fault pages back to system memory and check them.
    for (let i = 0; i < ptr.length; i++) if (ptr[i] !== 0) expect.fail(`int ${i} is ${ptr[i]}`);
    expect(d.used).toBe(0);
  });

  it('migrate_anon_huge_fault', () => {
    // A PMD-aligned THP region: the writes fill it 4 KiB at a time (UFFDIO_COPY has no PMD form),
    // MADV_COLLAPSE makes the THP, and migration moves it whole into one huge device page.
    const { r, d, ptr } = collapsedThp();
    const res = mirrorMigrate(r, 0, PMD_PAGES, d);
    expect(res.cpages).toBe(PMD_PAGES);
    expect(firstIntMismatchIn(res.data)).toBe(-1);

    const m = mirrorSnapshot(r, 0, PMD_PAGES, d);
    const want = HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD;
    for (let i = 0; i < PMD_PAGES; i++) if (m[i] !== want) expect.fail(`page ${i}: snapshot ${m[i].toString(16)}`);
    const pm = r.pagemap();
    for (let i = 0; i < PMD_PAGES; i++) {
      if ((pm[i] & PM_SWAP) === 0n || (pm[i] & PM_PRESENT) !== 0n) expect.fail(`page ${i}: pagemap ${pm[i].toString(16)}`);
    }
    // Fault pages back to system memory and check them: the first fault brings the whole THP back.
    expect(ptr[0]).toBe(0);
    expect(d.used).toBe(0);
    expect(firstIntMismatch(ptr)).toBe(-1);
    expect(r.stats().migratedBack).toBe(PMD_PAGES);
  });

  it('migrate_anon_huge_err', () => {
    // Part 1: the device's huge allocation fails (HMM_DMIRROR_FLAG_FAIL_ALLOC), so the THP is split
    // and migrates as base pages; faulting one page back brings back just that page.
    const { r: r1, d } = collapsedThp();
    let ptr = ints(r1);
    mirrorFlags(d, HMM_DMIRROR_FLAG_FAIL_ALLOC);
    let res = mirrorMigrate(r1, 0, PMD_PAGES, d);
    expect(res.cpages).toBe(PMD_PAGES);
    expect(firstIntMismatchIn(res.data)).toBe(-1);
    expect(mirrorSnapshot(r1, 0, 1, d)[0] & HMM_DMIRROR_PROT_PMD).toBe(0); // beyond the kernel test
    // Try faulting back a single (PAGE_SIZE) page.
    expect(ptr[2048]).toBe(2048);
    expect(d.used).toBe(PMD_PAGES - 1);

    // Part 2 ("unmap and remap the region to reset things"): the THP migrates whole, and the CPU
    // side's huge allocation is made to fail on the way back, which splits it.
    const { r: r2, d: d2 } = collapsedThp();
    ptr = ints(r2);
    res = mirrorMigrate(r2, 0, PMD_PAGES, d2);
    expect(res.cpages).toBe(PMD_PAGES);
    expect(mirrorSnapshot(r2, 0, 1, d2)[0] & HMM_DMIRROR_PROT_PMD).toBe(HMM_DMIRROR_PROT_PMD);
    mirrorFlags(d2, HMM_DMIRROR_FLAG_FAIL_ALLOC);
    expect(mirrorMigrateToSys(r2, 0, PMD_PAGES, d2).cpages).toBe(PMD_PAGES);
    expect(ptr[2048]).toBe(2048);
    expect(firstIntMismatch(ptr)).toBe(-1);
    expect(d2.used).toBe(0);
  });

  it('migrate_anon_huge_err: a split on the fault path (beyond the kernel test)', () => {
    // The fault-path twin of part 2: a CPU fault on a huge entry whose huge allocation fails
    // brings back only the faulting page, and the rest stays on the device as base entries.
    const { r, d, ptr } = collapsedThp();
    expect(r.migrate(0, PMD_PAGES, d)).toBe(PMD_PAGES);
    d.failNextHugeAllocation();
    expect(ptr[2048]).toBe(2048);
    expect(d.used).toBe(PMD_PAGES - 1);
    expect(mirrorSnapshot(r, 0, 1, d)[0]).toBe(HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE);
    expect(firstIntMismatch(ptr)).toBe(-1);
    expect(d.used).toBe(0);
  });

  it('migrate_anon_huge_zero_err', () => {
    // Part 1: a never-touched PROT_READ PMD, FAIL_ALLOC, migrate: zeroes on the device; one page
    // faults back as zero. (The kernel migrates an empty PMD as a huge device page, which the flag
    // splits; here an empty PMD always migrates as base pages, so the flag stays unused.)
    const r1 = track(Region.map({ pages: PMD_PAGES, servicer, thp: true }));
    const d = track(new Device({ capacity: 2 * PMD_PAGES }));
    r1.mprotect(0, PMD_PAGES, 'read');
    mirrorFlags(d, HMM_DMIRROR_FLAG_FAIL_ALLOC);
    let res = mirrorMigrate(r1, 0, PMD_PAGES, d);
    expect(res.cpages).toBe(PMD_PAGES);
    expect(res.data.every((b) => b === 0)).toBe(true);
    expect(ints(r1)[2048]).toBe(0);

    // Part 2: the zero page mapped by a read, FAIL_ALLOC, migrate, fault everything back.
    const r2 = track(Region.map({ pages: PMD_PAGES, servicer, thp: true }));
    r2.mprotect(0, PMD_PAGES, 'read');
    const ptr = ints(r2);
    expect(ptr[0]).toBe(0);
    mirrorFlags(d, HMM_DMIRROR_FLAG_FAIL_ALLOC);
    res = mirrorMigrate(r2, 0, PMD_PAGES, d);
    expect(res.cpages).toBe(PMD_PAGES);
    for (let i = 0; i < ptr.length; i++) if (ptr[i] !== 0) expect.fail(`int ${i} is ${ptr[i]}`);
  });
});
