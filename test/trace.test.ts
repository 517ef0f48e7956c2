// The fault trace: which access faulted, in what order, on which thread, with what outcome,
// recorded by every servicer into a bounded ring that never blocks a fault.
import { expect, it } from 'vitest';
import { Device, NativeToucher, Region } from 'uffd-hmm';
import { SERVICERS, describeUffd, fillPages } from './helpers.js';

describeUffd.each(SERVICERS)('trace with the %s servicer', (servicer) => {
  it('records each fault in order: page, kind, access, thread, device and outcome', async () => {
    const r = Region.map({ pages: 8, servicer });
    const d = new Device({ capacity: 8, name: 'tracer' });
    fillPages(r, 0, 4, 1); // before the trace: not recorded
    r.migrate(0, 2, d); // write entries
    r.migrate(2, 1, d, { write: false }); // a read entry
    const t = r.trace({ capacity: 64 });
    void r.bytes[1 * r.pageSize]; // missing, read, migrated
    r.bytes[2 * r.pageSize] = 5; // missing read entry -> back write-protected, then the write: wp
    void r.bytes[6 * r.pageSize]; // a hole, read: zero page
    const recs = t.records();
    expect(recs.map((x) => [x.page, x.kind, x.write, x.outcome])).toEqual([
      [1, 'missing', false, 'migrated'],
      [2, 'missing', true, 'migrated'],
      [2, 'wp', true, 'unprotected'],
      [6, 'missing', false, 'zero-page'],
    ]);
    expect(recs[0].device).toBe(d);
    expect(recs[3].device).toBeNull();
    expect(recs.map((x) => x.seq)).toEqual([1, 2, 3, 4]);
    for (const x of recs) {
      expect(x.tid).toBe(process.pid); // the JS main thread made every access
      expect(x.serviceUs).toBeGreaterThanOrEqual(0);
      expect(x.serviceUs).toBeLessThan(1_000_000);
      expect(x.kernel).toBe(false);
    }
    expect(recs[1].time).toBeGreaterThanOrEqual(recs[0].time);
    expect(t.overflow).toBe(0);
    t.stop();
    void r.bytes[7 * r.pageSize];
    expect(t.records()).toHaveLength(4); // stopped: nothing more
    await r.close();
    await d.close();
  });

  it('is bounded: a full ring overwrites its oldest records and counts them; native threads have their own tids', async () => {
    const pages = 64;
    const r = Region.map({ pages, servicer });
    const d = new Device({ capacity: pages });
    fillPages(r, 0, pages, 2);
    r.migrate(0, pages, d);
    const t = r.trace({ capacity: 16 });
    const toucher = new NativeToucher(r, { threads: 2, iterations: 2000, mode: 'read' });
    await toucher.finished(20_000);
    // Every page faulted once at least; two threads racing on one page make a second, 'woken' record.
    const n = t.recorded;
    expect(n).toBeGreaterThanOrEqual(pages);
    expect(t.overflow).toBe(n - 16);
    expect(d.stats().faults).toBe(pages);
    const cols = t.columns();
    expect(cols.seq.length).toBe(16);
    expect(Array.from(cols.seq)).toEqual(Array.from({ length: 16 }, (_, i) => n - 16 + i + 1));
    for (const tid of cols.tid) expect(tid).not.toBe(process.pid);
    t.clear();
    expect(t.recorded).toBe(0);
    expect(t.records()).toEqual([]);
    await r.close();
    await d.close();
  });
});
