// No fault is ever left unserved: when the worker servicer dies with threads blocked on faults,
// a native guard takes the region over with the default policy and the failure is reported.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { Device, NativeToucher, Region, configureServicers } from 'uffd-hmm';
import { WorkerServicer } from '../dist/servicer/host.js';
import { checkPages, describeUffd, fillPages, runNode } from './helpers.js';

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
