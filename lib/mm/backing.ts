// What backs a region, and what each backing and servicer may do: MapOptions checked into one
// Backing, and every refusal (ERR_SERVICER_UNSUPPORTED, ERR_BACKING_UNSUPPORTED) a Region makes.
import { fstatSync } from 'node:fs';

import { PAGE_SIZE } from '../native.js';
import { UffdHmmError, invalidType, invalidValue, outOfRange } from '../errors.js';
import { integer, optionalBoolean } from '../validate.js';
import { FIX_PRIVILEGE, probe } from '../probe.js';
import { hugePageSize } from './huge.js';

/**
 * Who serves a region's faults (see {@link MapOptions.servicer}):
 * - `'worker'` (default): TypeScript in one worker_thread per process. Runs driver hooks, serves
 *   kernel-mode faults, supports fork and remap.
 * - `'native'`: a C++ thread per region, the default policy (no `fault` hook). Lower latency,
 *   everything else supported.
 * - `'inline'`: a SIGBUS handler in the faulting thread itself (UFFD_FEATURE_SIGBUS): no context
 *   switch, the lowest latency; default policy only, and a device page touched from inside a
 *   system call fails that call with `EFAULT`; no fork, remap or `countKernelFaults`.
 */
export type ServicerKind = 'worker' | 'native' | 'inline';

/** Options of {@link Region.map}. */
export interface MapOptions {
  /** Size in pages (of {@link PAGE_SIZE} bytes), 1 to {@link MAX_REGION_PAGES}. */
  pages: number;
  /**
   * Who serves the faults: `'worker'` (default, TypeScript in a worker_thread, runs driver hooks),
   * `'native'` (a C++ thread, default policy only) or `'inline'` (the faulting thread itself, in
   * a SIGBUS handler; default policy only). See {@link ServicerKind}.
   */
  servicer?: ServicerKind;
  /**
   * Fault-around: a fault on a device entry also migrates back up to faultAround − 1 following
   * pages whose entries name the following device pages (same device, same read/write kind), in
   * one UFFDIO_COPY. 1 (default) migrates only the faulting page, as the kernel does; at most 512.
   */
  faultAround?: number;
  /**
   * Tell faults taken inside system calls (write(2) from device pages, read(2) into them) from
   * user-mode ones, for stats().kernelFaults and the driver's ctx.kernelMode. Costs a read of
   * /proc/self/task/<tid>/syscall per fault (a few µs), so it is off by default. Not for 'inline'.
   */
  countKernelFaults?: boolean;
  /**
   * MAP_SHARED instead of MAP_PRIVATE: the memory (anonymous shmem, or `file`) is shared with
   * forked children, and, as in the kernel, never migrates to a device (`migrate` moves nothing:
   * migrate_vma takes anonymous pages only). Not for 'inline'.
   */
  shared?: boolean;
  /**
   * Map a file instead of anonymous memory: an fd (offset 0) or `{ fd, offset }` (bytes, a multiple
   * of the page size). userfaultfd serves shmem files only (tmpfs such as /dev/shm, memfd); the file
   * must already be at least offset + pages × pageSize long. A private file region (shared unset)
   * migrates the pages the CPU has written (their private copies are anonymous memory, as
   * migrate_file_private in hmm-tests.c expects); pages still backed by the file stay. Not for
   * 'inline'. The fd may be closed once the region is mapped; truncating the file under a live
   * region makes touches past the new end SIGBUS, as it does for any mapping.
   */
  file?: number | FileBacking;
  /**
   * MAP_HUGETLB: anonymous memory in huge pages of the default size (`hugePageSize()`), from the
   * pool reserved with `sysctl vm.nr_hugepages`; `pages` must be a multiple of a huge page. The
   * kernel never migrates hugetlb pages to a device (migrate_vma_setup refuses hugetlb vmas), so
   * the range is not registered with userfaultfd at all: every fault in it is the kernel's,
   * `migrate` moves nothing, and the region exists for the device to read, write and snapshot it
   * (HMM_DMIRROR_PROT_PMD/PUD). discard and mprotect take whole huge pages; fork and remap are
   * refused. Not for 'inline'.
   */
  hugetlb?: boolean;
  /**
   * Transparent huge pages: the region starts on a PMD boundary and is MADV_HUGEPAGE instead of
   * MADV_NOHUGEPAGE. Faults are still filled 4 KiB at a time (UFFDIO_COPY has no PMD form), so a
   * THP forms only from a fully populated PMD, by `region.collapse()` (MADV_COLLAPSE) or
   * khugepaged. `migrate` moves a THP whole into one huge device page (a PMD-level device entry:
   * snapshot PMD flag), and a fault on it brings all of it back, as the kernel's device-private THP
   * migration does; `device.failNextHugeAllocation()` tests the split fallbacks. Seeing a THP takes
   * /proc/kpageflags and pagemap frame numbers (root); without them THPs migrate as base pages.
   * Private anonymous regions only.
   */
  thp?: boolean;
}

/** The file behind a file-backed region (MapOptions.file). */
export interface FileBacking {
  /** An open fd of a regular file on tmpfs (or a memfd); it may be closed once the region is mapped. */
  fd: number;
  /** Where in the file the region starts, in bytes: a multiple of the page size. Default 0. */
  offset?: number;
}

/** What backs a region, as mmap(2) was asked for it. */
export type RegionMapping =
  | 'private-anonymous'
  | 'shared-anonymous'
  | 'private-file'
  | 'shared-file'
  | 'private-hugetlb'
  | 'shared-hugetlb';

/** The largest faultAround: one PMD's worth of 4 KiB pages. */
export const MAX_FAULT_AROUND = 512;

/**
 * Pages a region may have: 2^20 pages is 4 GiB with 4 KiB pages, the largest external ArrayBuffer
 * Node 20 creates (`region.bytes` must cover the whole region).
 */
export const MAX_REGION_PAGES = 1 << 20;

/** Why opening a userfaultfd fails when it is not permitted or not there (EPERM, ENOENT, EACCES, ENOSYS). */
const UNAVAILABLE_ERRNOS = new Set([1, 2, 13, 38]);

export function unavailableError(cause?: unknown): UffdHmmError {
  const p = probe();
  // The probe's problem names userfaultfd itself ("userfaultfd is not permitted for this process: …").
  // When the probe (run at startup) saw userfaultfd available, the refusal is news to it.
  const err = new UffdHmmError(
    'ERR_UFFD_UNAVAILABLE',
    !p.available && p.problem
      ? `${p.problem}. Fix: ${p.fix ?? FIX_PRIVILEGE}.`
      : `userfaultfd is unavailable: opening one was refused (${(cause as { code?: string } | undefined)?.code ?? 'unknown reason'}). Fix: ${FIX_PRIVILEGE}.`,
    { cause },
  );
  if (cause && typeof cause === 'object') {
    const c = cause as { errno?: number; syscall?: string };
    if (c.errno !== undefined) Object.assign(err, { errno: c.errno, syscall: c.syscall });
  }
  return err;
}

export interface Backing {
  mapping: RegionMapping;
  shared: boolean;
  fd: number;
  offset: number;
  hugetlb: boolean;
  thp: boolean;
}

/** Validates MapOptions.shared and .file; the file's type and length are checked by the addon. */
export function mapBacking(options: MapOptions, pages: number, servicer: ServicerKind): Backing {
  const shared = optionalBoolean('options.shared', options.shared) ?? false;
  let fd = -1;
  let offset = 0;
  if (options.file !== undefined) {
    const file = options.file;
    if (typeof file === 'number') {
      fd = integer('options.file', file, 0, 0x7fffffff);
    } else if (file !== null && typeof file === 'object') {
      fd = integer('options.file.fd', file.fd, 0, 0x7fffffff);
      offset = file.offset === undefined ? 0 : integer('options.file.offset', file.offset, 0, Number.MAX_SAFE_INTEGER);
      if (offset % PAGE_SIZE !== 0) throw outOfRange('options.file.offset', `a multiple of the page size (${PAGE_SIZE})`, offset);
    } else {
      throw invalidType('options.file', 'an fd or { fd, offset }', file);
    }
  }
  const hugetlb = optionalBoolean('options.hugetlb', options.hugetlb) ?? false;
  if (hugetlb) {
    if (fd >= 0) throw invalidValue('options.hugetlb', 'unset when options.file is given (a hugetlb region is anonymous)', true);
    const huge = hugePageSize() / PAGE_SIZE;
    if (pages % huge !== 0) throw outOfRange('options.pages', `a multiple of ${huge} (one ${hugePageSize() >> 10} KiB huge page) for a hugetlb region`, pages);
  }
  if (fd >= 0) {
    // Checked here for clear errors; the addon checks again before it maps.
    const st = fstatSync(fd);
    if (!st.isFile()) {
      throw new UffdHmmError('ERR_BACKING_UNSUPPORTED', `options.file (fd ${fd}) is not a regular file; pass an fd of a file on tmpfs (e.g. /dev/shm)`);
    }
    const need = offset + pages * PAGE_SIZE;
    if (st.size < need) {
      throw outOfRange('options.file', `a file of at least offset + pages × ${PAGE_SIZE} = ${need} bytes (ftruncate it first)`, `${st.size} bytes`);
    }
  }
  const mapping: RegionMapping = hugetlb ? (shared ? 'shared-hugetlb' : 'private-hugetlb') : fd >= 0 ? (shared ? 'shared-file' : 'private-file') : shared ? 'shared-anonymous' : 'private-anonymous';
  if (mapping !== 'private-anonymous' && servicer === 'inline') {
    throw new UffdHmmError(
      'ERR_SERVICER_UNSUPPORTED',
      `an 'inline' region must be private anonymous memory (asked for ${mapping}); use servicer 'worker' or 'native'`,
    );
  }
  const thp = optionalBoolean('options.thp', options.thp) ?? false;
  if (thp && mapping !== 'private-anonymous') throw invalidValue('options.thp', `unset for a ${mapping} region (THPs back private anonymous memory)`, true);
  return { mapping, shared, fd, offset, hugetlb, thp };
}

/** Region.map's options, checked: what the Region constructor maps. */
export interface MapRequest {
  pages: number;
  servicer: ServicerKind;
  faultAround: number;
  countKernelFaults: boolean;
  /** Our own zaps come back as EVENT_REMOVE (see zapLocked in lib/mm/zap.ts). */
  zapEvents: boolean;
  backing: Backing;
}

/** Checks Region.map's options, in the order of the errors its JSDoc promises. */
export function mapRequest(options: MapOptions): MapRequest {
  if (options === null || typeof options !== 'object') throw invalidType('options', 'an object with pages', options);
  const pages = integer('options.pages', options.pages, 1, MAX_REGION_PAGES);
  const servicer = options.servicer ?? 'worker';
  if (servicer !== 'worker' && servicer !== 'native' && servicer !== 'inline') {
    throw invalidValue('options.servicer', "'worker', 'native' or 'inline'", servicer);
  }
  const faultAround = options.faultAround === undefined ? 1 : integer('options.faultAround', options.faultAround, 1, MAX_FAULT_AROUND);
  const p = probe();
  if (!p.available) throw unavailableError();
  const countKernelFaults = optionalBoolean('options.countKernelFaults', options.countKernelFaults) ?? false;
  const backing = mapBacking(options, pages, servicer);
  // Our own zaps come back as EVENT_REMOVE (see zapLocked) on regions whose servicer reads events.
  // A hugetlb region is not registered, so nothing reports zaps there.
  const zapEvents = servicer !== 'inline' && p.features.eventRemove && !backing.hugetlb;
  return { pages, servicer, faultAround, countKernelFaults, zapEvents, backing };
}

/**
 * What a failed regionCreate throws. Native system errors already carry code, errno and syscall;
 * only a refused open needs the fix named. Others (EMFILE: too many open files) are not a missing
 * privilege: root would not help.
 */
export function createError(e: unknown): unknown {
  const c = e as { syscall?: string; errno?: number };
  if (c.syscall === 'userfaultfd' && UNAVAILABLE_ERRNOS.has(Math.abs(c.errno ?? 0))) return unavailableError(e);
  return e;
}

function isHugetlb(mapping: RegionMapping): boolean {
  return mapping === 'private-hugetlb' || mapping === 'shared-hugetlb';
}

/** fork and remap wait for userfaultfd events, which an unregistered (hugetlb) region never gets. */
function refuseHugetlb(mapping: RegionMapping, what: string): void {
  if (isHugetlb(mapping)) {
    throw new UffdHmmError(
      'ERR_BACKING_UNSUPPORTED',
      `${what} needs userfaultfd events, and a hugetlb region is not registered (no device entry can exist in it); use an anonymous region`,
    );
  }
}

/** What region.fork refuses, before it reads its arguments. */
export function refuseFork(mapping: RegionMapping, servicer: ServicerKind): void {
  if (servicer === 'inline') {
    throw new UffdHmmError(
      'ERR_SERVICER_UNSUPPORTED',
      "region.fork needs EVENT_FORK, which the 'inline' servicer cannot read; map the region with servicer 'worker' or 'native' to fork it",
    );
  }
  refuseHugetlb(mapping, 'region.fork');
}

/** What region.remap refuses: hugetlb, a file region growing past what was checked, 'inline'. */
export function refuseRemap(mapping: RegionMapping, servicer: ServicerKind, oldPages: number, newPages: number): void {
  refuseHugetlb(mapping, 'region.remap');
  if ((mapping === 'private-file' || mapping === 'shared-file') && newPages > oldPages) {
    // The file's length was checked at map time only; growing could reach past its end (SIGBUS).
    throw new UffdHmmError(
      'ERR_BACKING_UNSUPPORTED',
      `a file-backed region cannot grow (${oldPages} → ${newPages} pages); map a new region over a longer file instead`,
    );
  }
  if (servicer === 'inline') {
    throw new UffdHmmError(
      'ERR_SERVICER_UNSUPPORTED',
      "an 'inline' region reads no EVENT_REMAP, so it cannot be remapped; map the region with servicer 'worker' or 'native' to remap it",
    );
  }
}

/** Whole huge pages only, as the kernel requires of madvise and mprotect on hugetlb vmas. */
export function checkHugeAligned(mapping: RegionMapping, what: string, f: number, c: number): void {
  if (!isHugetlb(mapping)) return;
  const huge = hugePageSize() / PAGE_SIZE;
  if (f % huge !== 0 || c % huge !== 0) {
    throw outOfRange(`${what} range`, `whole huge pages (first and count multiples of ${huge}) on a hugetlb region`, `${f}+${c}`);
  }
}
