// The worker servicer never leaves a page locked for a fault it gave up on (issue #22, item 6). A
// fault whose driver must decide reaches the worker's JS as an ask record with its page locked for
// it. If an earlier record of the same batch drained the worker's messages and with them the
// region's 'drop-region' (the region is closing), the worker skipped the record and the page stayed
// locked: the close then waited out the page-lock deadline and failed.
//
// The batch is built for real: the servicer is held (native/test_hooks.cc) on region C's fault
// while region A is mapped and faults and B faults; C's fault is deferred (its page locked here),
// so the same pollerWait goes on to read A's fault (an ask, of a region the worker's JS has not
// heard of: it drains its messages) and then B's (held until B's drop-region is posted).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Device, NativeToucher, Region } from 'uffd-hmm';
import { native } from '../dist/native.js';
import { LOCKED, stateIndex } from '../dist/layout.js';
import { LOCK_DEADLINE_MS, lockPage, setLockDeadlineForTest, unlockPage } from '../dist/pagelock.js';
import { WorkerServicer } from '../dist/servicer/host.js';
import { closeAfterEach, describeUffd } from './helpers.js';
import { IN_FAULT, WAIT_MS, blockedIn, until } from './zapper.js';

const track = closeAfterEach();
// A page left locked makes close() wait out the deadline: a second, not ten.
beforeAll(() => setLockDeadlineForTest(1000));
afterAll(() => setLockDeadlineForTest(LOCK_DEADLINE_MS));

const driver = new URL('./fixtures/slow-driver.mjs', import.meta.url); // no flag: answers at once
const held = (r: Region) => native.testHoldServicer(r.handle, 0, 0);
const locked = (r: Region) => (Atomics.load(r.shared, stateIndex(0)) & LOCKED) !== 0;

describeUffd('the worker servicer and a region it was told to drop', () => {
  it('unlocks the page of an ask it skips, so that the region closes', async () => {
    const d = track(new Device({ capacity: 8, driver }));
    const warm = track(Region.map({ pages: 1, servicer: 'worker' }));
    warm.migrate(0, 1, d);
    expect(warm.bytes[0]).toBe(0); // the worker has loaded the driver and asked its hook
    const b = Region.map({ pages: 1, servicer: 'worker' });
    b.migrate(0, 1, d);
    const c = track(Region.map({ pages: 1, servicer: 'worker' }));

    // The worker reads C's fault and is held there.
    native.testHoldServicer(c.handle, 1, WAIT_MS);
    const tc = new NativeToucher(c, { threads: 1, iterations: 1, mode: 'read', pages: [0] });
    await until(() => held(c) === 1, "the worker to read C's fault");
    const cState = lockPage(c.shared, 0); // C's fault will be deferred: the worker keeps reading
    // A is announced (a message the worker has not drained) and faults; then B faults.
    const a = track(Region.map({ pages: 1, servicer: 'worker' }));
    a.migrate(0, 1, d);
    const ta = new NativeToucher(a, { threads: 1, iterations: 1, mode: 'read', pages: [0] });
    native.testHoldServicer(b.handle, 1, WAIT_MS);
    const tb = new NativeToucher(b, { threads: 1, iterations: 1, mode: 'read', pages: [0] });
    await until(() => blockedIn(IN_FAULT) >= 3, 'the faults of A, B and C to wait');
    native.testReleaseServicer(c.handle, 1);
    await until(() => held(b) === 1, "the worker to read B's fault (after A's) in the same batch");
    // B is closing: the worker is told to drop it while B's fault waits in the batch, its ask next.
    WorkerServicer.get().removeRegion(b.handle);
    unlockPage(c.shared, 0, cState);
    native.testReleaseServicer(b.handle, 1);
    await ta.finished(WAIT_MS);
    await tc.finished(WAIT_MS);
    // A's ask drained the drop; B's ask is skipped, and its page must not stay locked.
    await until(() => !locked(b), "B's page to be unlocked", 2000).catch(() => {});
    expect(locked(b), "B's page stayed locked for a skipped ask").toBe(false);
    await b.close();
    await tb.finished(WAIT_MS); // woken by the close, it reads plain memory
    expect(a.bytes[0]).toBe(0);
  });
});
