// A multi-page UFFDIO_COPY may stop partway (mfill_atomic: EAGAIN, with uffdio_copy.copy saying how
// far it got, that prefix filled and, without DONTWAKE, woken). The engine keeps what the kernel
// filled and takes back only the rest, for a fault-around run, a huge entry and the main thread's
// migration back. The test hook testCutCopy (native/test_hooks.cc) makes the next such copy stop.
import { expect, it } from 'vitest';
import { Device, PM_PRESENT, Region } from 'uffd-hmm';
import { native } from '../dist/native.js';
import { STAT_FILL_RACED, STAT_FILL_RETRIES } from '../dist/layout.js';
import { SERVICERS, checkPages, closeAfterEach, describeUffd, fillPages, pattern } from './helpers.js';

const N = 512; // 4 KiB pages per PMD
const track = closeAfterEach();
const stat = (r: Region, index: number): number => Atomics.load((r as unknown as { shared: Int32Array }).shared, index);
const pfnOf = (r: Region, p: number): number => (r.entry(p) as { pfn: number }).pfn;
/** Whether the kernel's own pagemap (not region.pagemap, which shows the table's device entries) has a page there. */
function present(r: Region, p: number): boolean {
  const out = new BigUint64Array(1);
  native.regionPagemap(r.handle, p, 1, out);
  return (out[0] & PM_PRESENT) !== 0n;
}

describeUffd('a partial multi-page UFFDIO_COPY', () => {
  for (const servicer of SERVICERS) {
    for (const traced of servicer === 'inline' ? [false] : [false, true]) {
      it(`${servicer}${traced ? ' (traced)' : ''}: a fault-around run cut after 2 of 4 pages keeps those 2 and takes back the rest`, () => {
        const r = track(Region.map({ pages: 8, servicer, faultAround: 4 }));
        const d = track(new Device({ capacity: 8 }));
        if (traced) r.trace();
        fillPages(r, 0, 8, 5);
        expect(r.migrate(0, 8, d, { write: false })).toBe(8);
        const pfns = [0, 1, 2, 3].map((p) => pfnOf(r, p));
        const s0 = r.stats();
        native.testCutCopy(r.handle, 2);
        void r.bytes[9]; // page 0: the run 0-3 comes back filled up to page 1
        expect([0, 1, 2, 3].map((p) => r.entry(p).kind)).toEqual(['present', 'present', 'device', 'device']);
        expect([0, 1, 2, 3].map((p) => present(r, p))).toEqual([true, true, false, false]);
        expect(pfns.map((pfn) => d.refcount(pfn))).toEqual([0, 0, 1, 1]);
        expect(d.used).toBe(6);
        expect({ faults: r.stats().faults - s0.faults, migratedBack: r.stats().migratedBack - s0.migratedBack }).toEqual({ faults: 1, migratedBack: 2 });
        // A read entry came back write-protected: its first write is one WP fault, not a livelock.
        r.bytes[5] = 0xab;
        expect(r.entry(0)).toEqual({ kind: 'present', write: true });
        r.bytes[5] = pattern(0, 5, 5);
        expect(checkPages(r, 0, 8, 5)).toBeNull();
        expect(d.used).toBe(0);
      });
    }

    it(`${servicer}: a huge entry's copy cut after 2 pages keeps them, and the faulting page comes back alone`, () => {
      const r = track(Region.map({ pages: N, servicer, thp: true }));
      fillPages(r, 0, N);
      r.collapse(0, N);
      const d = track(new Device({ capacity: N }));
      expect(r.migrate(0, N, d)).toBe(N);
      const pfn0 = pfnOf(r, 0);
      native.testCutCopy(r.handle, 2);
      void r.bytes[300 * r.pageSize]; // the block's COPY fills pages 0-1, then page 300 alone
      expect([0, 1, 2, 299, 300, 301].map((p) => r.entry(p).kind)).toEqual(['present', 'present', 'device', 'device', 'present', 'device']);
      expect([0, 1, 2].map((p) => d.refcount(pfn0 + p))).toEqual([0, 0, 1]);
      expect(d.refcount(pfn0 + 300)).toBe(0);
      expect(d.used).toBe(N - 3);
      expect(r.stats().migratedBack).toBe(3);
      expect(checkPages(r, 0, N)).toBeNull();
      expect(d.used).toBe(0);
    });

    it(`${servicer}: a fill the kernel made but nobody counted (EEXIST on a device entry) becomes what the kernel has`, () => {
      // The count lost (testCutCopy's third argument): the table still says device where the kernel
      // has a page. The next fault there (a write to a read entry, here) finds EEXIST, and the
      // entry becomes the present page: no WP fault served as "already there" for ever.
      const r = track(Region.map({ pages: 4, servicer, faultAround: 4 }));
      const d = track(new Device({ capacity: 4 }));
      fillPages(r, 0, 4, 9);
      expect(r.migrate(0, 4, d, { write: false })).toBe(4);
      native.testCutCopy(r.handle, 2, false);
      void r.bytes[0];
      expect(r.entry(0).kind).toBe('present');
      expect(present(r, 1)).toBe(true);
      r.bytes[r.pageSize + 3] = 0x5a; // page 1: present but write-protected in the kernel
      expect(r.entry(1)).toEqual({ kind: 'present', write: true });
      r.bytes[r.pageSize + 3] = pattern(1, 3, 9);
      expect(checkPages(r, 0, 4, 9)).toBeNull();
      expect(d.used).toBe(0);
    });
  }

  for (const servicer of SERVICERS) {
    it(`${servicer}: a fault-around run across a vma boundary (ENOENT) falls back to the faulting page, and frees its own device page`, () => {
      const r = track(Region.map({ pages: 8, servicer, faultAround: 8 }));
      const d = track(new Device({ capacity: 8 }));
      fillPages(r, 0, 8, 6);
      expect(r.migrate(0, 8, d, { write: false })).toBe(8);
      const pfns = [...Array(8).keys()].map((p) => pfnOf(r, p));
      r.mprotect(4, 4, 'read'); // two vmas: the run 2-7 crosses their boundary
      expect(r.bytes[2 * r.pageSize + 1]).toBe(pattern(2, 1, 6));
      expect(r.entry(2)).toEqual({ kind: 'present', write: false });
      expect(pfns.map((pfn) => d.refcount(pfn))).toEqual([1, 1, 0, 1, 1, 1, 1, 1]);
      expect(d.used).toBe(7);
      expect(checkPages(r, 0, 8, 6)).toBeNull();
      expect(d.used).toBe(0);
    });
  }

  it("the main thread's migration back across a vma boundary goes page by page, and after an uncounted cut takes what is there", () => {
    const r = track(Region.map({ pages: 8, servicer: 'native' }));
    const d = track(new Device({ capacity: 8 }));
    fillPages(r, 0, 8, 8);
    expect(r.migrate(0, 8, d, { write: false })).toBe(8);
    r.mprotect(3, 5, 'read');
    expect(r.migrateToRam(0, 8)).toBe(8);
    expect(d.used).toBe(0);
    expect(checkPages(r, 0, 8, 8)).toBeNull();
    r.mprotect(0, 8, 'readwrite');
    const d2 = track(new Device({ capacity: 8 })); // fresh: consecutive pfns again, one run
    expect(r.migrate(0, 8, d2)).toBe(8);
    const raced = stat(r, STAT_FILL_RACED);
    native.testCutCopy(r.handle, 3, false); // fills 0-2, says nothing: the retry finds them there
    expect(r.migrateToRam(0, 8)).toBe(8);
    expect(stat(r, STAT_FILL_RACED) - raced).toBe(3);
    for (let p = 0; p < 8; p++) expect(r.entry(p)).toEqual({ kind: 'present', write: false });
    expect(d2.used).toBe(0);
    expect(checkPages(r, 0, 8, 8)).toBeNull();
  });

  it("the main thread's migration back cut after 3 of 8 pages goes on from there, without a retry", () => {
    const r = track(Region.map({ pages: 8, servicer: 'native' }));
    const d = track(new Device({ capacity: 8 }));
    fillPages(r, 0, 8, 7);
    expect(r.migrate(0, 8, d)).toBe(8);
    const [retries, raced] = [stat(r, STAT_FILL_RETRIES), stat(r, STAT_FILL_RACED)];
    native.testCutCopy(r.handle, 3);
    expect(r.migrateToRam(0, 8)).toBe(8);
    expect({ retries: stat(r, STAT_FILL_RETRIES) - retries, raced: stat(r, STAT_FILL_RACED) - raced }).toEqual({ retries: 0, raced: 0 });
    for (let p = 0; p < 8; p++) expect(r.entry(p)).toEqual({ kind: 'present', write: true });
    expect(d.used).toBe(0);
    expect(checkPages(r, 0, 8, 7)).toBeNull();
  });
});
