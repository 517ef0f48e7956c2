// hmm-tests.c's cases on memory that is not private anonymous: a shared anonymous mapping written by
// a child (anon_write_child_shared) or offered for migration (migrate_shared), and a tmpfs file
// mapped shared (file_read, file_write) or private (migrate_file_private).
import { closeSync, ftruncateSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { afterEach, expect, it } from 'vitest';
import { Device, Region, mirrorMigrate, mirrorRead, mirrorWrite, type ChildStep } from 'uffd-hmm';
import { describeUffd } from '../helpers.js';
import { NPAGES, crc32, fillInts, firstIntMismatch, firstIntMismatchIn, intBytes, ints, track } from './fixtures/common.js';

const SERVICERS = ['worker', 'native'] as const;

const fds: number[] = [];
afterEach(() => {
  for (const fd of fds.splice(0)) closeSync(fd);
});

/**
 * hmm_create_file: an unlinked file of `bytes` bytes. The kernel test uses O_TMPFILE in /tmp;
 * userfaultfd registers shmem files only, so it lives on tmpfs (/dev/shm) here.
 */
function createFile(bytes: number): number {
  const path = `/dev/shm/uffd-hmm-test-${process.pid}-${fds.length}-${Date.now()}`;
  const fd = openSync(path, 'w+', 0o600);
  unlinkSync(path);
  fds.push(fd);
  ftruncateSync(fd, bytes);
  return fd;
}


describeUffd('hmm-tests.c: shared and file-backed memory', () => {
  it('anon_write_child_shared', async () => {
    // MAP_SHARED | MAP_ANONYMOUS: the child's writes through its own mirror reach the parent (no
    // copy-on-write). A forked Node process cannot run JS, so the child's device writes are native
    // steps: one byte per page, each page write-faulted in the child as hmm_range_fault would.
    const MARK = 0x5a; // byte 0 of every page holds 0 in the `ptr[i] = i` pattern
    for (const servicer of SERVICERS) {
      const r = track(Region.map({ pages: NPAGES, servicer, shared: true }));
      expect(r.mapping).toBe('shared-anonymous');
      const ps = r.pageSize;
      const ptr = ints(r);
      fillInts(ptr);
      const before = r.bytes.slice();
      const steps: ChildStep[] = [{ op: 'checksum', first: 0, count: NPAGES }];
      for (let p = 0; p < NPAGES; p++) steps.push({ op: 'write', page: p, offset: 0, value: MARK });
      const child = await r.fork(steps);
      expect(child).toMatchObject({ exitCode: 0, signal: null });
      // The child saw the parent's values...
      expect(child.results[0]).toBe(crc32(before));
      // ...and the parent's buffer did change: every page carries the child's write.
      const want = before.slice();
      for (let p = 0; p < NPAGES; p++) want[p * ps] = MARK;
      expect(crc32(r.bytes)).toBe(crc32(want));
      await r.close();
    }
  });

  it('file_read', () => {
    for (const servicer of SERVICERS) {
      const size = NPAGES * 4096;
      const fd = createFile(size);
      // Write the initial contents of the file, then map it PROT_READ, MAP_SHARED.
      expect(writeSync(fd, intBytes(NPAGES), 0, size, 0)).toBe(size);
      const r = track(Region.map({ pages: NPAGES, servicer, shared: true, file: fd }));
      expect(r.mapping).toBe('shared-file');
      r.mprotect(0, NPAGES, 'read');
      const d = track(new Device({ capacity: NPAGES }));
      const res = mirrorRead(r, 0, NPAGES, d);
      expect(res.cpages).toBe(NPAGES);
      expect(res.faults).toBe(1);
      expect(firstIntMismatchIn(res.data)).toBe(-1);
    }
  });

  it('file_write', () => {
    for (const servicer of SERVICERS) {
      const size = NPAGES * 4096;
      const fd = createFile(size);
      const r = track(Region.map({ pages: NPAGES, servicer, shared: true, file: { fd, offset: 0 } }));
      const d = track(new Device({ capacity: NPAGES }));
      const res = mirrorWrite(r, 0, NPAGES, d, intBytes(NPAGES));
      expect(res.cpages).toBe(NPAGES);
      expect(res.faults).toBe(1);
      // What the device wrote is in the mapping...
      expect(firstIntMismatch(ints(r))).toBe(-1);
      // ...and in the file.
      const back = new Uint8Array(size);
      expect(readSync(fd, back, 0, size, 0)).toBe(size);
      expect(firstIntMismatchIn(back)).toBe(-1);
    }
  });

  it('migrate_file_private', () => {
    for (const servicer of SERVICERS) {
      const size = NPAGES * 4096;
      const fd = createFile(size);
      const r = track(Region.map({ pages: NPAGES, servicer, file: fd }));
      expect(r.mapping).toBe('private-file');
      const d = track(new Device({ capacity: NPAGES }));
      // Writing makes every page a private (anonymous) copy: those migrate.
      const ptr = ints(r);
      fillInts(ptr);
      const res = mirrorMigrate(r, 0, NPAGES, d);
      expect(res.cpages).toBe(NPAGES);
      expect(firstIntMismatchIn(res.data)).toBe(-1);
      // Beyond the kernel test: the data faults back from the device, and never reached the file.
      expect(d.used).toBe(NPAGES);
      expect(firstIntMismatch(ptr)).toBe(-1);
      expect(d.used).toBe(0);
      const file = new Uint8Array(size);
      expect(readSync(fd, file, 0, size, 0)).toBe(size);
      expect(file.every((b) => b === 0)).toBe(true);
    }
  });

  it('migrate_shared', () => {
    for (const servicer of SERVICERS) {
      const r = track(Region.map({ pages: NPAGES, servicer, shared: true }));
      const d = track(new Device({ capacity: NPAGES }));
      // shmem is not migrated to device-private memory: dmirror finds no page on the device.
      expect(() => mirrorMigrate(r, 0, NPAGES, d)).toThrow(expect.objectContaining({ code: 'ENOENT', errno: -2 }));
      expect(d.used).toBe(0);
      expect(r.migrate(0, NPAGES, d)).toBe(0);
    }
  });
});
