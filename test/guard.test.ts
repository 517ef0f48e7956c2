// No fault is ever left unserved: when the worker servicer dies with threads blocked on faults,
// a native guard takes the region over with the default policy and the failure is reported.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { Device, NativeToucher, Region, configureServicers } from 'uffd-hmm';
import { WorkerServicer } from '../dist/servicer/host.js';
import { HOLDER_OWNER, LOCKED, VERDICT_MIGRATE, stateIndex } from '../dist/layout.js';
import { native } from '../dist/native.js';
import { checkPages, describeUffd, fillPages, runNode } from './helpers.js';

const pfnOf = (r: Region, p: number): number => (r.entry(p) as { pfn: number }).pfn;
const lockedNow = (r: Region, p: number): boolean => (Atomics.load(r.shared, stateIndex(p)) & LOCKED) !== 0;

/** Polls until cond() holds; every wait has a deadline. */
async function until(cond: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 2));
  }
}

// Every worker servicer this file starts gives up on a stalled worker after 300 ms.
configureServicers({ stallDeadlineMs: 300 });

describeUffd('servicer guard', () => {
  it('takes over when the worker is terminated mid-fault; every byte comes back', async () => {
    const pages = 256;
    const r = Region.map({ pages });
    const d = new Device({ capacity: pages });
    fillPages(r, 0, pages, 11);
    expect(r.migrate(0, pages, d)).toBe(pages);
    const errors: Error[] = [];
    r.on('error', (e: Error) => errors.push(e));
    const t = new NativeToucher(r, { threads: 2, iterations: 20_000, mode: 'read', seed: 3 });
    await WorkerServicer.get().terminateForTest();
    await t.finished(20_000);
    await new Promise((res) => setTimeout(res, 50));
    expect(r.guarded).toBe(true);
    expect(errors.length).toBeGreaterThan(0);
    expect(errors[0]).toMatchObject({ code: 'ERR_SERVICER_FAILED' });
    expect(checkPages(r, 0, pages, 11)).toBeNull();
    expect(d.used).toBe(0);
    // New regions get a fresh worker.
    const r2 = Region.map({ pages: 2 });
    r2.bytes[0] = 5;
    expect(r2.bytes[0]).toBe(5);
    expect(r2.guarded).toBe(false);
    await r2.close();
    await r.close();
    await d.close();
  });

  it('takes over natively while the main thread is blocked waiting for the dead servicer', () => {
    const fixture = fileURLToPath(new URL('./fixtures/guard-blocked-main.mjs', import.meta.url));
    const res = spawnSync(process.execPath, [fixture], { timeout: 30_000, encoding: 'utf8' });
    expect(res.error).toBeUndefined();
    expect(res.status).toBe(0);
    expect(res.stdout).toContain('ok guarded=true used=0');
  });

  it('takes over when a driver hook stalls the worker past the deadline, and says so', async () => {
    const pages = 32;
    const d = new Device({ capacity: pages, driver: new URL('./fixtures/stalling-driver.mjs', import.meta.url) });
    const r = Region.map({ pages });
    fillPages(r, 0, pages, 21);
    r.migrate(0, pages, d);
    const errors: Error[] = [];
    r.on('error', (e: Error) => errors.push(e));
    const started = Date.now();
    const t = new NativeToucher(r, { threads: 2, iterations: 5000, mode: 'read' });
    await t.finished(20_000);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(r.guarded).toBe(true);
    expect(checkPages(r, 0, pages, 21)).toBeNull();
    expect(d.used).toBe(0);
    const deadline = Date.now() + 5000;
    while (errors.length === 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    expect(errors[0]).toMatchObject({ code: 'ERR_SERVICER_STALLED' });
    await r.close();
    await d.close();
  });
});

describeUffd("a takeover releases only the stalled servicer's locks", () => {
  it("discard waiting for its own REMOVE keeps its page through the takeover, and frees that page's device page", async () => {
    const d = new Device({ capacity: 8, driver: new URL('./fixtures/busy-driver.mjs', import.meta.url) });
    const r = Region.map({ pages: 4 });
    for (let p = 0; p < 4; p++) r.bytes.fill(0xa0 + p, p * r.pageSize, (p + 1) * r.pageSize);
    expect(r.migrate(2, 1, d)).toBe(1); // page 2 names pfn 0
    expect(r.migrate(0, 2, d)).toBe(2);
    const pfn2 = pfnOf(r, 2);
    const errors: Error[] = [];
    r.on('error', (e: Error) => errors.push(e));
    // A toucher's fault on page 0 goes to the hook, busy for 1.5 s with page 0 locked for it.
    const t = new NativeToucher(r, { threads: 1, iterations: 1, mode: 'read', pages: [0] });
    await until(() => lockedNow(r, 0), 'the hook to hold page 0');
    // discard holds page 1 while its MADV_DONTNEED waits for a servicer to read the REMOVE: the
    // guard, once the watchdog took over at 300 ms. The guard must see that REMOVE as discard's own.
    r.discard(1, 1);
    expect(r.entry(1)).toEqual({ kind: 'none' });
    expect(d.refcount(pfn2)).toBe(1);
    expect(r.migrate(3, 1, d)).toBe(1); // takes a free pfn: never page 2's
    expect(pfnOf(r, 3)).not.toBe(pfn2);
    expect(r.bytes[2 * r.pageSize + 9]).toBe(0xa2);
    await t.finished(10_000);
    expect(r.bytes[9]).toBe(0xa0);
    expect(r.bytes[3 * r.pageSize + 9]).toBe(0xa3);
    expect(r.guarded).toBe(true);
    expect(d.used).toBe(0);
    await until(() => errors.length > 0, 'the stall to be reported');
    expect(errors.map((e) => (e as { code?: string }).code), String(errors)).toContain('ERR_SERVICER_STALLED');
    await r.close();
    await d.close();
  });

  it("a faultServe that comes back after the takeover refuses: the page is someone else's now", async () => {
    const d = new Device({ capacity: 2 });
    const r = Region.map({ pages: 2 });
    r.bytes.fill(7);
    expect(r.migrate(0, 2, d)).toBe(2);
    const idx = stateIndex(0);
    const s = Atomics.load(r.shared, idx);
    const pfn = pfnOf(r, 0);
    // The region's owner holds page 0 (as a migration would), and a guard takes the region over.
    expect(Atomics.compareExchange(r.shared, idx, s, s | LOCKED | HOLDER_OWNER)).toBe(s);
    native.regionTakeOver(r.handle); // false if a guard took it over already (a worker still failing)
    expect(r.guarded).toBe(true);
    // The old servicer's answer for page 0, as if its driver had been asked before the takeover.
    expect(native.faultServe(r.handle, 0, 0, 0, 0, VERDICT_MIGRATE, s, pfn, true, 0)).toBe(3);
    expect(Atomics.load(r.shared, idx)).toBe(s | LOCKED | HOLDER_OWNER);
    expect(d.refcount(pfn)).toBe(1);
    Atomics.store(r.shared, idx, s);
    expect(r.bytes[5]).toBe(7);
    expect(d.used).toBe(1);
    await r.close();
    await d.close();
  });
});

describeUffd('a fork while the worker servicer is stuck', () => {
  it('completes: the watchdog takes over, allocating nothing, and reads the FORK event (8 s stall)', async () => {
    const o = await runNode([fileURLToPath(new URL('./fixtures/fork-during-stall.mjs', import.meta.url)), 'stalled'], { timeoutMs: 40_000 });
    expect({ timedOut: o.timedOut, code: o.code }, o.out).toEqual({ timedOut: false, code: 0 });
    expect(o.stdout).toMatch(/spawn status=0 ms=\d+/);
    expect(o.stdout).toContain('ok guarded=true byte=3 used=3');
  }, 60_000);

  it('does not wait for a poller the watchdog already declared dead', async () => {
    const o = await runNode([fileURLToPath(new URL('./fixtures/fork-during-stall.mjs', import.meta.url)), 'dead'], { timeoutMs: 30_000 });
    expect({ timedOut: o.timedOut, code: o.code }, o.out).toEqual({ timedOut: false, code: 0 });
    const ms = Number(/spawn status=0 ms=(\d+)/.exec(o.stdout)?.[1]);
    expect(ms, o.out).toBeLessThan(2500); // prepareFork gave a worker 5 s to reach pollerWait
    expect(o.stdout).toContain('ok guarded=true byte=3 used=3');
  }, 60_000);
});

describeUffd('a crashed worker servicer', () => {
  it('never holds up process.exit (a driver module that throws while it loads, 12 runs)', async () => {
    // The worker that threw kept looping in pollerWait over an empty set, and process.exit() joined
    // it for ever (about one run in three): the host now stops and terminates a failed worker.
    const scenario = fileURLToPath(new URL('./fixtures/errors/scenario.mjs', import.meta.url));
    for (let i = 0; i < 12; i++) {
      const o = await runNode([scenario, 'servicer-crashed'], { timeoutMs: 10_000 });
      expect({ run: i, code: o.code, timedOut: o.timedOut }, o.out).toEqual({ run: i, code: 0, timedOut: false });
      expect(o.stdout).toContain('ERR_SERVICER_FAILED');
    }
  }, 60_000);
});
