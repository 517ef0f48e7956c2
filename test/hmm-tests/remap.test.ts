// hmm-tests.c's migrate_remap_fault ported to uffd-hmm: mremap a range before or after its pages
// go to the device, then fault them back at the new address (region.remap, MREMAP_MAYMOVE).
import { expect, it } from 'vitest';
import { Device, Region } from 'uffd-hmm';
import { mirrorMigrate } from 'uffd-hmm';
import { describeUffd } from '../helpers.js';
import { PMD_PAGES, fillInts, firstIntMismatch, firstIntMismatchIn, ints } from './fixtures/common.js';

// EVENT_REMAP is read by 'worker' (the default) and 'native'; the kernel's two fixture variants
// become the two servicers.
const SERVICERS = ['worker', 'native'] as const;

describeUffd('hmm-tests.c: mremap', () => {
  it('migrate_remap_fault', async () => {
    // The kernel moves one PMD of memory with MREMAP_MAYMOVE | MREMAP_FIXED to three offsets past
    // it, with and without MREMAP_DONTUNMAP, with and without THP. region.remap(pages) is
    // MREMAP_MAYMOVE to an address of the library's choosing: the target offsets, DONTUNMAP and THP
    // are not expressible (docs/PARITY.md); before/after migration is, and both run.
    const size = PMD_PAGES;
    for (const servicer of SERVICERS) {
      for (const before of [true, false]) {
        const r = Region.map({ pages: size, servicer });
        const d = new Device({ capacity: size });
        try {
          fillInts(ints(r));
          const oldAddress = r.address;
          if (before) r.remap(size);
          const res = mirrorMigrate(r, 0, size, d);
          expect(res.cpages).toBe(size);
          expect(firstIntMismatchIn(res.data)).toBe(-1);
          if (!before) r.remap(size);
          expect(r.address).not.toBe(oldAddress);
          // The device entries moved with the page tables: still on the device, nothing faulted yet.
          expect(d.used).toBe(size);
          expect(r.entry(size - 1)).toMatchObject({ kind: 'device', device: d, write: true });
          // Fault pages back to system memory at the new address and check them.
          const s0 = r.stats();
          expect(firstIntMismatch(ints(r))).toBe(-1);
          expect(r.stats().faults - s0.faults).toBe(size);
          expect(d.used).toBe(0);
        } finally {
          await r.close();
          await d.close();
        }
      }
    }
  });
});
