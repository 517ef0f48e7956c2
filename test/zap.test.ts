// S4 zap: MADV_DONTNEED or munmap reaching device entries by any path (our discard, or a raw
// madvise/munmap the library did not make) drops their references and frees unreferenced device
// pages; the range reads zeroes afterwards. Raw zaps arrive as EVENT_REMOVE / EVENT_UNMAP.
import { afterEach, expect, it } from 'vitest';
import { Device, HMM_DMIRROR_PROT_ERROR, Region } from 'uffd-hmm';
import { native } from '../dist/native.js';
import { checkPages, describeUffd, fillPages } from './helpers.js';

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const x of open.splice(0).reverse()) await x.close();
});

/** Waits (with a deadline) for the servicer to have processed an event. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

// Inline regions read no userfaultfd messages, so they cannot see zaps made behind their back.
describeUffd.each(['worker', 'native'] as const)('zap with the %s servicer', (servicer) => {
  it('discard() drops device references, frees the pages, and the range reads zero', () => {
    const r = Region.map({ pages: 8, servicer });
    const d = new Device({ capacity: 8 });
    open.push(d, r);
    fillPages(r, 0, 8);
    r.migrate(0, 8, d);
    r.discard(2, 4);
    expect(d.used).toBe(4);
    expect(d.stats().freed).toBe(4);
    for (let p = 2; p < 6; p++) expect(r.entry(p)).toEqual({ kind: 'none' });
    expect(r.bytes.subarray(2 * r.pageSize, 6 * r.pageSize).every((b) => b === 0)).toBe(true);
    expect(checkPages(r, 0, 2)).toBeNull();
    expect(checkPages(r, 6, 2)).toBeNull();
    expect(d.used).toBe(0);
  });

  it('a raw MADV_DONTNEED the library did not make (EVENT_REMOVE) frees device pages too', async () => {
    const r = Region.map({ pages: 8, servicer });
    const d = new Device({ capacity: 8 });
    open.push(d, r);
    fillPages(r, 0, 8);
    r.migrate(0, 8, d);
    // Straight to madvise(2), bypassing the table: only the userfaultfd event tells the servicer.
    expect(native.regionDiscard(r.handle, 0, 4)).toBe(0);
    await until(() => d.used === 4, 'the REMOVE event');
    for (let p = 0; p < 4; p++) expect(r.entry(p)).toEqual({ kind: 'none' });
    expect(r.bytes[0]).toBe(0);
    expect(r.bytes[3 * r.pageSize + 9]).toBe(0);
    expect(checkPages(r, 4, 4)).toBeNull();
  });

  it('mprotect over a range someone munmapped part of changes only what is still mapped', async () => {
    // mprotect(2) over the hole would fail with ENOMEM after changing the vmas before it, leaving
    // the table and the kernel apart (found porting migrate_mixed, docs/PARITY.md).
    const r = Region.map({ pages: 3, servicer });
    const d = new Device({ capacity: 3 });
    open.push(d, r);
    r.bytes[0] = 1;
    r.bytes[2 * r.pageSize] = 3;
    r.migrate(2, 1, d);
    expect(native.regionUnmap(r.handle, 1, 1)).toBe(0);
    await until(() => r.snapshot(1, 1)[0] === HMM_DMIRROR_PROT_ERROR, 'EVENT_UNMAP');
    r.mprotect(0, 3, 'read');
    expect(r.entry(0)).toEqual({ kind: 'present', write: false });
    expect(r.entry(2)).toMatchObject({ kind: 'device', write: false });
    r.migrate(0, 1, d);
    expect(r.entry(0)).toMatchObject({ kind: 'device', write: false });
    expect(r.bytes[0]).toBe(1);
    expect(r.bytes[2 * r.pageSize]).toBe(3);
  });

  it('munmap of half a range with pages on the device, then fault the other half (migrate_partial_unmap_fault)', async () => {
    const r = Region.map({ pages: 8, servicer });
    const d = new Device({ capacity: 8 });
    open.push(d, r);
    fillPages(r, 0, 8, 4);
    r.migrate(0, 8, d);
    expect(native.regionUnmap(r.handle, 0, 4)).toBe(0);
    await until(() => d.used === 4, 'the UNMAP event');
    expect(r.snapshot(0, 4)).toEqual(new Uint8Array(4).fill(0xff));
    expect(checkPages(r, 4, 4, 4)).toBeNull();
    expect(d.used).toBe(0);
    // Nothing can be migrated where nothing is mapped.
    expect(r.migrate(0, 8, d)).toBe(4);
    r.discard(0, 8);
    expect(d.used).toBe(0);
  });
});
