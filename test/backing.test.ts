// Shared and file-backed regions (MapOptions.shared / .file): what backs the memory decides what may
// migrate (migrate_vma takes anonymous pages only), and a private file page whose private copy is
// gone comes back from the page cache through a minor fault, never by silently mapping stale bytes.
import { closeSync, ftruncateSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { afterEach, expect, it } from 'vitest';
import {
  Device,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  PM_FILE,
  PM_PRESENT,
  Region,
} from 'uffd-hmm';
import { closeAfterEach, describeUffd } from './helpers.js';

const PS = 4096;
const SERVICERS = ['worker', 'native'] as const;
const track = closeAfterEach();
const fds: number[] = [];
afterEach(() => {
  for (const fd of fds.splice(0)) closeSync(fd);
});

/** An unlinked tmpfs file of `pages` pages, page p filled with byte `fill(p)`. */
function tmpfsFile(pages: number, fill: (page: number) => number = () => 0): number {
  const path = `/dev/shm/uffd-hmm-backing-${process.pid}-${fds.length}-${Date.now()}`;
  const fd = openSync(path, 'w+', 0o600);
  unlinkSync(path);
  fds.push(fd);
  ftruncateSync(fd, pages * PS);
  for (let p = 0; p < pages; p++) if (fill(p) !== 0) writeSync(fd, new Uint8Array(PS).fill(fill(p)), 0, PS, p * PS);
  return fd;
}

function fileByte(fd: number, at: number): number {
  const b = new Uint8Array(1);
  readSync(fd, b, 0, 1, at);
  return b[0];
}

describeUffd('regions that are not private anonymous memory', () => {
  for (const servicer of SERVICERS) {
    it(`${servicer}: a private file page migrates once the CPU has its own copy, and comes back from the device`, () => {
      const fd = tmpfsFile(4, (p) => 0x10 + p);
      const r = track(Region.map({ pages: 4, servicer, file: fd }));
      const d = track(new Device({ capacity: 4 }));
      expect(r.mapping).toBe('private-file');
      // Page 0: read only (still the file's page). Page 1: written (a private anonymous copy made
      // by the kernel's COW, which no fault of ours saw). Pages 2, 3: never touched.
      expect(r.bytes[0]).toBe(0x10);
      r.bytes[PS] = 0xaa;
      expect(r.entry(0)).toEqual({ kind: 'present', write: false });
      const pm = r.pagemap(0, 2);
      expect(pm[0] & (PM_PRESENT | PM_FILE)).toBe(PM_PRESENT | PM_FILE);
      expect(pm[1] & (PM_PRESENT | PM_FILE)).toBe(PM_PRESENT);

      const trace = r.trace();
      expect(r.migrate(0, 4, d)).toBe(1);
      expect(r.entry(0)).toEqual({ kind: 'present', write: false });
      expect(r.entry(1)).toMatchObject({ kind: 'device', write: true, device: d });
      expect(r.entry(2)).toEqual({ kind: 'none' });
      expect([...r.snapshot(0, 2, d)]).toEqual([HMM_DMIRROR_PROT_READ, HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE]);
      expect(d.read(r.entry(1).kind === 'device' ? (r.entry(1) as { pfn: number }).pfn : -1)[0]).toBe(0xaa);

      // The file still has the page: without a minor fault this touch would read 0x11.
      expect(r.bytes[PS]).toBe(0xaa);
      expect(r.bytes[PS + 1]).toBe(0x11);
      expect(d.used).toBe(0);
      expect(r.bytes[2 * PS]).toBe(0x12); // untouched: the file's bytes, through the page cache
      const recs = trace.records();
      expect(recs.map((t) => [t.page, t.kind, t.outcome])).toEqual([
        [1, 'minor', 'migrated'],
        [2, 'minor', 'page-cache'],
      ]);
      // Private writes never reach the file.
      expect(fileByte(fd, PS)).toBe(0x11);
    });

    it(`${servicer}: discarding a private file page drops the private copy; the file's bytes show again`, () => {
      const fd = tmpfsFile(2, () => 0x33);
      const r = track(Region.map({ pages: 2, servicer, file: { fd, offset: 0 } }));
      const d = track(new Device({ capacity: 2 }));
      r.bytes.fill(0x44);
      expect(r.migrate(0, 2, d)).toBe(2);
      r.discard(0, 2);
      expect(d.used).toBe(0);
      expect(d.stats().freed).toBe(2);
      expect(r.bytes[0]).toBe(0x33);
      expect(r.bytes[PS + 5]).toBe(0x33);
    });

    it(`${servicer}: a file region maps the file at its offset`, () => {
      const fd = tmpfsFile(6, (p) => p + 1);
      const r = track(Region.map({ pages: 2, servicer, shared: true, file: { fd, offset: 3 * PS } }));
      expect(r.mapping).toBe('shared-file');
      expect([r.bytes[0], r.bytes[PS]]).toEqual([4, 5]);
      r.bytes[PS + 9] = 0x77;
      expect(fileByte(fd, 4 * PS + 9)).toBe(0x77);
    });

    it(`${servicer}: shared memory never migrates, and a hole reads zeroes through our servicer`, () => {
      for (const r of [
        track(Region.map({ pages: 4, servicer, shared: true })),
        track(Region.map({ pages: 4, servicer, shared: true, file: tmpfsFile(4) })),
      ]) {
        const d = track(new Device({ capacity: 4 }));
        r.bytes[0] = 9;
        expect(r.stats().faults).toBe(1); // the hole was filled by our servicer
        expect(r.migrate(0, 4, d)).toBe(0);
        expect(d.used).toBe(0);
        expect(r.entry(0)).toEqual({ kind: 'present', write: true });
        expect(r.bytes[0]).toBe(9);
        expect(r.bytes[3 * PS]).toBe(0);
      }
    });

    it(`${servicer}: a shared region forks without copy-on-write`, async () => {
      const r = track(Region.map({ pages: 2, servicer, shared: true }));
      r.bytes[0] = 1;
      const child = await r.fork([
        { op: 'read', page: 0 },
        { op: 'write', page: 1, value: 0x66 },
        { op: 'read', page: 1 },
      ]);
      expect(child).toMatchObject({ exitCode: 0, signal: null });
      expect([child.results[0], child.results[2]]).toEqual([1, 0x66]);
      expect(r.bytes[PS]).toBe(0x66);
    });
  }

  it('MADV_FREE leaves device entries alone and keeps written pages', () => {
    const r = track(Region.map({ pages: 4, servicer: 'native' }));
    const d = track(new Device({ capacity: 4 }));
    r.bytes.fill(0x21);
    expect(r.migrate(0, 2, d)).toBe(2);
    r.discard(0, 4, { free: true });
    expect(d.used).toBe(2);
    expect(r.entry(0)).toMatchObject({ kind: 'device' });
    expect(r.entry(3)).toEqual({ kind: 'present', write: true });
    // A page written after MADV_FREE is dirty again and can no longer be freed lazily.
    r.bytes[3 * PS] = 0x22;
    expect(r.bytes[3 * PS]).toBe(0x22);
    expect(r.bytes[0]).toBe(0x21);
    expect(d.used).toBe(1);
  });

  it('says what is wrong with a backing it cannot serve', () => {
    const scratch = `${process.cwd()}/.uffd-hmm-backing-${process.pid}`;
    const disk = openSync(scratch, 'w+');
    fds.push(disk);
    unlinkSync(scratch);
    ftruncateSync(disk, 4 * PS);
    const onTmpfs = tmpfsFile(2);
    const cases: [() => unknown, object, RegExp][] = [
      [() => Region.map({ pages: 1, file: disk }), { code: 'ERR_BACKING_UNSUPPORTED' }, /shmem files only.*tmpfs/],
      [() => Region.map({ pages: 4, file: onTmpfs }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }, /at least .* 16384 bytes \(ftruncate it first\), got "8192 bytes"/],
      [() => Region.map({ pages: 1, file: { fd: onTmpfs, offset: 100 } }), { code: 'ERR_OUT_OF_RANGE' }, /multiple of the page size/],
      [() => Region.map({ pages: 1, file: 'x' as unknown as number }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }, /an fd or \{ fd, offset \}/],
      [() => Region.map({ pages: 1, shared: 1 as unknown as boolean }), { code: 'ERR_INVALID_ARG_TYPE' }, /options\.shared/],
      [() => Region.map({ pages: 1, shared: true, servicer: 'inline' }), { code: 'ERR_SERVICER_UNSUPPORTED' }, /private anonymous.*'worker' or 'native'/],
    ];
    for (const [f, shape, message] of cases) {
      let thrown: unknown;
      try {
        f();
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toMatchObject(shape);
      expect((thrown as Error).message).toMatch(message);
    }
    const shared = track(Region.map({ pages: 1, shared: true }));
    expect(() => shared.discard(0, 1, { free: true })).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'madvise(MADV_FREE)' }));
    const file = track(Region.map({ pages: 2, file: onTmpfs }));
    expect(() => file.remap(3)).toThrow(expect.objectContaining({ code: 'ERR_BACKING_UNSUPPORTED' }));
    file.remap(1);
    expect(file.pages).toBe(1);
  });
});
