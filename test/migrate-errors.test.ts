// A refused zap leaves a consistent table (issue #22, item 5): the kernel never refuses
// madvise(MADV_DONTNEED) on a mapped, registered range of ours, so these paths are forced with the
// test hook testFailMadvise (native/test_hooks.cc). A migration to the device puts a page's old
// device page only once its zap succeeded, rolls back what it had not zapped (writers let in again,
// new device pages given back) and finishes what it had; a migration back keeps the bytes it
// filled where it could not drop them, and unlocks everything either way.
import { constants } from 'node:os';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Device, Region } from 'uffd-hmm';
import { native } from '../dist/native.js';
import { LOCKED, stateIndex } from '../dist/layout.js';
import { LOCK_DEADLINE_MS, setLockDeadlineForTest } from '../dist/pagelock.js';
import { SERVICERS, closeAfterEach, describeUffd } from './helpers.js';
import { Zapper, until } from './zapper.js';

const track = closeAfterEach();
const ENOMEM = constants.errno.ENOMEM;
const refused = expect.objectContaining({ code: 'ENOMEM', syscall: 'madvise(MADV_DONTNEED)' });

// A page left locked would make the next operation wait out the deadline: fail fast instead.
beforeAll(() => setLockDeadlineForTest(1000));
afterAll(() => setLockDeadlineForTest(LOCK_DEADLINE_MS));

const lockedPages = (r: Region) => Array.from({ length: r.pages }, (_, p) => p).filter((p) => (Atomics.load(r.shared, stateIndex(p)) & LOCKED) !== 0);
const pageIs = (r: Region, p: number, v: number) => r.bytes.subarray(p * r.pageSize, (p + 1) * r.pageSize).every((b) => b === v);

describeUffd.each(SERVICERS)('a refused zap with the %s servicer', (servicer) => {
  it('migrate: nothing moved, writers let in again, the old device page still held', async () => {
    const r = track(Region.map({ pages: 4, servicer }));
    const a = track(new Device({ capacity: 4 }));
    const b = track(new Device({ capacity: 4 }));
    for (let p = 0; p < 3; p++) r.bytes.fill(p + 1, p * r.pageSize, (p + 1) * r.pageSize);
    expect(r.migrate(0, 1, a)).toBe(1); // page 0 on device a: goes device to device
    const onA = r.entry(0);
    const stats = r.stats();
    native.testFailMadvise(r.handle, 0, ENOMEM);
    expect(() => r.migrate(0, 4, b)).toThrow(refused);
    expect(lockedPages(r)).toEqual([]);
    expect(r.entry(0)).toEqual(onA);
    expect(a.used).toBe(1);
    expect(onA.kind === 'device' && a.refcount(onA.pfn)).toBe(1);
    expect(b.used).toBe(0);
    expect(r.entry(1)).toEqual({ kind: 'present', write: true });
    expect(r.entry(3)).toEqual({ kind: 'none' });
    // Writable as before: a write takes no write-protect fault.
    r.bytes[r.pageSize] = 2;
    r.bytes[2 * r.pageSize] = 3;
    expect(r.stats()).toEqual(stats);
    for (let p = 1; p < 3; p++) expect(pageIs(r, p, p + 1)).toBe(true);
    expect(r.migrate(0, 4, b)).toBe(4); // and it works once madvise does
    expect(a.used).toBe(0);
  });

  it('migrate: refused part way, the pages already zapped finish on the device, the rest stay; no byte lost', async () => {
    const r = track(Region.map({ pages: 3, servicer }));
    const d = track(new Device({ capacity: 4 }));
    r.bytes.fill(1, 0, r.pageSize);
    r.bytes.fill(3, 2 * r.pageSize); // page 1 is a hole: two runs to zap, [0] and [2]
    native.testFailMadvise(r.handle, 1, ENOMEM); // the second zap is refused
    expect(() => r.migrate(0, 3, d)).toThrow(refused);
    expect(lockedPages(r)).toEqual([]);
    expect(r.entry(0)).toMatchObject({ kind: 'device', write: true, device: d });
    expect(r.entry(1)).toEqual({ kind: 'none' });
    expect(r.entry(2)).toEqual({ kind: 'present', write: true });
    expect(d.used).toBe(1);
    expect(pageIs(r, 0, 1)).toBe(true);
    expect(pageIs(r, 2, 3)).toBe(true);
    expect(d.used).toBe(0);
  });
});

describeUffd.each(['worker', 'native'] as const)('a refused zap in a migration back with the %s servicer', (servicer) => {
  it("a zap by someone else to apply, refused: the page keeps the bytes it got back, nothing stays locked", async () => {
    const r = track(Region.map({ pages: 2, servicer }));
    const d = track(new Device({ capacity: 2 }));
    const z = track(new Zapper());
    await z.ready();
    r.bytes.fill(0x5a);
    expect(r.migrate(0, 2, d)).toBe(2);
    // Someone zaps page 0; the servicer holds that REMOVE unapplied while migrateToRam fills it.
    const held = native.testHoldServicer(r.handle, 0, 0);
    native.testHoldServicer(r.handle, 1, 300);
    expect(await z.discardNow(r, 0, 1)).toBe(0);
    await until(() => native.testHoldServicer(r.handle, 0, 0) > held, 'the servicer to read the REMOVE');
    native.testFailMadvise(r.handle, 0, ENOMEM); // the zap migrateToRam owes page 0 is refused
    expect(() => r.migrateToRam(0, 2)).toThrow(refused);
    expect(lockedPages(r)).toEqual([]);
    expect(r.entry(0)).toEqual({ kind: 'present', write: true });
    expect(r.entry(1)).toEqual({ kind: 'present', write: true });
    expect(d.used).toBe(0);
    expect(pageIs(r, 0, 0x5a)).toBe(true);
    expect(pageIs(r, 1, 0x5a)).toBe(true);
  });
});
