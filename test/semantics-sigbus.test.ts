// S2 (driver refusal) and S8 (poison), plus the driver hooks around them: a refusing `fault` hook
// kills the faulting thread with SIGBUS, a throwing one is reported but the fault is still served, pageFree sees every free.
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { Device, HMM_DMIRROR_PROT_ERROR, Region } from 'uffd-hmm';
import { native } from '../dist/native.js';
import { checkPages, closeAfterEach, describeUffd, fillPages } from './helpers.js';
import { describeOutcome, jsonLines, runChild } from './fixtures/semantics/run-child.js';

const child = fileURLToPath(new URL('./fixtures/semantics/sigbus-child.mjs', import.meta.url));
const driver = (name: string) => new URL(`./fixtures/semantics/drivers/${name}`, import.meta.url);
const CHANNEL = 'uffd-hmm-semantics-recording-driver'; // as in drivers/recording.mjs

const track = closeAfterEach();

/** Polls until cond() holds; every wait has a deadline. */
async function until(cond: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

type HookCall =
  | { hook: 'fault'; deviceName: string; pfn: number; page: number; address: bigint; write: boolean; kernelMode: boolean; main: boolean }
  | { hook: 'pageFree'; deviceName: string; pfn: number; main: boolean };

/** Collects what drivers/recording.mjs reports, from the worker servicer and the main thread alike. */
function recordHooks(): { calls: HookCall[]; close(): Promise<void> } {
  const calls: HookCall[] = [];
  const channel = new BroadcastChannel(CHANNEL);
  channel.onmessage = (e) => calls.push((e as MessageEvent<HookCall>).data);
  return { calls, close: async () => channel.close() };
}

// Hooks run only in the default 'worker' servicer (the native one cannot call JS), so these
// tests use it; the refusing cases die, so they run in children.
describeUffd('driver refusal: SIGBUS in the faulting thread (child processes)', () => {
  for (const access of ['read', 'write'] as const) {
    it.concurrent(`a driver refusing every fault: a CPU ${access} of a device page dies of SIGBUS`, async ({ expect }) => {
      const o = await runChild(child, ['refuse-all.mjs', access]);
      expect(o.timedOut, describeOutcome(o)).toBe(false);
      expect(o.signal, describeOutcome(o)).toBe('SIGBUS');
      expect(jsonLines(o.stdout)[0]).toEqual({ entry: 'device', used: 4 });
      expect(o.stdout).toContain(`TOUCH 2 ${access}`);
      expect(o.stdout).not.toContain('VALUE');
      expect(o.stdout).not.toContain('SURVIVED');
    });
  }

  it.concurrent('a fault that arrives while the driver module is still loading waits for its hook (and is refused)', async ({ expect }) => {
    const o = await runChild(child, ['refuse-all-slow-load.mjs', 'read-at-once']);
    expect(o.timedOut, describeOutcome(o)).toBe(false);
    expect(o.signal, describeOutcome(o)).toBe('SIGBUS');
    expect(o.stdout).not.toContain('VALUE');
  });

  it.concurrent('a driver refusing every 10th page: the scan serves pages 0-8 intact and dies exactly at page 9', async ({ expect }) => {
    const o = await runChild(child, ['refuse-every-10th.mjs', 'scan']);
    expect(o.timedOut, describeOutcome(o)).toBe(false);
    expect(o.signal, describeOutcome(o)).toBe('SIGBUS');
    const lines = o.stdout.trim().split('\n');
    const want = [...Array(9).keys()].flatMap((p) => [`TOUCH ${p}`, `OK ${p}`]).concat('TOUCH 9');
    expect(lines).toEqual(want);
  });

  it.concurrent('a refusal inside write(2) fails the call with EFAULT and leaves the entry; the next touch asks again', async ({ expect }) => {
    const o = await runChild(child, ['refuse-first.mjs', 'syscall']);
    expect(o.timedOut, describeOutcome(o)).toBe(false);
    expect({ code: o.code, signal: o.signal }, describeOutcome(o)).toEqual({ code: 0, signal: null });
    expect(jsonLines(o.stdout)[0]).toEqual({ code: 'EFAULT', entry: 'device', used: 3, page1: true, page1Entry: 'present' });
    expect(o.stdout).toContain(`VALUE ${(0 * 131 + 5 * 7 + 1) & 0xff}`);
    expect(o.stdout).toContain('SURVIVED');
  });

  it.concurrent('a refused CPU access gets SIGBUS with BUS_ADRERR at the faulting address; a handler that returns makes it ask again', async ({ expect }) => {
    const o = await runChild(child, ['refuse-twice.mjs', 'cpu-record']);
    expect(o.timedOut, describeOutcome(o)).toBe(false);
    expect({ code: o.code, signal: o.signal }, describeOutcome(o)).toEqual({ code: 0, signal: null });
    const BUS_ADRERR = 2;
    // Two refusals, each a SIGBUS at byte 3 of page 2; the third ask migrates and the read completes.
    expect(jsonLines(o.stdout)[0]).toEqual({
      count: 2,
      code: BUS_ADRERR,
      offset: 2 * 4096 + 3,
      value: (2 * 131 + 3 * 7 + 1) & 0xff,
      before: 'device',
      after: 'present',
      used: 3,
    });
  });

  it.concurrent('a thread that blocks the refusal signal gets a queued SIGBUS (SI_QUEUE) at the faulting address', async ({ expect }) => {
    const o = await runChild(child, ['refuse-twice.mjs', 'cpu-blocked']);
    expect(o.timedOut, describeOutcome(o)).toBe(false);
    expect({ code: o.code, signal: o.signal }, describeOutcome(o)).toEqual({ code: 0, signal: null });
    const SI_QUEUE = -1;
    expect(jsonLines(o.stdout)[0]).toMatchObject({ count: 2, code: SI_QUEUE, offset: 2 * 4096 + 3, after: 'present' });
  });

  it.concurrent('a page poisoned as by hardware raises SIGBUS whenever touched (S8)', async ({ expect }) => {
    const o = await runChild(child, ['refuse-first.mjs', 'hwpoison']);
    expect(o.timedOut, describeOutcome(o)).toBe(false);
    expect(o.signal, describeOutcome(o)).toBe('SIGBUS');
    expect(jsonLines(o.stdout)[0]).toEqual({ entry: 'poison', snapshot: HMM_DMIRROR_PROT_ERROR, used: 3 });
    expect(o.stdout).toContain('TOUCH 0 read');
    expect(o.stdout).not.toContain('VALUE');
  });
});

describeUffd('a refusal is the kernel\'s VM_FAULT_SIGBUS: that access fails, nothing else changes', () => {
  it('write(2) from a device page whose driver refuses twice: EFAULT, EFAULT, then the 16 bytes; entry, data and device page intact', async () => {
    const calls: { hook: string; deviceName: string; call?: number }[] = [];
    const channel = new BroadcastChannel('uffd-hmm-semantics-refuse-twice');
    channel.onmessage = (e) => calls.push((e as MessageEvent<{ hook: string; deviceName: string }>).data);
    track({ close: async () => channel.close() });
    const r = track(Region.map({ pages: 2 }));
    // A module instance of its own (the query): its count of asks starts at 0 whatever ran before.
    const d = track(new Device({ name: 'twice0', capacity: 2, driver: driver('refuse-twice.mjs?issue-sequence') }));
    fillPages(r, 0, 2, 6);
    expect(r.migrate(0, 1, d)).toBe(1);
    const entry = r.entry(0);
    const pfn = (entry as { pfn: number }).pfn;
    const data = Buffer.from(d.read(pfn));
    const used = d.used;
    const dir = mkdtempSync(path.join(tmpdir(), 'uffd-hmm-refusal-'));
    const fd = openSync(path.join(dir, 'out'), 'w');
    const results: (number | string)[] = [];
    const mine = () => calls.filter((c) => c.deviceName === 'twice0');
    try {
      for (let i = 0; i < 3; i++) {
        try {
          results.push(writeSync(fd, r.bytes.subarray(0, 16)));
        } catch (e) {
          results.push((e as { code: string }).code);
        }
        if (i < 2) {
          // Nothing changed: the entry, its device page and its data, and no page was freed.
          expect(r.entry(0)).toEqual(entry);
          expect(Buffer.from(d.read(pfn)).equals(data)).toBe(true);
          expect({ used: d.used, refcount: d.refcount(pfn) }).toEqual({ used, refcount: 1 });
          await until(() => mine().filter((c) => c.hook === 'fault').length >= i + 1, `ask ${i + 1}`);
          await new Promise((res) => setTimeout(res, 30)); // a pageFree would have been drained by now
          expect(mine().filter((c) => c.hook === 'pageFree')).toEqual([]);
        }
      }
    } finally {
      closeSync(fd);
    }
    const written = readFileSync(path.join(dir, 'out'));
    rmSync(dir, { recursive: true, force: true });
    expect(results).toEqual(['EFAULT', 'EFAULT', 16]);
    expect(written.equals(data.subarray(0, 16))).toBe(true);
    // Each access asked the driver: three asks, the third migrated the page back and freed its device page.
    await until(() => mine().some((c) => c.hook === 'pageFree'), 'pageFree');
    expect(mine().filter((c) => c.hook === 'fault').map((c) => c.call)).toEqual([1, 2, 3]);
    expect(mine().filter((c) => c.hook === 'pageFree')).toHaveLength(1);
    expect(r.entry(0)).toEqual({ kind: 'present', write: true });
    expect(checkPages(r, 0, 2, 6)).toBeNull();
    expect(d.used).toBe(0);
  });
});

describeUffd('a refusal that cannot be delivered', () => {
  it('write(2) from a thread that blocks the refusal signal: migrated back instead, and reported as ERR_DRIVER_HOOK', async () => {
    const r = track(Region.map({ pages: 1 }));
    const d = track(new Device({ name: 'refuse-blocked', capacity: 1, driver: driver('refuse-twice.mjs?blocked') }));
    const errors: Error[] = [];
    d.on('error', (e: Error) => errors.push(e));
    fillPages(r, 0, 1, 8);
    expect(r.migrate(0, 1, d)).toBe(1);
    const dir = mkdtempSync(path.join(tmpdir(), 'uffd-hmm-refusal-'));
    const fd = openSync(path.join(dir, 'out'), 'w');
    native.testBlockRefusalSignal(true);
    let n: number;
    try {
      n = writeSync(fd, r.bytes.subarray(0, 16));
    } finally {
      native.testBlockRefusalSignal(false);
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
    expect(n).toBe(16);
    expect(r.entry(0)).toEqual({ kind: 'present', write: true });
    expect(checkPages(r, 0, 1, 8)).toBeNull();
    await until(() => errors.length > 0, 'the report');
    expect(errors[0]).toMatchObject({ code: 'ERR_DRIVER_HOOK' });
    expect(errors[0].message).toContain('SIGRTMAX-4');
  });
});

describeUffd('driver hooks in the worker servicer', () => {
  it('a throwing fault hook: every fault is still served by the default policy and each error is reported', async () => {
    const r = track(Region.map({ pages: 4 }));
    const d = track(new Device({ name: 'buggy', capacity: 4, driver: driver('throwing.mjs') }));
    const errors: Error[] = [];
    d.on('error', (e: Error) => errors.push(e));
    fillPages(r, 0, 4, 3);
    const pfns = [0, 1, 2, 3].map((p) => (r.migrate(p, 1, d), (r.entry(p) as { pfn: number }).pfn));
    expect(checkPages(r, 0, 4, 3)).toBeNull(); // four faults, each through the throwing hook
    for (let p = 0; p < 4; p++) expect(r.entry(p)).toEqual({ kind: 'present', write: true });
    expect(d.used).toBe(0);
    expect(r.stats()).toMatchObject({ migratedBack: 4 });
    expect(d.stats()).toMatchObject({ faults: 4, migratedToRam: 4, freed: 4 });
    await until(() => errors.length >= 4, 'four ERR_DRIVER_HOOK errors');
    expect(errors).toHaveLength(4);
    for (const e of errors) {
      expect(e).toBeInstanceOf(Error);
      expect(e).toMatchObject({ code: 'ERR_DRIVER_HOOK' });
      expect(e.message).toContain('buggy');
    }
    // The driver's own error travels along as the cause, naming the pfn it failed on.
    const causes = errors.map((e) => String((e.cause as Error | undefined)?.message)).sort();
    expect(causes).toEqual(pfns.map((pfn) => `driver bug at pfn ${pfn}`).sort());
  });

  it('the fault hook gets { deviceName, pfn, page, address, write, kernelMode } for each CPU access', async () => {
    const rec = track(recordHooks());
    const r = track(Region.map({ pages: 4 }));
    const d = track(new Device({ name: 'rec0', capacity: 4, driver: driver('recording.mjs') }));
    fillPages(r, 0, 4);
    r.migrate(0, 4, d);
    const pfn = (p: number) => (r.entry(p) as { pfn: number }).pfn;
    const [pfn1, pfn3] = [pfn(1), pfn(3)];
    void r.bytes[r.pageSize + 9]; // read of page 1
    r.bytes[3 * r.pageSize + 9] = 1; // write to page 3
    await until(() => rec.calls.filter((c) => c.hook === 'fault' && c.deviceName === 'rec0').length >= 2, 'two fault hook calls');
    const faults = rec.calls.filter((c) => c.hook === 'fault' && c.deviceName === 'rec0');
    expect(faults).toEqual([
      { hook: 'fault', deviceName: 'rec0', pfn: pfn1, page: 1, address: r.address + BigInt(r.pageSize), write: false, kernelMode: false, main: false },
      { hook: 'fault', deviceName: 'rec0', pfn: pfn3, page: 3, address: r.address + BigInt(3 * r.pageSize), write: true, kernelMode: false, main: false },
    ]);
  });

  it('pageFree gets { deviceName, pfn } for every freed device page, on the thread that created the Device: after fault-back, migrateToRam and close', async () => {
    const rec = track(recordHooks());
    const r = track(Region.map({ pages: 6 }));
    const d = track(new Device({ name: 'rec1', capacity: 6, driver: driver('recording.mjs') }));
    fillPages(r, 0, 6);
    r.migrate(0, 6, d);
    const pfns = [0, 1, 2, 3, 4, 5].map((p) => (r.entry(p) as { pfn: number }).pfn);
    expect(checkPages(r, 0, 2)).toBeNull(); // pages 0-1 fault back: freed by the fault engine
    expect(r.migrateToRam(2, 1)).toBe(1); // page 2 migrated back by the main thread
    await r.close(); // pages 3-5 freed by the region's teardown on the main thread
    expect(d.used).toBe(0);
    expect(d.stats().freed).toBe(6);
    // The main thread's hook runs after a dynamic import of the driver: wait for it.
    // Calls are told apart by device name: an earlier test's device may still report frees here.
    const frees = () => rec.calls.filter((c) => c.hook === 'pageFree' && c.deviceName === 'rec1');
    await until(() => frees().length >= 6, 'six pageFree calls');
    await new Promise((res) => setTimeout(res, 50)); // and no seventh
    const byThread = (main: boolean) =>
      frees().filter((c) => c.main === main).map((c) => c.pfn).sort((a, b) => a - b);
    expect(frees()).toHaveLength(6);
    expect(byThread(false)).toEqual([]);
    expect(byThread(true)).toEqual([...pfns].sort((a, b) => a - b));
  });
});
