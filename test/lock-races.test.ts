// The page lock is a compare-and-swap on the state word; the pfn word beside it is the holder's to
// change, so the engine reads it only once the lock is its own (a word re-migrated to another
// device page can look the same), and a peer holding another mapping's page publishes through the
// same zap-aware CAS as every holder. The windows are widened with the test hook testPauseAt
// (native/test_hooks.cc), which stops the engine at a named point until the test lets it go.
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { expect, it } from 'vitest';
import { Device, NativeToucher, Region } from 'uffd-hmm';
import { native } from '../dist/native.js';
import { SERVICERS, checkPages, closeAfterEach, describeUffd, fillPages, pattern } from './helpers.js';

const track = closeAfterEach();
const WAIT_MS = 5000;
const POINT_NEIGHBOUR_LOCK = 1; // native/region.h kTestPointNeighbourLock
const POINT_SHARER_LOCKED = 2; // kTestPointSharerLocked
const nativeUrl = pathToFileURL(path.resolve(import.meta.dirname, '..', 'dist', 'native.js')).href;

async function until(cond: () => boolean, what: string, ms = WAIT_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 1));
  }
}
const paused = (r: Region): number => native.testHoldServicer(r.handle, 0, 0);
const pfnOf = (r: Region, p: number): number => (r.entry(p) as { pfn: number }).pfn;

/** MADV_DONTNEED of a page from another thread, straight through the addon: a zap the table never hears of but by EVENT_REMOVE. */
function zapFromAnotherThread(r: Region, page: number): Promise<number> {
  const w = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     import(workerData.nativeUrl).then(({ native }) => parentPort.postMessage(native.regionDiscard(workerData.handle, workerData.page, 1)));`,
    { eval: true, workerData: { nativeUrl, handle: r.handle, page } },
  );
  return new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the zap did not return')), WAIT_MS);
    w.once('message', (rc: number) => {
      clearTimeout(timer);
      void w.terminate();
      resolve(rc);
    });
  });
}

describeUffd('the pfn word is read under the lock', () => {
  for (const servicer of SERVICERS) {
    it(`${servicer}: a fault-around neighbour re-migrated to another device page meanwhile is not filled from its old one`, async () => {
      const r = track(Region.map({ pages: 4, servicer, faultAround: 2 }));
      const a = track(new Device({ capacity: 4, name: 'aba-a' }));
      const b = track(new Device({ capacity: 4, name: 'aba-b' }));
      fillPages(r, 0, 4, 3);
      expect(r.migrate(0, 2, a)).toBe(2);
      const [x0, x1] = [pfnOf(r, 0), pfnOf(r, 1)];
      expect(x1).toBe(x0 + 1);
      const other = track(Region.map({ pages: 1, servicer: 'native' }));
      other.bytes.fill(0xee);

      // The fault on page 0 reads page 1's word (device, a, write) and stops before locking it.
      const before = native.testPauseAt(r.handle, POINT_NEIGHBOUR_LOCK, WAIT_MS);
      const t = new NativeToucher(r, { threads: 1, iterations: 1, mode: 'read', pages: [0] });
      await until(() => paused(r) > before, 'the fault to stop in lockNeighbours');
      // Page 1 goes to b and back to a, device to device (no zap, so no servicer needed), onto
      // another pfn: its device page x1 meanwhile goes to the other region.
      expect(r.migrate(1, 1, b)).toBe(1);
      expect(other.migrate(0, 1, a)).toBe(1);
      expect(pfnOf(other, 0)).toBe(x1);
      expect(r.migrate(1, 1, a)).toBe(1);
      expect(r.entry(1)).toMatchObject({ kind: 'device', write: true, device: a });
      expect(pfnOf(r, 1)).not.toBe(x1);
      native.testReleaseServicer(r.handle, paused(r));
      await t.finished(WAIT_MS);

      expect(r.entry(0)).toEqual({ kind: 'present', write: true });
      expect(r.entry(1).kind).toBe('device'); // same state word, another device page: left to its own fault
      expect(a.refcount(x1)).toBe(1);
      expect(other.bytes[100]).toBe(0xee);
      expect(checkPages(r, 0, 4, 3)).toBeNull();
      expect(a.used).toBe(0);
    });
  }
});

describeUffd('a peer migrating back a shared page publishes zap-aware', () => {
  it("a fork child's fault brings the parent's page back while the parent's page is zapped: the zap wins", async () => {
    const r = track(Region.map({ pages: 2, servicer: 'native' }));
    const d = track(new Device({ capacity: 2 }));
    fillPages(r, 0, 2, 4);
    expect(r.migrate(0, 2, d)).toBe(2);
    const pfn0 = pfnOf(r, 0);
    // The child's read of page 0 migrates it back for the parent too (migrateSharers), and stops
    // with the parent's page locked, before copying.
    const before = native.testPauseAt(r.handle, POINT_SHARER_LOCKED, WAIT_MS);
    const child = r.fork([{ op: 'read', page: 0, offset: 1 }], { timeoutMs: 20_000 });
    await until(() => paused(r) > before, "the child's servicer to stop in migrateSharers");
    // Someone madvise(MADV_DONTNEED)s the parent's page 0: the parent's servicer flags the locked
    // page (ZAP_PENDING) and the madvise returns.
    expect(await zapFromAnotherThread(r, 0)).toBe(0);
    native.testReleaseServicer(r.handle, paused(r));
    const res = await child;
    expect(res).toMatchObject({ results: [pattern(0, 1, 4)], exitCode: 0, signal: null });
    // The zap came last: page 0 is a hole, reads zeroes, and its device page is gone.
    expect(r.entry(0)).toEqual({ kind: 'none' });
    expect(r.bytes.subarray(0, r.pageSize).every((x) => x === 0)).toBe(true);
    expect(d.refcount(pfn0)).toBe(0);
    expect(d.used).toBe(1);
    expect(checkPages(r, 1, 1, 4)).toBeNull();
    expect(d.used).toBe(0);
  });
});
