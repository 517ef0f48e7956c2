// S7 smaps (smaps_pte_entry): region.smaps() counts device entries as resident anonymous memory,
// never as swap, and agrees with the kernel's own /proc/self/smaps for the CPU pages.
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { Device, PM_PRESENT, Region } from 'uffd-hmm';
import { checkPages, closeAfterEach, describeUffd, fillPages, SERVICERS } from './helpers.js';

const track = closeAfterEach();

/** Rss/Anonymous/Swap in bytes of the vma that starts at the region, parsed here, not by the library. */
function kernelSmaps(r: Region): { rss: number; anonymous: number; swap: number } {
  const text = readFileSync('/proc/self/smaps', 'utf8');
  const lines = text.split('\n');
  const start = r.address.toString(16);
  const at = lines.findIndex((l) => /^[0-9a-f]+-[0-9a-f]+ /.test(l) && l.split('-')[0].replace(/^0+/, '') === start);
  expect(at, `no smaps vma starts at 0x${start}`).toBeGreaterThanOrEqual(0);
  // The region is one vma: it ends exactly where the region does.
  expect(BigInt('0x' + lines[at].split(' ')[0].split('-')[1])).toBe(r.address + BigInt(r.length));
  const out = { rss: -1, anonymous: -1, swap: -1 };
  for (let i = at + 1; i < lines.length && !/^[0-9a-f]+-[0-9a-f]+ /.test(lines[i]); i++) {
    const m = /^(Rss|Anonymous|Swap):\s+(\d+) kB$/.exec(lines[i]);
    if (m) out[m[1].toLowerCase() as keyof typeof out] = Number(m[2]) * 1024;
  }
  return out;
}

const presentPages = (r: Region) => r.pagemap().filter((w) => (w & PM_PRESENT) !== 0n).length;

describeUffd.each(SERVICERS)('smaps with the %s servicer', (servicer) => {
  it('Rss and Anonymous include device pages byte for byte, Swap does not', () => {
    const r = track(Region.map({ pages: 32, servicer }));
    const d = track(new Device({ capacity: 32 }));
    const ps = r.pageSize;
    fillPages(r, 0, 20); // pages 0-19 written, 20-31 never touched
    const k0 = kernelSmaps(r);
    expect(k0).toEqual({ rss: 20 * ps, anonymous: 20 * ps, swap: 0 });
    expect(r.smaps()).toEqual({ rss: 20 * ps, anonymous: 20 * ps, swap: 0, device: 0 });

    // 8 written pages and 4 holes go to the device: 12 device pages, 12 CPU pages left.
    expect(r.migrate(12, 12, d)).toBe(12);
    expect(d.used).toBe(12);
    const k1 = kernelSmaps(r);
    expect(presentPages(r)).toBe(12);
    expect(k1).toEqual({ rss: 12 * ps, anonymous: 12 * ps, swap: 0 });
    const s1 = r.smaps();
    expect(s1).toEqual({ rss: 24 * ps, anonymous: 24 * ps, swap: 0, device: 12 * ps });
    // The library's view is the kernel's plus exactly the device pages.
    expect(s1.rss - s1.device).toBe(k1.rss);
    expect(s1.anonymous - s1.device).toBe(k1.anonymous);
    expect(s1.swap).toBe(k1.swap);

    // Faulting them back moves pages from the device column to the CPU one: Rss does not move.
    expect(checkPages(r, 12, 8)).toBeNull();
    expect(r.bytes.subarray(20 * ps, 24 * ps).every((b) => b === 0)).toBe(true);
    expect(d.used).toBe(0);
    expect(r.smaps()).toEqual({ rss: 24 * ps, anonymous: 24 * ps, swap: 0, device: 0 });
    expect(kernelSmaps(r)).toEqual({ rss: 24 * ps, anonymous: 24 * ps, swap: 0 });
  });

  it('migrating present pages to the device leaves Rss unchanged; discarding device pages lowers it', () => {
    const r = track(Region.map({ pages: 16, servicer }));
    const d = track(new Device({ capacity: 16 }));
    const ps = r.pageSize;
    fillPages(r, 0, 16);
    expect(r.smaps().rss).toBe(16 * ps);
    r.migrate(0, 16, d);
    expect(kernelSmaps(r).rss).toBe(0); // the CPU pages are really gone...
    expect(r.smaps()).toEqual({ rss: 16 * ps, anonymous: 16 * ps, swap: 0, device: 16 * ps }); // ...yet resident
    r.discard(0, 5);
    expect(d.used).toBe(11);
    expect(r.smaps()).toEqual({ rss: 11 * ps, anonymous: 11 * ps, swap: 0, device: 11 * ps });
  });
});
