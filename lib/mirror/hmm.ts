// What the device reaches through hmm_range_fault (mm/hmm.c): HMM_DMIRROR_READ and _WRITE, which
// fault the range in as the kernel does, and HMM_DMIRROR_SNAPSHOT, which reads it without faulting.
import { closeSync, mkdtempSync, openSync, readSync, rmdirSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { native } from '../native.js';
import { UffdHmmError, invalidType, outOfRange } from '../errors.js';
import { KIND_DEVICE, KIND_MASK, WRITE, stateIndex } from '../layout.js';
import { lockPage, release } from '../pagelock.js';
import { Device } from '../device.js';
import {
  HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE,
  HMM_DMIRROR_PROT_ERROR,
  HMM_DMIRROR_PROT_NONE,
  Region,
} from '../region.js';
import {
  EFAULT,
  EPERM,
  MAKE_READABLE,
  MAKE_WRITABLE,
  type MirrorReadResult,
  type MirrorWriteResult,
  UNFAULTABLE,
  VM_READ,
  VM_WRITE,
  checkArgs,
  checkKernelAccess,
  mirrorError,
  onDevice,
  pageSpan,
  slotOf,
  vmaFlags,
} from './dmirror.js';

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
    let handled = false;
    if (onDevice(region, p, device)) {
      // The CPU-path run before it goes first (its faults need this thread to hold no page lock):
      // the device's accesses happen in address order. The page may move meanwhile: look again.
      flush(p);
      const s = lockPage(shared, p);
      try {
        if ((s & KIND_MASK) === KIND_DEVICE && slotOf(s) === device.slot) handled = local(p, shared[stateIndex(p) + 1], s);
      } finally {
        release(shared, p, s);
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
