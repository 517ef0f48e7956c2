// S10 kernel-mode access, counted: write(2) from device-resident pages and read(2) into them fault
// inside the kernel; with countKernelFaults the servicer tells them from user-mode faults.
import { closeSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { Device, Region } from 'uffd-hmm';
import { checkPages, describeUffd, fillPages, pattern } from './helpers.js';

describeUffd.each(['worker', 'native'] as const)('kernel-mode faults with the %s servicer', (servicer) => {
  it('counts faults taken inside write(2) and read(2), and only those', async () => {
    const r = Region.map({ pages: 6, servicer, countKernelFaults: true });
    const d = new Device({ capacity: 6 });
    const path = join(tmpdir(), `uffd-hmm-kfault-${process.pid}-${servicer}`);
    const fd = openSync(path, 'w+');
    try {
      fillPages(r, 0, 6, 8);
      r.migrate(0, 6, d);
      const s0 = r.stats();
      // write(2) reads pages 0-1 inside the kernel: two kernel-mode faults, served.
      expect(writeSync(fd, r.bytes, 0, 2 * r.pageSize, 0)).toBe(2 * r.pageSize);
      const s1 = r.stats();
      expect(s1.kernelFaults - s0.kernelFaults).toBe(2);
      expect(s1.migratedBack - s0.migratedBack).toBe(2);
      // read(2) into pages 2-3 writes them inside the kernel.
      expect(readSync(fd, r.bytes, 2 * r.pageSize, 2 * r.pageSize, 0)).toBe(2 * r.pageSize);
      expect(r.stats().kernelFaults - s1.kernelFaults).toBe(2);
      expect(checkPages(r, 2, 2, 8)).not.toBeNull(); // they now hold pages 0-1's bytes
      expect(r.bytes[2 * r.pageSize + 9]).toBe(pattern(0, 9, 8));
      // A user-mode touch is not a kernel fault.
      const s2 = r.stats();
      expect(r.bytes[4 * r.pageSize + 1]).toBe(pattern(4, 1, 8));
      expect(r.stats().kernelFaults).toBe(s2.kernelFaults);
      expect(r.stats().faults).toBe(s2.faults + 1);
    } finally {
      closeSync(fd);
      unlinkSync(path);
      await r.close();
      await d.close();
    }
  });
});
