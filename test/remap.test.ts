// mremap (S-remap): region.remap moves the mapping; device entries and data follow to the new
// address (EVENT_REMAP), faults there are served, the old bytes view is detached.
import { expect, it } from 'vitest';
import { Device, Region } from 'uffd-hmm';
import { native } from '../dist/native.js';
import { checkPages, describeUffd, fillPages } from './helpers.js';

describeUffd.each(['worker', 'native'] as const)('remap with the %s servicer', (servicer) => {
  it('moves device entries and data to the new address, then faults them there (migrate_remap_fault)', async () => {
    const r = Region.map({ pages: 8, servicer });
    const d = new Device({ capacity: 16 });
    fillPages(r, 0, 8, 6);
    r.migrate(0, 6, d);
    const oldBytes = r.bytes;
    const oldAddress = r.address;
    r.remap(12);
    expect(r.pages).toBe(12);
    expect(r.address).not.toBe(oldAddress);
    expect(oldBytes.length).toBe(0);
    expect(r.bytes.length).toBe(12 * r.pageSize);
    for (let p = 0; p < 6; p++) expect(r.entry(p).kind).toBe('device');
    expect(d.used).toBe(6);
    const before = r.stats().migratedBack;
    expect(checkPages(r, 0, 8, 6)).toBeNull(); // faults at the new address migrate pages back
    expect(r.stats().migratedBack - before).toBe(6);
    expect(r.bytes.subarray(8 * r.pageSize).every((b) => b === 0)).toBe(true);
    r.bytes[11 * r.pageSize] = 3;
    expect(r.migrate(0, 12, d)).toBe(12);
    expect(checkPages(r, 0, 8, 6)).toBeNull();
    await r.close();
    expect(d.used).toBe(0);
    await d.close();
  });

  it('shrinking drops the device references of the pages cut off', async () => {
    const r = Region.map({ pages: 8, servicer });
    const d = new Device({ capacity: 8 });
    fillPages(r, 0, 8, 7);
    r.migrate(0, 8, d);
    r.remap(3);
    expect(d.used).toBe(3);
    expect(d.stats().freed).toBe(5);
    expect(() => r.entry(3)).toThrow(RangeError);
    expect(checkPages(r, 0, 3, 7)).toBeNull();
    await r.close();
    await d.close();
  });
});

describeUffd.each(['worker', 'native'] as const)('remap of a region mprotect split, with the %s servicer', (servicer) => {
  it('growing it or keeping its size fails as mremap across vmas does (EFAULT), saying why; nothing changes', async () => {
    const r = Region.map({ pages: 4, servicer });
    const d = new Device({ capacity: 4 });
    fillPages(r, 0, 4, 9);
    r.migrate(0, 2, d);
    r.mprotect(2, 1, 'read'); // three vmas now: [0, 2), [2], [3]
    const address = r.address;
    for (const pages of [8, 4]) {
      let e: unknown;
      try {
        r.remap(pages);
      } catch (x) {
        e = x;
      }
      expect(e, `remap(${pages})`).toMatchObject({ name: 'SystemError', code: 'EFAULT', errno: -14, syscall: 'mremap' });
      expect((e as Error).message).toMatch(/^mremap failed: EFAULT \(moving a region of 4 pages to \d pages\): the region is no longer one mapping/);
      expect((e as Error).message).not.toMatch(/please report/);
    }
    expect(r.address).toBe(address);
    expect(r.pages).toBe(4);
    expect(r.entry(0)).toMatchObject({ kind: 'device' });
    expect(checkPages(r, 0, 4, 9)).toBeNull();
    r.remap(2); // the first vma alone: what mremap can move
    expect(r.pages).toBe(2);
    expect(checkPages(r, 0, 2, 9)).toBeNull();
    await r.close();
    await d.close();
  });

  it('a split made behind the library\'s back: the kernel refuses, and the addon says why the same way', async () => {
    const r = Region.map({ pages: 4, servicer });
    expect(native.regionMprotect(r.handle, 1, 1, 1)).toBe(0); // PROT_READ, bypassing region.mprotect
    expect(() => r.remap(8)).toThrow(expect.objectContaining({ code: 'EFAULT', syscall: 'mremap', message: expect.stringMatching(/: the region is no longer one mapping/) }));
    expect(r.pages).toBe(4);
    native.regionMprotect(r.handle, 1, 1, 3);
    await r.close();
  });

  it('works again once the region has one protection', async () => {
    const r = Region.map({ pages: 4, servicer });
    fillPages(r, 0, 4, 10);
    r.mprotect(2, 1, 'read');
    r.mprotect(2, 1, 'readwrite'); // the kernel merges the vmas back
    r.remap(6);
    expect(checkPages(r, 0, 4, 10)).toBeNull();
    await r.close();
  });
});

describeUffd('remap on an inline region', () => {
  it('is refused with a code: no thread reads EVENT_REMAP there', async () => {
    const r = Region.map({ pages: 2, servicer: 'inline' });
    expect(() => r.remap(4)).toThrow(expect.objectContaining({ code: 'ERR_SERVICER_UNSUPPORTED' }));
    r.bytes[0] = 1;
    expect(r.bytes[0]).toBe(1);
    await r.close();
  });
});
