// hmm-tests.c's device-access cases ported to uffd-hmm: open_close, the dmirror READ/WRITE cases on
// anonymous memory (anon_read*, anon_write*, anon_teardown) and two devices reading one range (double_map).
import { Worker } from 'node:worker_threads';
import { expect, it } from 'vitest';
import {
  Device,
  HMM_DMIRROR_PROT_NONE,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  HMM_DMIRROR_PROT_ZERO,
  Region,
} from 'uffd-hmm';
import { mirrorMigrate, mirrorRead, mirrorWrite } from 'uffd-hmm';
import { describeUffd } from '../helpers.js';
import { INTS, NPAGES, NTIMES, PMD_PAGES, fillInts, firstIntMismatch, firstIntMismatchIn, intBytes, ints, track } from './fixtures/common.js';

// The dmirror ioctls fault pages in from the kernel side (hmm_range_fault): that needs a servicer
// that can serve kernel-mode faults, so the default one, 'worker', serves every case here.
const servicer = 'worker';


describeUffd('hmm-tests.c: device access to anonymous memory', () => {
  it('open_close', async () => {
    // The fixture opens /dev/hmm_dmirror0 and asserts close() succeeds. Here: devices and regions
    // open and close cleanly, many at once, and are unusable afterwards.
    const devices = Array.from({ length: 8 }, (_, i) => new Device({ capacity: 16, name: `dmirror${i}` }));
    const regions = Array.from({ length: 8 }, () => Region.map({ pages: 4, servicer }));
    for (const r of regions) await r.close();
    for (const d of devices) await d.close();
    for (const d of devices) {
      expect(d.closed).toBe(true);
      expect(() => d.read(0)).toThrow(expect.objectContaining({ code: 'ERR_DEVICE_CLOSED' }));
    }
    for (const r of regions) expect(r.closed).toBe(true);
  });

  it('anon_read', () => {
    const r = track(Region.map({ pages: NPAGES, servicer }));
    const d = track(new Device({ capacity: NPAGES }));
    const ptr = ints(r);
    // Leave the first two pages zero (pte_none and pfn_zero); ptr[i] = i for the rest.
    for (let i = 2 * INTS; i < ptr.length; i++) ptr[i] = i;
    r.mprotect(0, NPAGES, 'read');
    expect(ptr[INTS]).toBe(0); // populates page 1 with the zero page
    expect([...r.snapshot(0, 2)]).toEqual([HMM_DMIRROR_PROT_NONE, HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ]);

    const res = mirrorRead(r, 0, NPAGES, d);
    expect(res.cpages).toBe(NPAGES);
    expect(res.faults).toBe(1);
    const got = new Int32Array(res.data.buffer);
    for (let i = 0; i < 2 * INTS; i++) if (got[i] !== 0) expect.fail(`device read ${got[i]} at int ${i}, want 0`);
    for (let i = 2 * INTS; i < got.length; i++) if (got[i] !== i) expect.fail(`device read ${got[i]} at int ${i}, want ${i}`);
    // The read faulted page 0 in through the CPU page table, as hmm_range_fault does: the zero page.
    expect(r.snapshot(0, 1)[0]).toBe(HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ);
  });

  it('anon_read_prot', () => {
    const r = track(Region.map({ pages: NPAGES, servicer }));
    const d = track(new Device({ capacity: NPAGES }));
    const ptr = ints(r);
    fillInts(ptr);
    r.mprotect(0, NPAGES, 'none');
    // PROT_NONE: the device read fails with EFAULT and hands back no data.
    expect(() => mirrorRead(r, 0, NPAGES, d)).toThrow(expect.objectContaining({ code: 'EFAULT', errno: -14 }));
    r.mprotect(0, NPAGES, 'read');
    expect(firstIntMismatch(ptr)).toBe(-1);
  });

  it('anon_write', () => {
    const r = track(Region.map({ pages: NPAGES, servicer }));
    const d = track(new Device({ capacity: NPAGES }));
    const res = mirrorWrite(r, 0, NPAGES, d, intBytes(NPAGES));
    expect(res.cpages).toBe(NPAGES);
    expect(res.faults).toBe(1);
    expect(firstIntMismatch(ints(r))).toBe(-1);
  });

  it('anon_write_prot', () => {
    const r = track(Region.map({ pages: NPAGES, servicer }));
    const d = track(new Device({ capacity: NPAGES }));
    r.mprotect(0, NPAGES, 'read'); // mmap(PROT_READ)
    // The device reads a zero page of memory.
    const read = mirrorRead(r, 0, 1, d);
    expect(read.cpages).toBe(1);
    expect(read.faults).toBe(1);
    expect(r.snapshot(0, 1)[0]).toBe(HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ);

    const data = intBytes(NPAGES);
    expect(() => mirrorWrite(r, 0, NPAGES, d, data)).toThrow(expect.objectContaining({ code: 'EPERM', errno: -1 }));
    const ptr = ints(r);
    for (let i = 0; i < ptr.length; i++) if (ptr[i] !== 0) expect.fail(`int ${i} is ${ptr[i]} after a refused write`);

    // Now allow writing and see that the zero page is replaced.
    r.mprotect(0, NPAGES, 'readwrite');
    const res = mirrorWrite(r, 0, NPAGES, d, data);
    expect(res.cpages).toBe(NPAGES);
    expect(res.faults).toBe(1);
    expect(firstIntMismatch(ptr)).toBe(-1);
    expect(r.snapshot(0, 1)[0]).toBe(HMM_DMIRROR_PROT_WRITE);
  });

  it('anon_write_huge', () => {
    // The kernel writes one PMD-sized, PMD-aligned MADV_HUGEPAGE range. Our regions are 4 KiB-only
    // (userfaultfd never installs a THP): same size, same assertions, on base pages.
    const r = track(Region.map({ pages: PMD_PAGES, servicer }));
    const d = track(new Device({ capacity: PMD_PAGES }));
    const res = mirrorWrite(r, 0, PMD_PAGES, d, intBytes(PMD_PAGES));
    expect(res.cpages).toBe(PMD_PAGES);
    expect(res.faults).toBe(1);
    expect(firstIntMismatch(ints(r))).toBe(-1);
  });

  it('anon_read_multiple', async () => {
    const d = track(new Device({ capacity: NPAGES }));
    for (let c = 0; c < NTIMES; c++) {
      const r = Region.map({ pages: NPAGES, servicer });
      try {
        fillInts(ints(r), c);
        const res = mirrorRead(r, 0, NPAGES, d);
        expect(res.cpages).toBe(NPAGES);
        expect(res.faults).toBe(1);
        expect(firstIntMismatchIn(res.data, c)).toBe(-1);
      } finally {
        await r.close();
      }
    }
  });

  it('anon_teardown', async () => {
    // A second thread munmaps half the buffer a random few microseconds into the device's read of
    // it. The read either completes before the unmap (then the data is right) or fails with EFAULT;
    // it never crashes and never returns wrong bytes.
    const d = track(new Device({ capacity: NPAGES }));
    const sab = new SharedArrayBuffer(8 * 4);
    const ctl = new Int32Array(sab);
    const worker = new Worker(new URL('./fixtures/unmapper.mjs', import.meta.url), { workerData: { sab } });
    const outcomes: string[] = [];
    try {
      for (let c = 0; c < NTIMES; c++) {
        const r = Region.map({ pages: NPAGES, servicer });
        try {
          fillInts(ints(r), c);
          ctl[1] = r.handle;
          ctl[2] = NPAGES / 2;
          ctl[3] = NPAGES / 2;
          ctl[4] = Math.floor(Math.random() * 32_000);
          Atomics.store(ctl, 0, c + 1);
          Atomics.notify(ctl, 0);
          try {
            const res = mirrorRead(r, 0, NPAGES, d);
            expect(res.cpages).toBe(NPAGES);
            expect(res.faults).toBe(1);
            expect(firstIntMismatchIn(res.data, c)).toBe(-1);
            outcomes.push('read');
          } catch (e) {
            expect(e).toMatchObject({ code: 'EFAULT' });
            outcomes.push('EFAULT');
          }
          // pthread_join(), with a deadline.
          const deadline = Date.now() + 10_000;
          while (Atomics.load(ctl, 5) !== c + 1) {
            if (Date.now() > deadline) expect.fail('the unmapping thread did not finish within 10 s');
            Atomics.wait(ctl, 5, Atomics.load(ctl, 5), 50);
          }
          expect(ctl[6]).toBe(0);
          // The half that is still mapped is intact.
          expect(firstIntMismatch(ints(r, 0, NPAGES / 2), c)).toBe(-1);
        } finally {
          await r.close();
        }
      }
    } finally {
      Atomics.store(ctl, 0, -1);
      Atomics.notify(ctl, 0);
      await worker.terminate();
    }
    expect(outcomes.length).toBe(NTIMES);
  });

  it('double_map', () => {
    // TEST_F(hmm2): two devices read the same read-only range, then device 1 takes the pages and
    // device 0 reads them again: hmm_range_fault migrates another device's pages back to do so.
    const npages = 6;
    const r = track(Region.map({ pages: npages, servicer }));
    const d0 = track(new Device({ capacity: npages, name: 'dmirror0' }));
    const d1 = track(new Device({ capacity: npages, name: 'dmirror1' }));
    fillInts(ints(r));
    r.mprotect(0, npages, 'read');

    for (const d of [d0, d1]) {
      const res = mirrorRead(r, 0, npages, d);
      expect(res.cpages).toBe(npages);
      expect(res.faults).toBe(1);
      expect(firstIntMismatchIn(res.data)).toBe(-1);
    }

    const mig = mirrorMigrate(r, 0, npages, d1);
    expect(mig.cpages).toBe(npages);
    // Read-only vma: read device entries.
    for (let p = 0; p < npages; p++) expect(r.entry(p)).toMatchObject({ kind: 'device', device: d1, write: false });
    // Not in the kernel test: device 1, their owner, reads them in its own memory, where they stay.
    const own = mirrorRead(r, 0, npages, d1);
    expect(firstIntMismatchIn(own.data)).toBe(-1);
    expect(d1.used).toBe(npages);
    expect(r.stats().migratedBack).toBe(0);

    const res = mirrorRead(r, 0, npages, d0);
    expect(res.cpages).toBe(npages);
    expect(res.faults).toBe(1);
    expect(firstIntMismatchIn(res.data)).toBe(-1);
    // Device 0 is not their owner: reading them brought every page back to system memory.
    for (let p = 0; p < npages; p++) expect(r.entry(p)).toEqual({ kind: 'present', write: false });
    expect(d1.used).toBe(0);
    expect(d1.stats().faults).toBe(npages);
  });
});
