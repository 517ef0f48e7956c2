// Ordering and retries (issue #6): while an EVENT_REMOVE is unread the kernel refuses every fill
// with EAGAIN; it hands out faults before events, so a fault can be read before the REMOVE that
// explains it; and a second fill of a page gets EEXIST. Each case is forced here on real faults.
//
// How: native toucher threads fault, a worker_thread madvise(MADV_DONTNEED)s behind the library's
// back (it blocks in the kernel until the servicer reads its REMOVE), /proc/self/task/*/wchan shows
// who is blocked where, and a test-only hold (native/region.h, RegionState::testHoldBatches) stops
// the servicer between reading a batch of messages and serving it. Counters in the region header
// (STAT_FILL_RETRIES, STAT_FILL_RACED) prove that the case was hit, not merely survived.
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { expect, it } from 'vitest';
import { Device, NativeToucher, Region } from 'uffd-hmm';
import { native } from '../dist/native.js';
import { STAT_FILL_RACED, STAT_FILL_RETRIES } from '../dist/layout.js';
import { checkPages, closeAfterEach, describeUffd, fillPages, pattern, runNode } from './helpers.js';
import { IN_FAULT, WAIT_MS, Zapper, blockedIn, until } from './zapper.js';

const track = closeAfterEach();
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nativeUrl = pathToFileURL(path.join(repo, 'dist', 'native.js')).href;

function stat(r: Region, index: number): number {
  return Atomics.load(r.shared, index);
}

/** A held batch goes on by itself after this long, so a failing test can never hang the servicer. */
const HOLD_MS = 5000;

/** Holds the region's servicer after each of its next `batches` reads (each for HOLD_MS at most). */
function hold(r: Region, batches: number): number {
  return native.testHoldServicer(r.handle, batches, HOLD_MS);
}
function held(r: Region): number {
  return native.testHoldServicer(r.handle, 0, 0);
}
/** Lets every batch held so far go on; holds still to come stay. */
function release(r: Region): void {
  native.testReleaseServicer(r.handle, held(r));
}

/** The uint32 word `k` of a page, as a native toucher thread k increments it. */
function word(r: Region, page: number, k: number): number {
  return new DataView(r.bytes.buffer, r.bytes.byteOffset + page * r.pageSize + 4 * k, 4).getUint32(0, true);
}
/** What word k of page p holds after fillPages(seed). */
function patternWord(page: number, k: number, seed: number): number {
  let v = 0;
  for (let i = 3; i >= 0; i--) v = v * 256 + pattern(page, 4 * k + i, seed);
  return v;
}
/** Bytes [from, pageSize) of the page are as fillPages(seed) wrote them. */
function restIsPattern(r: Region, page: number, from: number, seed: number): boolean {
  for (let o = from; o < r.pageSize; o++) if (r.bytes[page * r.pageSize + o] !== pattern(page, o, seed)) return false;
  return true;
}
function zeroes(r: Region, page: number): boolean {
  return r.bytes.subarray(page * r.pageSize, (page + 1) * r.pageSize).every((b) => b === 0);
}

describeUffd.each(['worker', 'native'] as const)('ordering and retries with the %s servicer', (servicer) => {
  it('EAGAIN: a fill (COPY, ZEROPAGE, WRITEPROTECT) issued while a REMOVE is unread is retried after it, with the right data', async () => {
    const r = track(Region.map({ pages: 8, servicer }));
    const d = track(new Device({ capacity: 8 }));
    const z = track(new Zapper());
    await z.ready();
    fillPages(r, 0, 8, 1);
    expect(r.migrate(0, 8, d)).toBe(8);
    r.discard(2, 1); // page 2: a hole
    void r.bytes[3 * r.pageSize]; // page 3: back from the device below, write-protected
    expect(r.migrate(3, 1, d, { write: false })).toBe(1);
    void r.bytes[3 * r.pageSize];
    expect(r.entry(3)).toEqual({ kind: 'present', write: false });

    // Each round: a fault is read and held; someone zaps page 7 (its REMOVE is queued, unread), or
    // munmaps page 6; released, the servicer's fill finds the mm changing (EAGAIN) and must come
    // back to it once it has read the event.
    const rounds = [
      { page: 0, mode: 'increment', fill: 'UFFDIO_COPY', zap: 'discard' },
      { page: 2, mode: 'read', fill: 'UFFDIO_ZEROPAGE', zap: 'discard' },
      { page: 3, mode: 'increment', fill: 'UFFDIO_WRITEPROTECT', zap: 'discard' },
      { page: 1, mode: 'read', fill: 'UFFDIO_COPY', zap: 'unmap' },
    ] as const;
    for (const { page, mode, fill, zap } of rounds) {
      const before = stat(r, STAT_FILL_RETRIES);
      const h = held(r);
      hold(r, 1);
      const t = new NativeToucher(r, { threads: 1, iterations: 1, mode, pages: [page] });
      await until(() => held(r) > h, 'the servicer to read the fault');
      // Page 7 is a device page the first time, a hole afterwards: a REMOVE all the same.
      if (zap === 'discard') await z.discard(r, 7, 1);
      else await z.discard(r, 6, 1, 'unmap');
      expect(blockedIn(IN_FAULT), 'the toucher is blocked on its fault').toBeGreaterThanOrEqual(1);
      release(r);
      await t.finished(WAIT_MS);
      expect(await z.finished()).toBe(0);
      expect(stat(r, STAT_FILL_RETRIES) - before, `${fill} behind an unread ${zap} was refused with EAGAIN and retried`).toBeGreaterThanOrEqual(1);
    }
    // The faults got their data: the device's (+1 from the toucher), zeroes, the write.
    expect(word(r, 0, 0)).toBe((patternWord(0, 0, 1) + 1) >>> 0);
    expect(checkPages(r, 1, 1, 1)).toBeNull();
    expect(zeroes(r, 2)).toBe(true);
    expect(word(r, 3, 0)).toBe((patternWord(3, 0, 1) + 1) >>> 0);
    expect(r.entry(3)).toEqual({ kind: 'present', write: true });
    // And the zap happened as zap_pte_range does it: entry gone, device page freed, zeroes.
    expect(r.entry(7)).toEqual({ kind: 'none' });
    expect(zeroes(r, 7)).toBe(true);
    expect(r.snapshot(6, 1)).toEqual(Uint8Array.of(0xff)); // munmapped: nothing there
    expect(checkPages(r, 4, 2, 1)).toBeNull(); // faults the rest back
    expect(d.used).toBe(0);
  });

  it('EAGAIN: migrateToRam and migrate wait out a REMOVE the servicer is slow to read, instead of failing', async () => {
    const r = track(Region.map({ pages: 8, servicer }));
    const d = track(new Device({ capacity: 8 }));
    const z = track(new Zapper());
    await z.ready();
    fillPages(r, 0, 8, 2);
    expect(r.migrate(0, 6, d)).toBe(6);
    for (const op of ['migrateToRam', 'migrate'] as const) {
      // The servicer is held (for 300 ms) on a fault it read; a REMOVE waits behind it. Every fill
      // meanwhile gets EAGAIN, however often it is tried: the main thread must wait, not give up.
      const before = stat(r, STAT_FILL_RETRIES);
      const h = held(r);
      native.testHoldServicer(r.handle, 1, 300);
      const t = new NativeToucher(r, { threads: 1, iterations: 1, mode: 'read', pages: [op === 'migrateToRam' ? 0 : 1] });
      await until(() => held(r) > h, 'the servicer to read the fault');
      await z.discard(r, 5, 1);
      const started = Date.now();
      if (op === 'migrateToRam') expect(r.migrateToRam(2, 1)).toBe(1); // UFFDIO_COPY
      else expect(r.migrate(6, 1, d)).toBe(1); // UFFDIO_WRITEPROTECT of a CPU page
      expect(Date.now() - started).toBeGreaterThanOrEqual(100);
      expect(stat(r, STAT_FILL_RETRIES) - before, `${op} was refused with EAGAIN and retried`).toBeGreaterThanOrEqual(1);
      await t.finished(WAIT_MS);
      expect(await z.finished()).toBe(0);
    }
    expect(r.entry(2)).toEqual({ kind: 'present', write: true });
    expect(r.entry(6)).toMatchObject({ kind: 'device', write: true });
    expect(r.entry(5)).toEqual({ kind: 'none' });
    expect(checkPages(r, 0, 5, 2)).toBeNull();
    expect(checkPages(r, 6, 2, 2)).toBeNull();
    expect(zeroes(r, 5)).toBe(true);
    expect(d.used).toBe(0);
  });

  it('a zap by someone else racing migrateToRam of the same page wins: the page ends up none, never with the zapped bytes', async () => {
    const r = track(Region.map({ pages: 4, servicer }));
    const d = track(new Device({ capacity: 4 }));
    const z = track(new Zapper());
    await z.ready();
    fillPages(r, 0, 4, 5);
    expect(r.migrate(0, 4, d)).toBe(4);
    // The servicer reads the REMOVE of page 0 and is held (300 ms) before applying it; the madvise
    // has returned by then (its zap found only the device entry's empty pte).
    const h = held(r);
    native.testHoldServicer(r.handle, 1, 300);
    expect(await z.discardNow(r, 0, 1)).toBe(0);
    await until(() => held(r) > h, 'the servicer to read the REMOVE');
    // migrateToRam's fill now succeeds (nothing unread): without waiting for the REMOVE to be
    // applied it would publish the device's bytes on a page the zap has emptied for good.
    const started = Date.now();
    expect(r.migrateToRam(0, 2)).toBe(2);
    const waited = Date.now() - started;
    expect(r.entry(0)).toEqual({ kind: 'none' });
    expect(r.entry(1)).toEqual({ kind: 'present', write: true });
    expect(zeroes(r, 0)).toBe(true);
    expect(checkPages(r, 1, 3, 5)).toBeNull();
    expect(d.used).toBe(0);
    expect(waited, 'migrateToRam waited for the REMOVE to be applied').toBeGreaterThanOrEqual(100);
  });

  it('out of order: a fault read with the REMOVE that explains it gets zeroes, never the zapped device data', async () => {
    const r = track(Region.map({ pages: 8, servicer }));
    const d = track(new Device({ capacity: 8 }));
    const z = track(new Zapper());
    await z.ready();
    fillPages(r, 0, 8, 3);
    expect(r.migrate(0, 8, d)).toBe(8);
    const freedBefore = d.stats().freed;
    // Batch 1: a fault on page 0, held. Behind it, a thread faults on page 1 while another zaps
    // page 1: the fault and the REMOVE wait in the kernel, and read() returns the fault first.
    hold(r, 2);
    const t0 = new NativeToucher(r, { threads: 1, iterations: 1, mode: 'increment', pages: [0] });
    await until(() => held(r) === 1, 'the servicer to read the first fault');
    const t1 = new NativeToucher(r, { threads: 1, iterations: 1, mode: 'increment', pages: [1] });
    await until(() => blockedIn(IN_FAULT) === 2, 'the second fault to wait, unread');
    await z.discard(r, 1, 1);
    // Batch 2 is [fault on page 1, REMOVE of page 1], held until the madvise has returned: the
    // kernel has zapped page 1 by then, and the servicer has not served anything of batch 2.
    release(r);
    await until(() => held(r) === 2, 'the servicer to read the fault and the REMOVE together');
    expect(await z.finished()).toBe(0);
    release(r);
    await t0.finished(WAIT_MS);
    await t1.finished(WAIT_MS);
    // Page 1 was zapped: it reads zeroes (and the toucher's +1), never the device's old bytes.
    expect(word(r, 1, 0)).toBe(1);
    expect(r.bytes.subarray(r.pageSize + 4, 2 * r.pageSize).every((b) => b === 0)).toBe(true);
    expect(r.entry(1)).toEqual({ kind: 'present', write: true });
    expect(d.stats().freed - freedBefore).toBeGreaterThanOrEqual(2); // page 1's by the zap, page 0's by the fault
    expect(r.stats().migratedBack).toBe(1); // page 0 only: page 1 was never migrated back
    expect(word(r, 0, 0)).toBe((patternWord(0, 0, 3) + 1) >>> 0);
    expect(checkPages(r, 2, 6, 3)).toBeNull();
    expect(d.used).toBe(0);
  });

  it('EEXIST: two threads fault the same device page, read in one batch: the device data once, the second only woken', async () => {
    const r = track(Region.map({ pages: 4, servicer }));
    const d = track(new Device({ capacity: 4 }));
    fillPages(r, 0, 4, 4);
    expect(r.migrate(0, 4, d)).toBe(4);
    const trace = r.trace();
    hold(r, 1);
    const t0 = new NativeToucher(r, { threads: 1, iterations: 1, mode: 'read', pages: [0] });
    await until(() => held(r) === 1, 'the servicer to read the first fault');
    // Two threads fault on page 1 behind it: both faults are read together, after the release.
    const t1 = new NativeToucher(r, { threads: 2, iterations: 1, mode: 'increment', pages: [1] });
    await until(() => blockedIn(IN_FAULT) === 3, 'both faults on page 1 to wait, unread');
    release(r);
    await t0.finished(WAIT_MS);
    await t1.finished(WAIT_MS);
    // The first fill's wake lets both threads go on: the second fault is served after that.
    await until(() => trace.records().filter((x) => x.page === 1).length === 2, 'the second fault on page 1 to be served');
    expect(stat(r, STAT_FILL_RACED), 'the second fill got EEXIST').toBe(1);
    // Each thread's +1 landed on the device's bytes; the second fill wrote nothing over them.
    expect(word(r, 1, 0)).toBe((patternWord(1, 0, 4) + 1) >>> 0);
    expect(word(r, 1, 1)).toBe((patternWord(1, 1, 4) + 1) >>> 0);
    expect(restIsPattern(r, 1, 8, 4)).toBe(true);
    const page1 = trace.records().filter((x) => x.page === 1);
    expect(page1.map((x) => x.outcome).sort()).toEqual(['migrated', 'woken']);
    expect(r.stats().migratedBack).toBe(2); // pages 0 and 1, once each
    expect(d.stats().freed).toBe(2);
    expect(checkPages(r, 2, 2, 4)).toBeNull();
    expect(d.used).toBe(0);
  });

  it('EEXIST: a write fault read behind a read fault of the same page: its UFFDIO_COPY finds the page there', async () => {
    const r = track(Region.map({ pages: 4, servicer }));
    const d = track(new Device({ capacity: 4 }));
    fillPages(r, 0, 4, 7);
    expect(r.migrate(0, 4, d)).toBe(4);
    const trace = r.trace();
    // Held for 200 ms at most: this thread will be blocked on its own fault when it must go on.
    native.testHoldServicer(r.handle, 1, 200);
    const t0 = new NativeToucher(r, { threads: 1, iterations: 1, mode: 'read', pages: [0] });
    await until(() => held(r) === 1, 'the servicer to read the first fault');
    const t1 = new NativeToucher(r, { threads: 1, iterations: 1, mode: 'read', pages: [1] });
    await until(() => blockedIn(IN_FAULT) === 2, 'a read fault on page 1 to wait, unread');
    // A write fault on page 1 queues behind it (read() is FIFO). Served second, it finds the page
    // back from the device, so its fill (a zeroed page, UFFDIO_COPY) gets EEXIST: only a wake.
    r.bytes[r.pageSize + 100] = 0xee;
    await t0.finished(WAIT_MS);
    await t1.finished(WAIT_MS);
    await until(() => trace.records().filter((x) => x.page === 1).length === 2, 'both faults on page 1 to be served');
    expect(trace.records().filter((x) => x.page === 1).map((x) => [x.write, x.outcome])).toEqual([
      [false, 'migrated'],
      [true, 'woken'],
    ]);
    expect(stat(r, STAT_FILL_RACED)).toBe(1);
    // The write landed on the device's bytes, not on zeroes.
    const expected = Uint8Array.from({ length: r.pageSize }, (_, o) => (o === 100 ? 0xee : pattern(1, o, 7)));
    expect(r.bytes.subarray(r.pageSize, 2 * r.pageSize)).toEqual(expected);
    expect(checkPages(r, 2, 2, 7)).toBeNull();
    expect(d.used).toBe(0);
  });

  it('EEXIST: migrateToRam brings back a page whose fault was read but not served yet', async () => {
    const r = track(Region.map({ pages: 4, servicer }));
    const d = track(new Device({ capacity: 4 }));
    fillPages(r, 0, 4, 5);
    expect(r.migrate(0, 4, d)).toBe(4);
    const trace = r.trace();
    hold(r, 1);
    const t = new NativeToucher(r, { threads: 1, iterations: 1, mode: 'increment', pages: [2] });
    await until(() => held(r) === 1, 'the servicer to read the fault');
    // The page comes back by the main thread; that wakes the toucher, whose fault is still queued
    // in the servicer. Served afterwards, it finds the page there.
    expect(r.migrateToRam(2, 1)).toBe(1);
    await t.finished(WAIT_MS);
    release(r);
    await until(() => trace.records().some((x) => x.page === 2), 'the servicer to serve the held fault');
    expect(trace.records().filter((x) => x.page === 2).map((x) => x.outcome)).toEqual(['woken']);
    expect(stat(r, STAT_FILL_RACED)).toBe(1);
    expect(word(r, 2, 0)).toBe((patternWord(2, 0, 5) + 1) >>> 0);
    expect(restIsPattern(r, 2, 4, 5)).toBe(true);
    expect(r.entry(2)).toEqual({ kind: 'present', write: true });
    expect(d.stats().freed).toBe(1);
    expect(checkPages(r, 0, 2, 5)).toBeNull();
    expect(checkPages(r, 3, 1, 5)).toBeNull();
    expect(d.used).toBe(0);
  });
});

describeUffd('ordering and retries with driver hooks (worker servicer)', () => {
  it("EAGAIN: a fault retried after an unread REMOVE keeps its driver's decision; the hook is asked once", async () => {
    const r = track(Region.map({ pages: 8, servicer: 'worker' }));
    const d = track(new Device({ capacity: 8, driver: new URL('./fixtures/asked-once-driver.mjs', import.meta.url) }));
    const errors: Error[] = [];
    d.on('error', (e: Error) => errors.push(e));
    const z = track(new Zapper());
    await z.ready();
    fillPages(r, 0, 8, 8);
    expect(r.migrate(0, 8, d)).toBe(8);
    // The driver is loaded and has answered once (about page 1; page 0 stays on the device: its
    // pageFree runs on the main thread, in another instance of the module than its fault hook).
    expect(checkPages(r, 1, 1, 8)).toBeNull();
    hold(r, 1);
    const t = new NativeToucher(r, { threads: 1, iterations: 1, mode: 'increment', pages: [0] });
    await until(() => held(r) === 1, 'the servicer to read the fault');
    await z.discard(r, 7, 1);
    const before = stat(r, STAT_FILL_RETRIES);
    release(r);
    await t.finished(WAIT_MS);
    expect(await z.finished()).toBe(0);
    expect(stat(r, STAT_FILL_RETRIES) - before).toBeGreaterThanOrEqual(1);
    expect(word(r, 0, 0)).toBe((patternWord(0, 0, 8) + 1) >>> 0);
    expect(checkPages(r, 1, 6, 8)).toBeNull();
    await new Promise((res) => setTimeout(res, 20)); // reports travel as messages
    expect(errors).toEqual([]);
    expect(d.used).toBe(0);
  });
});

// The inline servicer reads no messages, so no event is ever pending (no EAGAIN, no REMOVE to
// order against); but two threads can fault the same page at once, each in its own SIGBUS handler.
describeUffd('ordering and retries with the inline servicer', () => {
  it('EEXIST: threads faulting one read entry at once all get the data; the page stays write-protected', async () => {
    const r = track(Region.map({ pages: 2, servicer: 'inline' }));
    const d = track(new Device({ capacity: 2 }));
    fillPages(r, 0, 2, 6);
    // Two threads read page 1 over and over; each migration to the device makes both fault on it,
    // often together: one handler fills the page, the other finds it there.
    const t = new NativeToucher(r, { threads: 2, iterations: 0, mode: 'read', pages: [1] });
    const deadline = Date.now() + WAIT_MS;
    let rounds = 0;
    try {
      while (stat(r, STAT_FILL_RACED) < 3 && Date.now() < deadline) {
        expect(r.migrate(1, 1, d, { write: false })).toBe(1);
        while (r.entry(1).kind !== 'present') expect(Date.now()).toBeLessThan(deadline + WAIT_MS);
        // A read entry comes back write-protected, whoever else faulted on it meanwhile.
        expect(r.entry(1), `round ${rounds}`).toEqual({ kind: 'present', write: false });
        rounds++;
      }
    } finally {
      t.stop();
      await t.finished(WAIT_MS);
    }
    expect(stat(r, STAT_FILL_RACED), `EEXIST in ${rounds} rounds`).toBeGreaterThanOrEqual(1);
    expect(r.stats().wpFaults).toBe(0); // nobody wrote
    expect(r.stats().migratedBack).toBe(rounds);
    expect(checkPages(r, 0, 2, 6)).toBeNull();
    expect(d.used).toBe(0);
  });

  it('a CPU page zapped behind its back faults once more and reads zero (it used to fault forever)', async () => {
    // In a child: the regression is a thread stuck re-taking SIGBUS, which nothing can interrupt.
    const code = `
      import { Region } from 'uffd-hmm';
      import { native } from ${JSON.stringify(nativeUrl)};
      const r = Region.map({ pages: 2, servicer: 'inline' });
      r.bytes.fill(7);
      if (native.regionDiscard(r.handle, 0, 1) !== 0) throw new Error('madvise failed');
      console.log(JSON.stringify({ zapped: r.bytes[0], kept: r.bytes[r.pageSize] }));
      r.bytes[5] = 9;
      console.log(JSON.stringify({ written: r.bytes[5] }));
      await r.close();
    `;
    const out = await runNode(['--input-type=module', '-e', code], { cwd: repo, timeoutMs: 10_000 });
    expect(out.timedOut, out.out).toBe(false);
    expect(out.code, out.out).toBe(0);
    expect(out.stdout.trim().split('\n').map((l) => JSON.parse(l))).toEqual([{ zapped: 0, kept: 7 }, { written: 9 }]);
  });
});
