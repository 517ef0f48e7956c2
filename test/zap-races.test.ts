// Zaps by someone else racing the library's own multi-page operations (issue #22): a zap the
// servicer applies while a remap or a fork holds the page locked is marked ZAP_PENDING, and the
// holder must apply it when it unlocks, as mprotect and the migrations do (lib/pagelock.ts publish
// and release). The window is widened for real with the test hold of native/test_hooks.cc: the
// servicer has read the zap's EVENT_REMOVE (the madvise has returned) but applies it only once the
// operation holds the page.
import { expect, it } from 'vitest';
import { Device, Region } from 'uffd-hmm';
import { native } from '../dist/native.js';
import { closeAfterEach, describeUffd } from './helpers.js';
import { Zapper, until } from './zapper.js';

const track = closeAfterEach();
/** How long the servicer holds the batch with the zap in it. */
const HOLD_MS = 300;

/** Page 0 of a 2-page region holds 0x5a on the device, page 1 holds 0x6b there. */
async function twoDevicePages(servicer: 'worker' | 'native'): Promise<{ r: Region; d: Device; z: Zapper }> {
  const r = track(Region.map({ pages: 2, servicer }));
  const d = track(new Device({ capacity: 4 }));
  const z = track(new Zapper());
  await z.ready();
  r.bytes.fill(0x5a, 0, r.pageSize);
  r.bytes.fill(0x6b, r.pageSize);
  expect(r.migrate(0, 2, d)).toBe(2);
  return { r, d, z };
}

/** Someone else zaps page 0; the servicer reads the REMOVE and holds it, unapplied, for HOLD_MS. */
async function zapInFlight(r: Region, z: Zapper): Promise<void> {
  const before = native.testHoldServicer(r.handle, 0, 0);
  native.testHoldServicer(r.handle, 1, HOLD_MS);
  expect(await z.discardNow(r, 0, 1)).toBe(0);
  await until(() => native.testHoldServicer(r.handle, 0, 0) > before, 'the servicer to read the REMOVE');
}

describeUffd.each(['worker', 'native'] as const)('a zap in flight with the %s servicer', (servicer) => {
  it('across remap: applied once the move is done, so the page is none and its device page freed', async () => {
    const { r, d, z } = await twoDevicePages(servicer);
    await zapInFlight(r, z);
    r.remap(4); // its mremap waits for the held batch: the zap lands while remap holds page 0
    expect(r.entry(0)).toEqual({ kind: 'none' });
    expect(d.used).toBe(1);
    expect(r.bytes[0]).toBe(0);
    expect(r.bytes[100]).toBe(0);
    expect(r.bytes[r.pageSize]).toBe(0x6b);
    expect(d.used).toBe(0);
    expect(d.stats().freed).toBe(2);
  });

  it('across fork: applied in the parent, and the child, forked after the zap, sees it too', async () => {
    const { r, d, z } = await twoDevicePages(servicer);
    await zapInFlight(r, z);
    const child = await r.fork([
      { op: 'read', page: 0 },
      { op: 'read', page: 1 },
    ]);
    expect(child.exitCode).toBe(0);
    expect(child.results).toEqual([0, 0x6b]);
    expect(r.entry(0)).toEqual({ kind: 'none' });
    expect(r.bytes[0]).toBe(0);
    expect(r.bytes[r.pageSize]).toBe(0x6b);
    expect(d.used).toBe(0);
    expect(d.stats().freed).toBe(2);
  });
});
