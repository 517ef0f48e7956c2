// Fault-around: one fault on a device entry brings back the following pages whose entries name the
// following device pages, in one UFFDIO_COPY; everything else (other devices, other kinds, pages
// mapped twice after fork) still comes back one fault at a time.
import { expect, it } from 'vitest';
import { Device, Region } from 'uffd-hmm';
import { SERVICERS, checkPages, describeUffd, fillPages, pattern } from './helpers.js';

describeUffd.each(SERVICERS)('fault-around with the %s servicer', (servicer) => {
  it('migrates back a run of neighbours on one fault, with exact stats', async () => {
    const r = Region.map({ pages: 40, servicer, faultAround: 16 });
    const d = new Device({ capacity: 64 });
    fillPages(r, 0, 40, 12);
    expect(r.migrate(0, 40, d)).toBe(40);
    const s0 = r.stats();
    expect(r.bytes[0]).toBe(pattern(0, 0, 12)); // the first touch brings pages 0-15 back
    for (let p = 0; p < 16; p++) expect(r.entry(p)).toEqual({ kind: 'present', write: true });
    expect(r.entry(16).kind).toBe('device');
    expect(r.stats().faults - s0.faults).toBe(1);
    expect(r.stats().migratedBack - s0.migratedBack).toBe(16);
    expect(d.used).toBe(24);
    expect(d.stats().migratedToRam).toBe(16);
    expect(checkPages(r, 0, 40, 12)).toBeNull();
    expect(r.stats().faults - s0.faults).toBe(3); // 0-15, 16-31, 32-39
    expect(d.used).toBe(0);
    await r.close();
    await d.close();
  });

  it('stops at a page of another kind, another device, or a non-consecutive device page', async () => {
    const r = Region.map({ pages: 12, servicer, faultAround: 8 });
    const d = new Device({ capacity: 16 });
    const e = new Device({ capacity: 16 });
    fillPages(r, 0, 12, 13);
    r.migrate(0, 3, d); // pfns 0-2
    r.migrate(3, 1, d, { write: false }); // read entry: another kind
    r.migrate(4, 2, e); // another device
    r.migrate(6, 2, d); // pfns 4-5, after a read entry's pfn 3
    const s0 = r.stats();
    void r.bytes[0];
    expect(r.stats().migratedBack - s0.migratedBack).toBe(3);
    expect(r.entry(3)).toMatchObject({ kind: 'device', write: false });
    void r.bytes[3 * r.pageSize];
    expect(r.stats().migratedBack - s0.migratedBack).toBe(4);
    expect(r.entry(4).kind).toBe('device');
    expect(checkPages(r, 0, 12, 13)).toBeNull();
    expect(r.stats().faults - s0.faults).toBe(4); // 0-2, 3, 4-5, 6-7 (pages 8-11 never left RAM)
    await r.close();
    await d.close();
    await e.close();
  });
});
