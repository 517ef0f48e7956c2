// S3 fork (copy_one_pte): device pages become shared with the child, write entries turn into read
// entries in both processes, a page migrated back in either comes back for both, the first writer
// gets its own copy, and a device page is freed only when no process maps it. Foreign forks
// (child_process) neither hang nor inherit a userfaultfd.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { Device, PM_MMAP_EXCLUSIVE, Region } from 'uffd-hmm';
import { crc32, describeUffd, fillPages, pattern } from './helpers.js';

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

describeUffd.each(['worker', 'native'] as const)('fork with the %s servicer', (servicer) => {
  it('parent and child each write and each keep their own bytes (anon_write_child, hmm_cow_in_device)', async () => {
    const r = Region.map({ pages: 4, servicer });
    const d = new Device({ capacity: 4 });
    fillPages(r, 0, 4, 1);
    r.migrate(0, 4, d);
    const child = r.fork([
      { op: 'write', page: 1, offset: 0, value: 201 },
      { op: 'read', page: 1, offset: 0 },
      { op: 'sleep', ms: 300 },
      { op: 'read', page: 2, offset: 5 },
    ]);
    // While the child sleeps the parent writes page 2: it migrates back for both, the parent's
    // write takes a write-protect fault and gets its own copy; the child still sees the old byte.
    await until(() => r.entry(1).kind === 'present', 'the child to fault page 1 back');
    r.bytes[2 * r.pageSize + 5] = 77;
    const res = await child;
    expect(res).toMatchObject({ exitCode: 0, signal: null });
    expect(res.results).toEqual([0, 201, 0, pattern(2, 5, 1)]);
    expect(r.bytes[r.pageSize]).toBe(pattern(1, 0, 1)); // the child's write stayed in the child
    expect(r.bytes[2 * r.pageSize + 5]).toBe(77);
    expect(res.stats.wpFaults).toBeGreaterThanOrEqual(1);
    await r.close();
    expect(d.used).toBe(0);
    await d.close();
  });

  it('shares device pages: refcount 2, read entries in the parent, not exclusive in pagemap', async () => {
    const r = Region.map({ pages: 3, servicer });
    const d = new Device({ capacity: 3 });
    fillPages(r, 0, 3, 2);
    r.migrate(0, 3, d);
    const pfn = (r.entry(2) as { pfn: number }).pfn;
    expect(d.refcount(pfn)).toBe(1);
    expect(r.pagemap(2, 1)[0] & PM_MMAP_EXCLUSIVE).toBe(PM_MMAP_EXCLUSIVE);
    const child = r.fork([{ op: 'sleep', ms: 400 }, { op: 'checksum', first: 0, count: 1 }]);
    await until(() => d.refcount(pfn) === 2, 'the fork');
    expect(r.entry(2)).toMatchObject({ kind: 'device', write: false, pfn });
    expect(r.pagemap(2, 1)[0] & PM_MMAP_EXCLUSIVE).toBe(0n);
    expect(d.used).toBe(3);
    const res = await child;
    expect(res.results[1]).toBe(crc32(r.bytes.slice(0, r.pageSize)));
    // Page 0 came back for both; pages 1-2, untouched by anyone, stay on the device with one
    // reference each now that the child is gone.
    expect(r.entry(0)).toEqual({ kind: 'present', write: false });
    expect(d.refcount(pfn)).toBe(1);
    expect(d.used).toBe(2);
    await r.close();
    expect(d.used).toBe(0);
    await d.close();
  });

  it('a child that exits without touching device pages leaves them for the parent; both gone frees them', async () => {
    const r = Region.map({ pages: 8, servicer });
    const d = new Device({ capacity: 8 });
    fillPages(r, 0, 8, 3);
    r.migrate(0, 8, d);
    const res = await r.fork([]);
    expect(res.exitCode).toBe(0);
    expect(d.used).toBe(8);
    for (let p = 0; p < 8; p++) expect(d.refcount((r.entry(p) as { pfn: number }).pfn)).toBe(1);
    expect(r.bytes[7 * r.pageSize + 3]).toBe(pattern(7, 3, 3));
    await r.close();
    expect(d.used).toBe(0);
    await d.close();
  });

  it('100 spawnSync children while pages sit on the device: no hang, no userfaultfd in the child', async () => {
    const r = Region.map({ pages: 16, servicer });
    const d = new Device({ capacity: 16 });
    fillPages(r, 0, 16, 4);
    r.migrate(0, 16, d);
    for (let i = 0; i < 100; i++) {
      const res = spawnSync('true', { timeout: 10_000 });
      expect(res.status).toBe(0);
    }
    const fds = spawnSync('sh', ['-c', 'ls -l /proc/$$/fd'], { encoding: 'utf8', timeout: 10_000 });
    expect(fds.status).toBe(0);
    expect(fds.stdout).not.toMatch(/userfaultfd/);
    // Our own fds are there in the parent, so the check above can see one when it leaks.
    const own = spawnSync('ls', ['-l', `/proc/${process.pid}/fd`], { encoding: 'utf8', timeout: 10_000 });
    expect(own.stdout).toMatch(/userfaultfd/);
    expect(d.used).toBe(16);
    for (let p = 0; p < 16; p++) expect(r.entry(p).kind).toBe('device');
    expect(r.bytes[9 * r.pageSize]).toBe(pattern(9, 0, 4));
    await r.close();
    await d.close();
  });

  it('forks right after mapping, before the servicer is up, without deadlocking', () => {
    const fixture = fileURLToPath(new URL('./fixtures/fork-at-start.mjs', import.meta.url));
    // SIGKILL: a process stuck in fork() waiting for its FORK event ignores anything else.
    const res = spawnSync(process.execPath, [fixture, servicer], { timeout: 20_000, killSignal: 'SIGKILL', encoding: 'utf8' });
    expect(res.signal).toBeNull();
    expect(res.status).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({ results: [0], exitCode: 0, spawned: 0 });
  });

  it('device.close() while a child shares the pages migrates them back for the child too (dmirror_device_remove_chunks)', async () => {
    const r = Region.map({ pages: 4, servicer });
    const d = new Device({ capacity: 4 });
    fillPages(r, 0, 4, 5);
    r.migrate(0, 4, d);
    const pfn0 = (r.entry(0) as { pfn: number }).pfn;
    // A deadline well under the default: on a hang the child is killed and the results fall short.
    const child = r.fork(
      [
        { op: 'sleep', ms: 300 },
        { op: 'read', page: 0, offset: 9 },
        { op: 'read', page: 3, offset: 4000 },
      ],
      { timeoutMs: 10_000 },
    );
    await until(() => d.refcount(pfn0) === 2, 'the fork');
    await d.close();
    // Removal left nothing on the device: the parent's pages and the child's are in system memory.
    expect(d.used).toBe(0);
    for (let p = 0; p < 4; p++) expect(r.entry(p).kind).toBe('present');
    const res = await child;
    expect(res).toMatchObject({ exitCode: 0, signal: null });
    expect(res.results).toEqual([0, pattern(0, 9, 5), pattern(3, 4000, 5)]);
    // The child's pages came back at removal, not by its faults.
    expect(res.stats.migratedBack).toBe(4);
    expect(r.bytes[3 * r.pageSize + 4000]).toBe(pattern(3, 4000, 5));
    await r.close();
  });

  it('device.close() after a child exited, and while a child writes: no reference or byte lost', async () => {
    const r = Region.map({ pages: 8, servicer });
    const d = new Device({ capacity: 8 });
    fillPages(r, 0, 8, 6);
    r.migrate(0, 8, d);
    // One child ends before removal (its references went with it), one is mid-steps during it.
    expect((await r.fork([])).exitCode).toBe(0);
    const pfn7 = (r.entry(7) as { pfn: number }).pfn;
    const child = r.fork(
      [
        { op: 'write', page: 1, offset: 0, value: 99 },
        { op: 'sleep', ms: 200 },
        { op: 'read', page: 1, offset: 0 },
        { op: 'checksum', first: 2, count: 6 },
      ],
      { timeoutMs: 10_000 },
    );
    await until(() => d.refcount(pfn7) === 2, 'the fork');
    await d.close();
    expect(d.used).toBe(0);
    const res = await child;
    expect(res).toMatchObject({ exitCode: 0, signal: null });
    expect(res.results).toEqual([0, 0, 99, crc32(r.bytes.slice(2 * r.pageSize, 8 * r.pageSize))]);
    expect(r.bytes[r.pageSize]).toBe(pattern(1, 0, 6)); // the child's write stayed in the child
    await r.close();
  });

  it('rejects malformed steps before forking', async () => {
    const r = Region.map({ pages: 2, servicer });
    await expect(r.fork([{ op: 'read', page: 2 }])).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(r.fork([{ op: 'jump' } as never])).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await expect(r.fork('x' as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await r.close();
  });
});
