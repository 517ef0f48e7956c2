// The inline servicer (UFFD_FEATURE_SIGBUS): faults served by a SIGBUS handler in the faulting
// thread. The shared core suite runs on it too (test/core.test.ts); these are its own cases.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { Device, NativeToucher, Region } from 'uffd-hmm';
import { checkPages, describeUffd, fillPages } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/inline-foreign-sigbus.mjs', import.meta.url));

describeUffd('inline servicer', () => {
  it('serves the JS main thread, native threads and write-protect faults in the faulting thread', async () => {
    const r = Region.map({ pages: 64, servicer: 'inline' });
    const d = new Device({ capacity: 64 });
    fillPages(r, 0, 64, 2);
    r.migrate(0, 64, d, { write: false });
    const t = new NativeToucher(r, { threads: 2, iterations: 5000, mode: 'read' });
    await t.finished(20_000);
    expect(checkPages(r, 0, 64, 2)).toBeNull();
    expect(d.used).toBe(0);
    const s = r.stats();
    expect(s.migratedBack).toBe(64);
    r.bytes[0] = 1;
    expect(r.entry(0)).toEqual({ kind: 'present', write: true });
    expect(r.stats().wpFaults).toBe(s.wpFaults + 1);
    await r.close();
    await d.close();
  });

  it('fails system calls on device-resident pages with EFAULT (the kernel cannot deliver SIGBUS there)', async () => {
    const { writeSync, openSync, closeSync, unlinkSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const path = `${tmpdir()}/uffd-hmm-inline-${process.pid}`;
    const fd = openSync(path, 'w');
    const r = Region.map({ pages: 2, servicer: 'inline' });
    const d = new Device({ capacity: 2 });
    try {
      r.bytes[0] = 1;
      r.migrate(0, 1, d);
      expect(() => writeSync(fd, r.bytes, 0, 16)).toThrow(expect.objectContaining({ code: 'EFAULT' }));
      expect(r.entry(0).kind).toBe('device');
      expect(r.bytes[0]).toBe(1); // a CPU touch still works
    } finally {
      closeSync(fd);
      unlinkSync(path);
      await r.close();
      await d.close();
    }
  });

  it.each(['kill', 'poison'])('a SIGBUS that is not an inline fault (%s) still kills the process with SIGBUS', (how) => {
    const res = spawnSync(process.execPath, [fixture, how], { timeout: 20_000, encoding: 'utf8' });
    expect(res.error).toBeUndefined();
    expect(res.signal).toBe('SIGBUS');
  });
});
