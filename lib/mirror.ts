// The device mirroring a process range, as lib/test_hmm.c's dmirror driver does through its ioctls:
// the device reading and writing process memory (hmm_range_fault), migrating to and from itself
// (migrate_vma with its driver policy), snapshotting the CPU page table, and exclusive access.
//
// The kernel's device keeps its own page table, kept coherent by an mmu notifier. User space has
// no mmu notifier, so a mirror here keeps no page table between calls: every call starts empty and
// faults its range in one pass (`faults` is 1 for every successful call, as each hmm-tests.c case
// expects of a fresh mirror). What the device reaches it reaches the way hmm_range_fault does:
//  - a page on this device (dev_private_owner) is accessed in device memory, where it stays;
//  - anything else goes through the CPU page table from the kernel side (write(2)/read(2) on the
//    region's bytes: kernel-mode faults, handled as the handle_mm_fault calls of hmm_range_fault
//    are): holes fault in (the zero page for reads), pages on other devices migrate back, a
//    missing vma is EFAULT, never a crash of the calling thread.
// vma permissions come from /proc/self/maps, the kernel's own view, so that EFAULT and EPERM are
// decided as hmm_range_fault decides them (VM_READ, VM_WRITE), whatever mprotect(2) made them.
// READ and WRITE therefore need a region whose kernel-mode faults are served: 'worker' or 'native'
// on a full userfaultfd (ERR_SERVICER_UNSUPPORTED otherwise). Errors are SystemErrors named after
// the ioctl, with the errno dmirror returns: EFAULT, EPERM, EINVAL, ENOENT, ENOMEM.
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmdirSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { native } from './native.js';
import { UffdHmmError, UffdSystemError, deviceClosed, invalidType, outOfRange, regionClosed } from './errors.js';
import { integer } from './validate.js';
import { DEVICE_SHIFT, KIND_DEVICE, KIND_MASK, KIND_NONE, KIND_PRESENT, LOCKED, MAX_DEVICE_SLOT, WRITE, stateIndex } from './layout.js';
import { lockPage, unlockPage } from './pagelock.js';
import { Device } from './device.js';
import { FIX_PRIVILEGE } from './probe.js';
import {
  HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE,
  HMM_DMIRROR_PROT_ERROR,
  HMM_DMIRROR_PROT_NONE,
  Region,
} from './region.js';

/** What {@link mirrorWrite} reports, as dmirror fills `struct hmm_dmirror_cmd`. */
export interface MirrorWriteResult {
  /** Pages the device wrote (cmd.cpages). */
  cpages: number;
  /** hmm_range_fault passes the device needed (cmd.faults). */
  faults: number;
}

/** What {@link mirrorRead} reports: the command's counters and the bytes the device read. */
export interface MirrorReadResult extends MirrorWriteResult {
  /** What the device read: `count` pages, as the dmirror bounce buffer. */
  data: Uint8Array;
}

/** What {@link mirrorMigrate} and {@link mirrorExclusive} report: the pages the device maps, and their bytes. */
export interface MirrorMigrateResult {
  /** Pages of the range the device now maps (cmd.cpages). */
  cpages: number;
  /** The device's copy of them, read back as dmirror_migrate_to_device does. */
  data: Uint8Array;
}

const EPERM = 1;
const ENOENT = 2;
const ENOMEM = 12;
const EFAULT = 14;
const EINVAL = 22;

const VM_READ = 1;
const VM_WRITE = 2;

function mirrorError(errno: number, op: string, context: string, hint: string): UffdSystemError {
  return new UffdSystemError(-errno, `ioctl(HMM_DMIRROR_${op})`, context, hint);
}

// The next steps of the mirror's errors, as dmirror's callers would take them.
const MAKE_READABLE = "mprotect it 'read' or 'readwrite' first, or leave it out of the range";
const MAKE_WRITABLE = "mprotect it 'readwrite' first, or leave it out of the range";
const UNFAULTABLE =
  'a poisoned page (a driver refused its fault; region.discard() clears the poison) or one unmapped behind the library ' +
  'cannot be reached; leave it out of the range';

/** "page 3" or "pages 3..9", for error contexts. */
function pageSpan(first: number, count: number): string {
  return count === 1 ? `page ${first}` : `pages ${first}..${first + count - 1}`;
}

function checkArgs(region: unknown, first: unknown, count: unknown, device: unknown): [Region, number, number, Device] {
  if (!(region instanceof Region)) throw invalidType('region', 'a Region', region);
  if (region.closed) throw regionClosed();
  if (!(device instanceof Device)) throw invalidType('device', 'a Device', device);
  if (device.closed) throw deviceClosed(device.name);
  // The ioctls refuse an empty range (addr >= addr + npages * PAGE_SIZE is EINVAL): so do we.
  const f = integer('first', first, 0, region.pages - 1);
  const c = integer('count', count, 1, region.pages - f);
  return [region, f, c, device];
}

/**
 * The device's accesses outside its own memory are kernel-mode faults: only a servicer on a full
 * (not user-mode-only) userfaultfd, off the faulting thread, can serve them.
 */
function checkKernelAccess(region: Region, op: string): void {
  if (region.userModeOnly) {
    throw new UffdHmmError(
      'ERR_SERVICER_UNSUPPORTED',
      `HMM_DMIRROR_${op} faults pages in from the kernel side, which this process's user-mode-only userfaultfd cannot serve; ` +
        `it needs full userfaultfd: ${FIX_PRIVILEGE}`,
    );
  }
  if (region.servicer === 'inline') {
    throw new UffdHmmError(
      'ERR_SERVICER_UNSUPPORTED',
      `HMM_DMIRROR_${op} faults pages in from the kernel side, which the 'inline' servicer cannot serve; map the region with servicer 'worker' or 'native'`,
    );
  }
}

/** VM_READ / VM_WRITE of every page of the range as /proc/self/maps shows its vmas; 0 = no vma or PROT_NONE. */
function vmaFlags(region: Region, first: number, count: number): Uint8Array {
  const ps = BigInt(region.pageSize);
  const start = region.address + BigInt(first) * ps;
  const end = start + BigInt(count) * ps;
  const out = new Uint8Array(count);
  for (const line of readFileSync('/proc/self/maps', 'latin1').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (.)(.)/.exec(line);
    if (!m) continue;
    const lo = BigInt('0x' + m[1]);
    const hi = BigInt('0x' + m[2]);
    if (hi <= start || lo >= end) continue;
    const flags = (m[3] === 'r' ? VM_READ : 0) | (m[4] === 'w' ? VM_WRITE : 0);
    const a = Number(((lo > start ? lo : start) - start) / ps);
    const b = Number(((hi < end ? hi : end) - start) / ps);
    out.fill(flags, a, b);
  }
  return out;
}

let scratchFd = -1;
/** An unlinked scratch file: the far end of the kernel-side copies. */
function scratch(): number {
  if (scratchFd >= 0) return scratchFd;
  const dir = mkdtempSync(path.join(tmpdir(), 'uffd-hmm-mirror-'));
  const file = path.join(dir, 'bounce');
  const fd = openSync(file, 'w+', 0o600);
  unlinkSync(file);
  rmdirSync(dir);
  scratchFd = fd;
  process.once('exit', () => {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
  });
  return fd;
}

function scratchError(what: string): UffdHmmError {
  return new UffdHmmError(
    'ERR_MIRROR_SCRATCH',
    `the mirror's scratch file in ${tmpdir()} ${what}; check that the folder has free space (TMPDIR chooses another)`,
  );
}

function errnoOf(e: unknown): number {
  const errno = (e as { errno?: number }).errno;
  return typeof errno === 'number' ? Math.abs(errno) : 0;
}

/**
 * The device reading pages [first, first+count) that are not in its memory: the kernel copies them
 * out of the process (write(2) from region.bytes), faulting each in as hmm_range_fault would.
 * Returns false when a page has no vma any more (EFAULT), which no CPU thread of ours ever touched.
 */
function kernelRead(region: Region, first: number, count: number, out: Uint8Array): boolean {
  const fd = scratch();
  const ps = region.pageSize;
  const len = count * ps;
  let done = 0;
  try {
    while (done < len) {
      const n = writeSync(fd, region.bytes, first * ps + done, len - done, done);
      if (n <= 0) return false;
      done += n;
    }
  } catch (e) {
    if (errnoOf(e) === EFAULT) return false;
    throw e;
  }
  for (let got = 0; got < len; ) {
    const n = readSync(fd, out, got, len - got, got);
    if (n <= 0) throw scratchError(`returned ${got} of ${len} bytes`);
    got += n;
  }
  return true;
}

/** The device writing pages through the CPU page table: read(2) into region.bytes, write faults and all. */
function kernelWrite(region: Region, first: number, count: number, data: Uint8Array): boolean {
  const fd = scratch();
  const ps = region.pageSize;
  const len = count * ps;
  for (let put = 0; put < len; ) {
    const n = writeSync(fd, data, put, len - put, put);
    if (n <= 0) throw scratchError(`took ${put} of ${len} bytes`);
    put += n;
  }
  let done = 0;
  try {
    while (done < len) {
      const n = readSync(fd, region.bytes, first * ps + done, len - done, done);
      if (n <= 0) return false;
      done += n;
    }
  } catch (e) {
    if (errnoOf(e) === EFAULT) return false;
    throw e;
  }
  return true;
}

const slotOf = (s: number) => (s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT;

/**
 * Runs `local(page, pfn, state)` on each page that sits on `device` (locked, so it cannot migrate
 * away while the device touches it) and `cpu(first, count)` on each run of the others, in order.
 * `local` returns false to send its page down the CPU path instead (a read entry being written).
 */
function walk(
  region: Region,
  first: number,
  count: number,
  device: Device,
  local: (page: number, pfn: number, state: number) => boolean,
  cpu: (first: number, count: number) => void,
): void {
  let run = -1;
  const flush = (end: number) => {
    if (run >= 0) cpu(run, end - run);
    run = -1;
  };
  for (let p = first; p < first + count; p++) {
    const shared = region.shared;
    const peek = Atomics.load(shared, stateIndex(p)) & ~LOCKED;
    let handled = false;
    if ((peek & KIND_MASK) === KIND_DEVICE && slotOf(peek) === device.slot) {
      // The CPU-path run before it goes first: the device's accesses happen in address order.
      flush(p);
      const s = lockPage(shared, p);
      try {
        if ((s & KIND_MASK) === KIND_DEVICE && slotOf(s) === device.slot) handled = local(p, shared[stateIndex(p) + 1], s);
      } finally {
        unlockPage(shared, p, s);
      }
    }
    if (!handled && run < 0) run = p;
  }
  flush(first + count);
}

/**
 * HMM_DMIRROR_READ: the device reads `count` pages of the region it mirrors. Pages on `device` are
 * read in device memory and stay there; every other page is faulted in through the CPU page table
 * (a hole maps the zero page, a page on another device migrates back). A page without VM_READ (or
 * without a vma) fails the call with EFAULT, as hmm_range_fault does. Needs a `'worker'` or
 * `'native'` region on a full (not user-mode-only) userfaultfd: `ERR_SERVICER_UNSUPPORTED` otherwise.
 *
 * @example
 * ```ts
 * // hmm-tests.c's "anon_read": the device reads what the CPU wrote.
 * region.bytes.fill(1);
 * const { data, cpages, faults } = mirrorRead(region, 0, region.pages, gpu);  // cpages === pages, faults === 1
 * ```
 *
 * @throws `TypeError` (`ERR_INVALID_ARG_TYPE`) / `RangeError` (`ERR_OUT_OF_RANGE`) for bad
 * arguments (an empty range included, as the ioctl refuses it), `ERR_REGION_CLOSED` /
 * `ERR_DEVICE_CLOSED`, and the SystemErrors above (`syscall: 'ioctl(HMM_DMIRROR_…)'`).
 */
export function mirrorRead(region: Region, first: number, count: number, device: Device): MirrorReadResult {
  const [r, f, c, d] = checkArgs(region, first, count, device);
  checkKernelAccess(r, 'READ');
  const flags = vmaFlags(r, f, c);
  for (let i = 0; i < c; i++) {
    if ((flags[i] & VM_READ) === 0) throw mirrorError(EFAULT, 'READ', `page ${f + i} is not readable`, MAKE_READABLE);
  }
  const ps = r.pageSize;
  const data = new Uint8Array(c * ps);
  walk(
    r,
    f,
    c,
    d,
    (page, pfn) => {
      native.deviceRead(d.slot, pfn, data.subarray((page - f) * ps, (page - f + 1) * ps));
      return true;
    },
    (a, n) => {
      if (!kernelRead(r, a, n, data.subarray((a - f) * ps, (a - f + n) * ps))) {
        throw mirrorError(EFAULT, 'READ', `${pageSpan(a, n)} could not be faulted in for reading`, UNFAULTABLE);
      }
    },
  );
  return { data, cpages: c, faults: 1 };
}

/**
 * HMM_DMIRROR_WRITE: the device writes `data` (count pages) into the region it mirrors. A page on
 * `device` with a write entry is written in device memory; everything else is faulted in for
 * writing through the CPU page table (a read entry migrates back and takes its write-protect
 * fault). EFAULT for a page without VM_READ or vma, EPERM for one without VM_WRITE. Needs a
 * `'worker'` or `'native'` region on a full userfaultfd, as {@link mirrorRead} does.
 *
 * @throws `TypeError` (`ERR_INVALID_ARG_TYPE`) / `RangeError` (`ERR_OUT_OF_RANGE`) for bad
 * arguments (an empty range included, as the ioctl refuses it), `ERR_REGION_CLOSED` /
 * `ERR_DEVICE_CLOSED`, and the SystemErrors above (`syscall: 'ioctl(HMM_DMIRROR_…)'`).
 */
export function mirrorWrite(region: Region, first: number, count: number, device: Device, data: ArrayBufferView): MirrorWriteResult {
  const [r, f, c, d] = checkArgs(region, first, count, device);
  checkKernelAccess(r, 'WRITE');
  if (!ArrayBuffer.isView(data)) throw invalidType('data', 'an ArrayBufferView', data);
  const ps = r.pageSize;
  if (data.byteLength < c * ps) throw outOfRange('data.byteLength', `at least ${c * ps} (count pages)`, data.byteLength);
  const bytes = new Uint8Array(data.buffer, data.byteOffset, c * ps);
  const flags = vmaFlags(r, f, c);
  for (let i = 0; i < c; i++) {
    if ((flags[i] & VM_READ) === 0) throw mirrorError(EFAULT, 'WRITE', `page ${f + i} is not readable`, MAKE_READABLE);
    if ((flags[i] & VM_WRITE) === 0) throw mirrorError(EPERM, 'WRITE', `page ${f + i} is not writable`, MAKE_WRITABLE);
  }
  walk(
    r,
    f,
    c,
    d,
    (page, pfn, s) => {
      if ((s & WRITE) === 0) return false;
      native.deviceWrite(d.slot, pfn, bytes.subarray((page - f) * ps, (page - f + 1) * ps), 0);
      return true;
    },
    (a, n) => {
      if (!kernelWrite(r, a, n, bytes.subarray((a - f) * ps, (a - f + n) * ps))) {
        throw mirrorError(EFAULT, 'WRITE', `${pageSpan(a, n)} could not be faulted in for writing`, UNFAULTABLE);
      }
    },
  );
  return { cpages: c, faults: 1 };
}

/** Reads back what the device maps of the range (dmirror_do_read after a migration): ENOENT at the first page it does not. */
function bounce(region: Region, first: number, count: number, device: Device, op: string): Uint8Array {
  const ps = region.pageSize;
  const data = new Uint8Array(count * ps);
  for (let p = first; p < first + count; p++) {
    const shared = region.shared;
    const s = lockPage(shared, p);
    try {
      if ((s & KIND_MASK) !== KIND_DEVICE || slotOf(s) !== device.slot) {
        throw mirrorError(
          ENOENT,
          op,
          `page ${p} is not on device ${device.name}`,
          'it stayed on another device or the device is full; migrate it with region.migrate(), or free device pages first',
        );
      }
      native.deviceRead(device.slot, shared[stateIndex(p) + 1], data.subarray((p - first) * ps, (p - first + 1) * ps));
    } finally {
      unlockPage(shared, p, s);
    }
  }
  return data;
}

/**
 * Calls `fn(first, count)` on each run of pages that are in system memory (never touched, or a CPU
 * page), in order; stops with EINVAL at the first page without VM_READ or vma, as dmirror's
 * vma_lookup check does, after the runs before it were handled.
 */
function systemRuns(region: Region, first: number, count: number, op: string, fn: (first: number, count: number) => void): void {
  const flags = vmaFlags(region, first, count);
  let run = -1;
  for (let p = first; p <= first + count; p++) {
    const end = p === first + count;
    const bad = !end && (flags[p - first] & VM_READ) === 0;
    const kind = end || bad ? -1 : Atomics.load(region.shared, stateIndex(p)) & KIND_MASK;
    const system = kind === KIND_NONE || kind === KIND_PRESENT;
    if (!system && run >= 0) {
      fn(run, p - run);
      run = -1;
    }
    if (bad) throw mirrorError(EINVAL, op, `page ${p} has no readable vma`, MAKE_READABLE);
    if (system && run < 0) run = p;
  }
}

/**
 * HMM_DMIRROR_MIGRATE_TO_DEV: migrates the range's system pages to `device` (migrate_vma with
 * MIGRATE_VMA_SELECT_SYSTEM: pages already on a device, this one or another, are left where they
 * are, as dmirror_migrate_alloc_and_copy does), then reads back what the device maps. EINVAL at a
 * page without VM_READ or vma; ENOENT when a page of the range is not on `device` afterwards.
 *
 * @throws `TypeError` (`ERR_INVALID_ARG_TYPE`) / `RangeError` (`ERR_OUT_OF_RANGE`) for bad
 * arguments (an empty range included, as the ioctl refuses it), `ERR_REGION_CLOSED` /
 * `ERR_DEVICE_CLOSED`, and the SystemErrors above (`syscall: 'ioctl(HMM_DMIRROR_…)'`).
 */
export function mirrorMigrate(region: Region, first: number, count: number, device: Device): MirrorMigrateResult {
  const [r, f, c, d] = checkArgs(region, first, count, device);
  // migrate_vma_setup refuses a hugetlb vma outright.
  if (r.mapping === 'private-hugetlb' || r.mapping === 'shared-hugetlb') throw mirrorError(EINVAL, 'MIGRATE_TO_DEV', 'the range is hugetlb memory', 'hugetlb pages never migrate to device memory; use a private anonymous region (thp: true for huge pages)');
  systemRuns(r, f, c, 'MIGRATE_TO_DEV', (a, n) => {
    r.migrate(a, n, d);
  });
  return { cpages: c, data: bounce(r, f, c, d, 'MIGRATE_TO_DEV') };
}

/**
 * HMM_DMIRROR_MIGRATE_TO_SYS: migrates the range's pages that are on `device` back to system memory
 * (MIGRATE_VMA_SELECT_DEVICE_PRIVATE with this device as pgmap_owner); returns how many moved.
 * EINVAL at a page without VM_READ or vma, as dmirror's vma_lookup check does.
 *
 * @throws `TypeError` (`ERR_INVALID_ARG_TYPE`) / `RangeError` (`ERR_OUT_OF_RANGE`) for bad
 * arguments (an empty range included, as the ioctl refuses it), `ERR_REGION_CLOSED` /
 * `ERR_DEVICE_CLOSED`, and the SystemErrors above (`syscall: 'ioctl(HMM_DMIRROR_…)'`).
 */
export function mirrorMigrateToSys(
  region: Region,
  first: number,
  count: number,
  device: Device,
): {
  /** Pages migrated back to system memory (cmd.cpages). */
  cpages: number;
} {
  const [r, f, c, d] = checkArgs(region, first, count, device);
  const flags = vmaFlags(r, f, c);
  let cpages = 0;
  for (let p = f; p < f + c; p++) {
    if ((flags[p - f] & VM_READ) === 0) throw mirrorError(EINVAL, 'MIGRATE_TO_SYS', `page ${p} has no readable vma`, MAKE_READABLE);
    const s = Atomics.load(r.shared, stateIndex(p));
    if ((s & KIND_MASK) !== KIND_DEVICE || slotOf(s) !== d.slot) continue;
    let q = p + 1;
    while (q < f + c && (flags[q - f] & VM_READ) !== 0) {
      const t = Atomics.load(r.shared, stateIndex(q));
      if ((t & KIND_MASK) !== KIND_DEVICE || slotOf(t) !== d.slot) break;
      q++;
    }
    cpages += r.migrateToRam(p, q - p);
    p = q - 1;
  }
  return { cpages };
}

/**
 * HMM_DMIRROR_SNAPSHOT: the CPU page table as hmm_range_fault reports it to `device` without
 * faulting. It is region.snapshot() seen through dev_private_owner: hmm_range_fault hands a driver
 * only its own device-private pages, so a page on another device reads as NONE here, where
 * region.snapshot() (a page-table dump) shows it DEV_PRIVATE_REMOTE. Faults and moves nothing.
 *
 * @throws `TypeError` (`ERR_INVALID_ARG_TYPE`) / `RangeError` (`ERR_OUT_OF_RANGE`) for bad
 * arguments (an empty range included, as the ioctl refuses it), `ERR_REGION_CLOSED` /
 * `ERR_DEVICE_CLOSED`.
 */
export function mirrorSnapshot(region: Region, first: number, count: number, device: Device): Uint8Array {
  const [r, f, c, d] = checkArgs(region, first, count, device);
  const snap = r.snapshot(f, c, d);
  for (let i = 0; i < c; i++) {
    const b = snap[i];
    if (b !== HMM_DMIRROR_PROT_ERROR && (b & HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE) === HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE) {
      snap[i] = HMM_DMIRROR_PROT_NONE;
    }
  }
  return snap;
}

/** Atomic (exclusive) mappings per device and region: the state word and pfn each page had when taken. */
const atomicMaps = new WeakMap<Device, WeakMap<Region, Map<number, { state: number; pfn: number }>>>();

/**
 * HMM_DMIRROR_EXCLUSIVE: the device takes exclusive (atomic) access to the pages, and reads them.
 * make_device_exclusive() faults each page in for writing and takes it away from the CPU until the
 * CPU touches it again, which revokes the device's access. Modelled here with the one mechanism we
 * have for a page the CPU cannot touch: a write entry on `device`. A CPU access migrates it back
 * and so revokes the atomic mapping; fork and mprotect turn it into a read entry, which revokes it
 * too (the kernel's mmu notifier fires for both). EFAULT without VM_READ and VM_WRITE (the
 * FOLL_WRITE get_user_pages fails), ENOMEM when the device is full.
 *
 * @throws `TypeError` (`ERR_INVALID_ARG_TYPE`) / `RangeError` (`ERR_OUT_OF_RANGE`) for bad
 * arguments (an empty range included, as the ioctl refuses it), `ERR_REGION_CLOSED` /
 * `ERR_DEVICE_CLOSED`, and the SystemErrors above (`syscall: 'ioctl(HMM_DMIRROR_…)'`).
 */
export function mirrorExclusive(region: Region, first: number, count: number, device: Device): MirrorMigrateResult {
  const [r, f, c, d] = checkArgs(region, first, count, device);
  const flags = vmaFlags(r, f, c);
  for (let i = 0; i < c; i++) {
    if ((flags[i] & (VM_READ | VM_WRITE)) !== (VM_READ | VM_WRITE)) {
      throw mirrorError(EFAULT, 'EXCLUSIVE', `page ${f + i} is not readable and writable`, MAKE_WRITABLE);
    }
  }
  // A page on another device, or a read entry here, is first faulted back (FOLL_WRITE would).
  for (let p = f; p < f + c; p++) {
    const s = Atomics.load(r.shared, stateIndex(p));
    if ((s & KIND_MASK) === KIND_DEVICE && (slotOf(s) !== d.slot || (s & WRITE) === 0)) r.migrateToRam(p, 1);
  }
  const got = r.migrate(f, c, d, { write: true });
  if (got < c) {
    throw mirrorError(
      ENOMEM,
      'EXCLUSIVE',
      `device ${d.name} holds only ${got} of ${c} pages`,
      'the device is full; free device pages (migrateToRam, discard, close regions) or use a larger capacity',
    );
  }
  let perRegion = atomicMaps.get(d);
  if (!perRegion) atomicMaps.set(d, (perRegion = new WeakMap()));
  let map = perRegion.get(r);
  if (!map) perRegion.set(r, (map = new Map()));
  for (let p = f; p < f + c; p++) {
    map.set(p, { state: Atomics.load(r.shared, stateIndex(p)) & ~LOCKED, pfn: Atomics.load(r.shared, stateIndex(p) + 1) });
  }
  return { cpages: c, data: bounce(r, f, c, d, 'EXCLUSIVE') };
}

/**
 * HMM_DMIRROR_CHECK_EXCLUSIVE: EPERM while the device still holds atomic access to a page of the
 * range (its entry unchanged since mirrorExclusive), nothing once the CPU has revoked it everywhere.
 *
 * @throws `TypeError` (`ERR_INVALID_ARG_TYPE`) / `RangeError` (`ERR_OUT_OF_RANGE`) for bad
 * arguments (an empty range included, as the ioctl refuses it), `ERR_REGION_CLOSED` /
 * `ERR_DEVICE_CLOSED`, and the SystemErrors above (`syscall: 'ioctl(HMM_DMIRROR_…)'`).
 */
export function mirrorCheckExclusive(region: Region, first: number, count: number, device: Device): void {
  const [r, f, c, d] = checkArgs(region, first, count, device);
  const map = atomicMaps.get(d)?.get(r);
  if (!map) return;
  for (let p = f; p < f + c; p++) {
    const m = map.get(p);
    if (!m) continue;
    const s = Atomics.load(r.shared, stateIndex(p)) & ~LOCKED;
    if (s === m.state && Atomics.load(r.shared, stateIndex(p) + 1) === m.pfn) {
      throw mirrorError(
        EPERM,
        'CHECK_EXCLUSIVE',
        `device ${d.name} still has atomic access to page ${p}`,
        'a CPU access to the page (or mprotect, or fork) revokes it',
      );
    }
    map.delete(p); // revoked: the kernel's notifier dropped it from the device page table
  }
}

/** HMM_DMIRROR_FLAG_FAIL_ALLOC: the next huge allocation fails (see `Device.failNextHugeAllocation`). */
export const HMM_DMIRROR_FLAG_FAIL_ALLOC = 0x1;

/**
 * HMM_DMIRROR_FLAGS: sets dmirror's one-shot test flags on `device`. The only flag is
 * HMM_DMIRROR_FLAG_FAIL_ALLOC; other bits are EINVAL, as the driver answers unknown ones.
 */
export function mirrorFlags(device: Device, flags: number): void {
  if (!(device instanceof Device)) throw invalidType('device', 'a Device', device);
  const f = integer('flags', flags, 0, 0x7fffffff);
  if ((f & ~HMM_DMIRROR_FLAG_FAIL_ALLOC) !== 0) throw mirrorError(EINVAL, 'FLAGS', `unknown flags 0x${f.toString(16)}`, 'pass HMM_DMIRROR_FLAG_FAIL_ALLOC or 0');
  if ((f & HMM_DMIRROR_FLAG_FAIL_ALLOC) !== 0) device.failNextHugeAllocation();
}
