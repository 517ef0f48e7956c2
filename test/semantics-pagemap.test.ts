// S6 pagemap (pte_to_pagemap_entry): region.pagemap shows device entries as the seed kernel would,
// PM_SWAP | swp_type | pfn << 5, and present or never-touched pages exactly as /proc/self/pagemap does.
import { closeSync, openSync, readSync } from 'node:fs';
import { expect, it } from 'vitest';
import {
  Device,
  PM_FILE,
  PM_MMAP_EXCLUSIVE,
  PM_PRESENT,
  PM_SOFT_DIRTY,
  PM_SWAP,
  PM_UFFD_WP,
  Region,
  SWP_DEVICE,
  SWP_DEVICE_WRITE,
  makeDeviceEntry,
  swpOffset,
  swpType,
} from 'uffd-hmm';
import { checkPages, closeAfterEach, describeUffd, fillPages, SERVICERS } from './helpers.js';

const track = closeAfterEach();

const FRAME = (1n << 55n) - 1n;

/** The kernel's own /proc/self/pagemap words for pages of the region, read independently of the library. */
function rawPagemap(r: Region, first: number, count: number): BigUint64Array {
  const out = new BigUint64Array(count);
  const fd = openSync('/proc/self/pagemap', 'r');
  try {
    const at = Number(r.address / BigInt(r.pageSize) + BigInt(first)) * 8;
    expect(readSync(fd, new Uint8Array(out.buffer), 0, count * 8, at)).toBe(count * 8);
  } finally {
    closeSync(fd);
  }
  return out;
}

/** The word the seed kernel's pte_to_pagemap_entry gives a device entry mapped by one process. */
function deviceWord(pfn: number, write: boolean): bigint {
  const type = BigInt(write ? SWP_DEVICE_WRITE : SWP_DEVICE);
  return PM_SWAP | PM_MMAP_EXCLUSIVE | type | (BigInt(pfn) << 5n);
}

describeUffd.each(SERVICERS)('pagemap with the %s servicer', (servicer) => {
  const map = (pages: number) => track(Region.map({ pages, servicer }));

  it('device entries read as PM_SWAP | PM_MMAP_EXCLUSIVE | type | pfn << 5, bit for bit', () => {
    // 600 pages so pfns need more than the 5 type bits below them; migrated out of order so a
    // page's index and its pfn differ (pages 100-599 get pfns 0-499, pages 0-99 get 500-599).
    const r = map(600);
    const d = track(new Device({ capacity: 600 }));
    expect(r.migrate(100, 500, d)).toBe(500);
    expect(r.migrate(0, 100, d, { write: false })).toBe(100);
    const pm = r.pagemap();
    for (let p = 0; p < 600; p++) {
      const want = p < 100 ? { pfn: 500 + p, write: false } : { pfn: p - 100, write: true };
      expect(r.entry(p)).toMatchObject({ kind: 'device', ...want });
      expect(pm[p], `page ${p}`).toBe(deviceWord(want.pfn, want.write));
      // The frame field is the seed's swp_type | swp_offset << MAX_SWAPFILES_SHIFT of the entry.
      const e = makeDeviceEntry(want.pfn, want.write);
      expect(pm[p] & FRAME).toBe(BigInt(swpType(e)) | (BigInt(swpOffset(e)) << 5n));
    }
    // Spot-check the flag bits one by one, so a failure says which one.
    expect(pm[0] & PM_PRESENT).toBe(0n);
    expect(pm[0] & PM_FILE).toBe(0n);
    expect(pm[0] & PM_SOFT_DIRTY).toBe(0n);
    expect(pm[0] & PM_UFFD_WP).toBe(0n);
    expect(pm[0] & PM_SWAP).toBe(PM_SWAP);
    expect(pm[0] & PM_MMAP_EXCLUSIVE).toBe(PM_MMAP_EXCLUSIVE);
    expect(pm[599] & 31n).toBe(BigInt(SWP_DEVICE_WRITE));
    expect(pm[599] >> 5n & ((1n << 50n) - 1n)).toBe(499n);
    // The CPU has no page behind any of them: the kernel itself reports 600 holes.
    expect(rawPagemap(r, 0, 600).every((w) => w === 0n)).toBe(true);
  });

  it('a page moved device to device shows the new pfn; a hole migrated shows a zeroed device page', () => {
    const r = map(3);
    const d0 = track(new Device({ capacity: 4, name: 'd0' }));
    const d1 = track(new Device({ capacity: 4, name: 'd1' }));
    fillPages(r, 0, 3);
    r.migrate(2, 1, d1); // takes pfn 0 of d1, so the moved page lands on pfn 1 (visibly different)
    r.migrate(0, 1, d0);
    expect(r.pagemap(0, 1)[0]).toBe(deviceWord(0, true));
    r.migrate(0, 1, d1);
    expect(r.entry(0)).toMatchObject({ kind: 'device', device: d1, pfn: 1 });
    expect(r.pagemap(0, 1)[0]).toBe(deviceWord(1, true));
    expect(d0.used).toBe(0);
    // Page 1, discarded to a never-touched hole, migrates as a zeroed device page and reads as its entry.
    r.discard(1, 1);
    expect(r.pagemap(1, 1)[0]).toBe(0n);
    r.migrate(1, 1, d0);
    expect(r.pagemap(1, 1)[0]).toBe(deviceWord(0, true));
    expect(d0.read(0).every((b) => b === 0)).toBe(true);
  });

  it('present pages show the kernel word: PM_PRESENT with the real frame, exclusive, never file or swap', () => {
    const r = map(8);
    const d = track(new Device({ capacity: 8 }));
    fillPages(r, 0, 8, 2);
    r.migrate(0, 4, d, { write: false }); // pages 0-3 as read entries
    r.migrate(4, 2, d); // pages 4-5 as write entries
    expect(checkPages(r, 0, 8, 2)).toBeNull(); // fault all of them back
    const pm = r.pagemap(0, 8);
    // Merged view and the kernel agree word for word once every page is a CPU page again.
    expect([...pm]).toEqual([...rawPagemap(r, 0, 8)]);
    const frames = new Set<bigint>();
    for (let p = 0; p < 8; p++) {
      expect(pm[p] & (PM_PRESENT | PM_SWAP | PM_FILE | PM_MMAP_EXCLUSIVE)).toBe(PM_PRESENT | PM_MMAP_EXCLUSIVE);
      // Read entries came back through UFFDIO_COPY_MODE_WP: the kernel marks them uffd-wp.
      expect(pm[p] & PM_UFFD_WP, `page ${p}`).toBe(p < 4 ? PM_UFFD_WP : 0n);
      frames.add(pm[p] & FRAME);
    }
    // Root sees real page frame numbers (others see 0): eight distinct pages, eight frames.
    if (process.getuid?.() === 0) {
      expect(frames.size).toBe(8);
      expect(frames.has(0n)).toBe(false);
    } else {
      expect([...frames]).toEqual([0n]);
    }
    // The write-protect fault reuses the same frame (do_wp_page's reuse): only uffd-wp changes.
    const before = pm[0];
    r.bytes[0] ^= 1;
    expect(r.pagemap(0, 1)[0]).toBe(before & ~PM_UFFD_WP);
  });

  it('a never-touched page reads 0, in our view and the kernel’s', () => {
    const r = map(3);
    r.bytes[r.pageSize] = 1; // page 1 touched, 0 and 2 never
    const pm = r.pagemap();
    expect(pm[0]).toBe(0n);
    expect(pm[2]).toBe(0n);
    expect(pm[1] & PM_PRESENT).toBe(PM_PRESENT);
    expect([...pm]).toEqual([...rawPagemap(r, 0, 3)]);
  });
});
