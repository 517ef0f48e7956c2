// mremap (S-remap): region.remap moves the mapping; device entries and data follow to the new
// address (EVENT_REMAP), faults there are served, the old bytes view is detached.
import { expect, it } from 'vitest';
import { Device, Region } from 'uffd-hmm';
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

describeUffd('remap on an inline region', () => {
  it('is refused with a code: no thread reads EVENT_REMAP there', async () => {
    const r = Region.map({ pages: 2, servicer: 'inline' });
    expect(() => r.remap(4)).toThrow(expect.objectContaining({ code: 'ERR_SERVICER_UNSUPPORTED' }));
    r.bytes[0] = 1;
    expect(r.bytes[0]).toBe(1);
    await r.close();
  });
});
