// A driver module that cannot be loaded: a file that does not exist fails `new Device` at once,
// naming the path it resolved to; any other failure to load is reported once per device (an
// 'error' event, or one warning with no listener), never once per page.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { Device, Region } from 'uffd-hmm';
import { describeUffd, runNode } from './helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));

it('a driver path that does not exist throws ERR_DRIVER_LOAD naming the resolved path', () => {
  const err = (() => {
    try {
      new Device({ name: 'nodriver', driver: './does-not-exist.mjs' });
    } catch (e) {
      return e as Error & { code?: string };
    }
    return undefined;
  })();
  expect(err?.code).toBe('ERR_DRIVER_LOAD');
  expect(err?.message).toContain(path.resolve('does-not-exist.mjs'));
  expect(() => new Device({ driver: new URL('file:///nonexistent-dir/driver.mjs') })).toThrow(
    expect.objectContaining({ code: 'ERR_DRIVER_LOAD', message: expect.stringContaining('/nonexistent-dir/driver.mjs') }),
  );
  // A name that is not a file: URL (a bare specifier, data:) is left to import() and reported later.
  expect(() => new Device({ driver: 'data:text/javascript,export function fault() {}' }).close()).not.toThrow();
});

describeUffd('a driver that fails to load', () => {
  it("is one 'error' event per device, however many pages fault and free", async () => {
    const gpu = new Device({ name: 'broken', capacity: 64, driver: new URL('./fixtures/broken-at-load-driver.mjs', import.meta.url) });
    const errors: (Error & { code?: string })[] = [];
    gpu.on('error', (e: Error) => errors.push(e));
    const r = Region.map({ pages: 32 });
    try {
      r.bytes.fill(1);
      expect(r.migrate(0, 32, gpu)).toBe(32);
      for (let p = 0; p < 32; p++) expect(r.bytes[p * r.pageSize]).toBe(1); // served by the default policy
      await new Promise((res) => setTimeout(res, 300)); // every pageFree attempt and worker report lands
    } finally {
      await r.close();
      await gpu.close();
    }
    await new Promise((res) => setTimeout(res, 100));
    expect(errors.map((e) => e.code)).toEqual(['ERR_DRIVER_LOAD']);
    expect(errors[0].message).toContain('broken-at-load-driver.mjs');
    expect(errors[0].message).toContain('this driver is broken on purpose');
  });

  it('is one warning with no listener', async () => {
    const o = await runNode([path.join(here, 'fixtures', 'driver-load-child.mjs')], { timeoutMs: 30_000 });
    expect({ code: o.code, timedOut: o.timedOut }, o.out).toEqual({ code: 0, timedOut: false });
    expect(JSON.parse(o.stdout.trim().split('\n').pop()!)).toEqual({ warnings: 1, back: 32 });
  });
});
