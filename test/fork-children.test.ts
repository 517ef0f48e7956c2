// Many region.fork children faulting the same shared device pages at once: each page migrates back
// for every process that maps it, no servicer waits on another's page lock, and every child reads
// the right bytes well within its deadline. scripts/fork-children.mjs measures the cost per child.
import { expect, it } from 'vitest';
import { Device, Region } from 'uffd-hmm';
import { crc32, describeUffd } from './helpers.js';

const PAGES = 64;

describeUffd.each(['worker', 'native'] as const)('concurrent fork children with the %s servicer', (servicer) => {
  it.each([8, 32])('%i children checksum the same 64 device pages at once', async (children) => {
    const r = Region.map({ pages: PAGES, servicer });
    const d = new Device({ capacity: PAGES });
    try {
      for (let p = 0; p < PAGES; p++) r.bytes.fill((p * 37 + 11) & 0xff, p * r.pageSize, (p + 1) * r.pageSize);
      const expected = crc32(r.bytes);
      r.migrate(0, PAGES, d);
      const pfn = (r.entry(0) as { pfn: number }).pfn;
      const started = Date.now();
      // One child alone takes ~20 ms. The deadline is a hang detector, far above linear cost even
      // on a loaded machine; chained lock waits between the children's servicers overran it.
      const results = await Promise.all(
        Array.from({ length: children }, () => r.fork([{ op: 'checksum', first: 0, count: PAGES }], { timeoutMs: 15_000 })),
      );
      const ms = Date.now() - started;
      for (const res of results) {
        expect(res, `after ${ms} ms`).toMatchObject({ exitCode: 0, signal: null, results: [expected] });
      }
      // A page comes back into a child at most once, by the child's own fault or by a sibling
      // migrating it back for all sharers (fewer when the parent had it back before that fork);
      // no child left a device reference behind.
      for (const res of results) expect(res.stats.migratedBack).toBeLessThanOrEqual(PAGES);
      expect(d.refcount(pfn)).toBeLessThanOrEqual(1);
      expect(crc32(r.bytes)).toBe(expected);
      await r.close();
      expect(d.used).toBe(0);
    } finally {
      await r.close();
      await d.close();
    }
  }, 60_000);
});
