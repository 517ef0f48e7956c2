// hmm-tests.c's fork cases ported to uffd-hmm: a child writing its copy of a private mapping with
// and without pages on the device (anon_write_child), and copy-on-write of device pages (hmm_cow_in_device).
import { expect, it } from 'vitest';
import { Device, HMM_DMIRROR_PROT_WRITE, Region, type ChildStep } from 'uffd-hmm';
import { mirrorMigrate, mirrorSnapshot } from 'uffd-hmm';
import { describeUffd } from '../helpers.js';
import { NPAGES, PMD_PAGES, crc32, fillInts, firstIntMismatch, ints, until } from './fixtures/common.js';

// region.fork needs EVENT_FORK, which 'worker' (the default) and 'native' read. The kernel runs
// each case under two fixture variants (device types); ours run each case under both servicers.
const SERVICERS = ['worker', 'native'] as const;

describeUffd('hmm-tests.c: fork', () => {
  it('anon_write_child', async () => {
    // The kernel's child opens its own mirror and has it write -i over the buffer. A forked Node
    // process cannot run JS, so the child's writes are native steps: one byte per page, which
    // faults every page in for writing in the child exactly as the device's hmm_range_fault would.
    const MARK = 0xa5; // byte 0 of every page holds 0 in the `ptr[i] = i` pattern
    for (const servicer of SERVICERS) for (const migrate of [false, true]) {
      // use_thp: a PMD-sized range (4 KiB pages: userfaultfd never maps a THP).
      for (const npages of [NPAGES, PMD_PAGES]) {
        const r = Region.map({ pages: npages, servicer });
        const d = new Device({ capacity: npages });
        try {
          const ps = r.pageSize;
          const ptr = ints(r);
          fillInts(ptr);
          const before = r.bytes.slice(0, npages * ps);
          if (migrate) {
            const res = mirrorMigrate(r, 0, npages, d);
            expect(res.cpages).toBe(npages);
          }
          const steps: ChildStep[] = [{ op: 'checksum', first: 0, count: npages }];
          for (let p = 0; p < npages; p++) steps.push({ op: 'write', page: p, offset: 0, value: MARK });
          steps.push({ op: 'checksum', first: 0, count: npages });
          const child = await r.fork(steps);
          expect(child).toMatchObject({ exitCode: 0, signal: null });

          const written = before.slice();
          for (let p = 0; p < npages; p++) written[p * ps] = MARK;
          // The child saw the parent's values, then its own writes.
          expect(child.results[0]).toBe(crc32(before));
          expect(child.results[npages + 1]).toBe(crc32(written));
          // The parent's buffer did not change.
          expect(firstIntMismatch(ptr)).toBe(-1);
          if (migrate) expect(d.used).toBe(0);
        } finally {
          await r.close();
          await d.close();
        }
      }
    }
  });

  it('hmm_cow_in_device', async () => {
    const npages = 4;
    for (const servicer of SERVICERS) {
      const r = Region.map({ pages: npages, servicer });
      const d = new Device({ capacity: npages });
      try {
        const ptr = ints(r);
        fillInts(ptr);
        const before = r.bytes.slice(0, npages * r.pageSize);
        expect(mirrorMigrate(r, 0, npages, d).cpages).toBe(npages);
        const pfn = (r.entry(0) as { pfn: number }).pfn;

        // The kernel's child spins until the parent SIGKILLs it; ours sleeps, then reports what it
        // sees, which must still be the old bytes once the parent has written.
        const child = r.fork([{ op: 'sleep', ms: 1000 }, { op: 'checksum', first: 0, count: npages }]);
        await until(() => d.refcount(pfn) === 2, 'the child to share the device pages');
        // The parent writes its copy-on-write device pages: each migrates back (for both
        // processes) and the parent's write then takes its own copy.
        for (let i = 0; i < ptr.length; i++) ptr[i] = ~i;
        const res = await child;
        expect(res).toMatchObject({ exitCode: 0, signal: null });
        expect(res.results[1]).toBe(crc32(before));

        const m = mirrorSnapshot(r, 0, npages, d);
        expect([...m]).toEqual(new Array(npages).fill(HMM_DMIRROR_PROT_WRITE));
        for (let i = 0; i < ptr.length; i++) if (ptr[i] !== ~i) expect.fail(`int ${i} is ${ptr[i]}, want ${~i}`);
        expect(d.used).toBe(0);
      } finally {
        await r.close();
        await d.close();
      }
    }
  });
});
