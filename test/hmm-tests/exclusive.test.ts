// hmm-tests.c's device-exclusive (atomic access) cases ported to uffd-hmm: exclusive, exclusive_mprotect
// and exclusive_cow, on the mirror model of lib/mirror.ts (exclusive access held as device write entries).
import { expect, it } from 'vitest';
import { Device, Region, type ChildStep } from 'uffd-hmm';
import { mirrorCheckExclusive, mirrorExclusive, mirrorWrite } from 'uffd-hmm';
import { describeUffd } from '../helpers.js';
import { NPAGES, crc32, fillInts, firstIntMismatch, firstIntMismatchIn, ints, track } from './fixtures/common.js';

// The default servicer; the fork case needs EVENT_FORK, which 'worker' reads.
const servicer = 'worker';

describeUffd('hmm-tests.c: exclusive device access', () => {
  it('exclusive', () => {
    const r = track(Region.map({ pages: NPAGES, servicer }));
    const d = track(new Device({ capacity: NPAGES }));
    const ptr = ints(r);
    fillInts(ptr);
    const res = mirrorExclusive(r, 0, NPAGES, d);
    expect(res.cpages).toBe(NPAGES);
    expect(firstIntMismatchIn(res.data)).toBe(-1);
    // Not in the kernel test: while nothing has touched the pages, the device still holds them.
    expect(() => mirrorCheckExclusive(r, 0, NPAGES, d)).toThrow(expect.objectContaining({ code: 'EPERM' }));

    // Fault pages back to system memory and check them.
    for (let i = 0; i < ptr.length; i++) if (ptr[i]++ !== i) expect.fail(`int ${i} was ${ptr[i] - 1}`);
    expect(firstIntMismatch(ptr, 1)).toBe(-1);
    // Atomic access revoked.
    expect(() => mirrorCheckExclusive(r, 0, NPAGES, d)).not.toThrow();
  });

  it('exclusive_mprotect', () => {
    const r = track(Region.map({ pages: NPAGES, servicer }));
    const d = track(new Device({ capacity: NPAGES }));
    fillInts(ints(r));
    const res = mirrorExclusive(r, 0, NPAGES, d);
    expect(res.cpages).toBe(NPAGES);
    expect(firstIntMismatchIn(res.data)).toBe(-1);
    r.mprotect(0, NPAGES, 'read');
    // The device writing a read-only range: EPERM.
    expect(() => mirrorWrite(r, 0, NPAGES, d, new Uint8Array(NPAGES * r.pageSize))).toThrow(
      expect.objectContaining({ code: 'EPERM', errno: -1 }),
    );
    expect(firstIntMismatch(ints(r))).toBe(-1);
  });

  it('exclusive_cow', async () => {
    // Child and parent each write every page after a fork; each keeps its own values. The kernel's
    // child increments with ptr[i]++; ours is native steps, so it writes a byte the parent never
    // does (0xC3 at offset 0 of each page) and the parent increments: any sharing shows on either side.
    const r = track(Region.map({ pages: NPAGES, servicer }));
    const d = track(new Device({ capacity: NPAGES }));
    const ps = r.pageSize;
    const ptr = ints(r);
    fillInts(ptr);
    const before = r.bytes.slice(0, NPAGES * ps);
    const res = mirrorExclusive(r, 0, NPAGES, d);
    expect(res.cpages).toBe(NPAGES);

    const steps: ChildStep[] = [];
    for (let p = 0; p < NPAGES; p++) steps.push({ op: 'write', page: p, offset: 0, value: 0xc3 });
    steps.push({ op: 'checksum', first: 0, count: NPAGES });
    const child = r.fork(steps); // forked by now; the child runs while the parent increments
    for (let i = 0; i < ptr.length; i++) if (ptr[i]++ !== i) expect.fail(`parent: int ${i} was ${ptr[i] - 1}`);
    expect(firstIntMismatch(ptr, 1)).toBe(-1);

    const out = await child;
    expect(out).toMatchObject({ exitCode: 0, signal: null });
    const childView = before.slice();
    for (let p = 0; p < NPAGES; p++) childView[p * ps] = 0xc3;
    expect(out.results[NPAGES]).toBe(crc32(childView));
    expect(firstIntMismatch(ptr, 1)).toBe(-1);
    expect(() => mirrorCheckExclusive(r, 0, NPAGES, d)).not.toThrow();
  });
});
