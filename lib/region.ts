// A Region: real anonymous memory under userfaultfd, the emulated vma. It owns the page table
// (the device entries) in shared memory and performs the main-thread side of every migration.
/// <reference types="node" preserve="true" />
import { EventEmitter } from 'node:events';
import { fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { inspect, type InspectOptionsStylized } from 'node:util';

import { native, PAGE_SIZE, type NativeRegion } from './native.js';
import { UffdHmmError, check, deviceClosed, invalidType, invalidValue, outOfRange, regionClosed } from './errors.js';
import { integer, optionalBoolean, optionsObject, pageRange } from './validate.js';
import {
  DEVICE_SHIFT,
  DEV_MIGRATED_TO_DEVICE,
  DEV_MIGRATED_TO_RAM,
  HUGE,
  KIND_DEVICE,
  KIND_MASK,
  KIND_NONE,
  KIND_POISON,
  KIND_PRESENT,
  LOCKED,
  MAX_DEVICE_SLOT,
  PMD_SIZE,
  REGION_HEADER,
  STAT_FAULTS,
  STAT_FILL_RACED,
  STAT_FILL_RETRIES,
  STAT_KERNEL_FAULTS,
  STAT_MIGRATED_BACK,
  STAT_WP_FAULTS,
  STAT_WRITE_FAULTS,
  UNLOCK_SEQ,
  UNMAPPED,
  WRITE,
  ZAPPING,
  ZAP_BATCHES_DONE,
  ZAP_BATCHES_READ,
  ZAP_PENDING,
  ZAP_READING,
  stateIndex,
} from './layout.js';
import { LOCK_DEADLINE_MS, lockPage, unlockPage } from './pagelock.js';
import { Device, deviceBySlot, type DeviceHolder } from './device.js';
import { SWP_HWPOISON, makeDeviceEntry } from './entry.js';
import { FIX_PRIVILEGE, probe } from './probe.js';
import { encodeSteps, forkRegion, type ChildResult, type ChildStep } from './fork.js';
import { FaultTrace } from './trace.js';
import { WorkerServicer } from './servicer/host.js';
import { summary } from './inspect.js';

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

/** Options of `region.discard`. */
export interface DiscardOptions {
  /**
   * MADV_FREE instead of MADV_DONTNEED: the CPU pages are freed only if memory runs short before
   * they are written again (then they read as zeroes); device entries stay where they are, as
   * madvise_free_pte_range skips non-present entries. Private anonymous regions only (EINVAL
   * otherwise, as madvise(2) says).
   */
  free?: boolean;
}

/**
 * A page's entry in the region's page table, as {@link Region#entry} reads it; branch on `kind`:
 * - `'none'`: no page: never touched, or discarded (`pte_none`). A read maps the zero page.
 * - `'present'`: a CPU page in system memory; `write` says whether the pte is writable (false
 *   after a read entry came back, or under `mprotect(…, 'read')`).
 * - `'device'`: a device entry (`make_device_entry`): the data is in `device`'s memory at `pfn`,
 *   and the next CPU access faults it back. `write` distinguishes a write entry
 *   ({@link SWP_DEVICE_WRITE}) from a read entry ({@link SWP_DEVICE}).
 * - `'poison'`: a driver refused a fault (`'sigbus'`); every access raises SIGBUS until
 *   {@link Region#discard} clears it.
 */
export type Entry =
  | {
      /** No page: never touched, or discarded. */
      kind: 'none';
    }
  | {
      /** A CPU page in system memory. */
      kind: 'present';
      /** The pte is writable (false: the next write takes a write-protect fault, or mprotect forbids it). */
      write: boolean;
    }
  | {
      /** A device entry: the page's data is in device memory. */
      kind: 'device';
      /** A write entry (`SWP_DEVICE_WRITE`), else a read entry (`SWP_DEVICE`): the page comes back write-protected. */
      write: boolean;
      /** The device that holds the page. */
      device: Device;
      /** The device page the entry names (`device_entry_to_pfn`); pass it to {@link Device#read} / {@link Device#write}. */
      pfn: number;
    }
  | {
      /** Poisoned: a driver refused a fault on it; accesses raise SIGBUS. */
      kind: 'poison';
    };

/** Counters of {@link Region#stats}: they only go up, from 0 when the region was mapped. */
export interface RegionStats {
  /** Faults served (missing and write-protect). */
  faults: number;
  /** Of those, write accesses. */
  writeFaults: number;
  /** Write-protect faults: the first write to a page that came back from a read entry. */
  wpFaults: number;
  /** Faults taken inside system calls; counted when the region was mapped with countKernelFaults. */
  kernelFaults: number;
  /** Pages migrated back to system memory, by faults or migrateToRam. */
  migratedBack: number;
}

/** Options of {@link Region#migrate}. */
export interface MigrateOptions {
  /** Force write (true) or read (false) device entries; default: as the page was mapped. */
  write?: boolean;
}

// HMM_DMIRROR_PROT_* of lib/test_hmm_uapi.h: one byte per page in a snapshot (region.snapshot,
// mirrorSnapshot). The low bits are the access, the high ones where the page is.

/** Snapshot byte: the page cannot be accessed (no vma, PROT_NONE, or poisoned). Not a flag: the whole byte. */
export const HMM_DMIRROR_PROT_ERROR = 0xff;
/** Snapshot byte: nothing mapped (never touched or discarded). */
export const HMM_DMIRROR_PROT_NONE = 0x00;
/** Snapshot flag: the page is mapped readable. */
export const HMM_DMIRROR_PROT_READ = 0x01;
/** Snapshot flag: the page is mapped writable. */
export const HMM_DMIRROR_PROT_WRITE = 0x02;
/** Snapshot flag: mapped by a PMD: a 2 MiB hugetlb page, a THP in a `thp` region, or a whole huge device entry. */
export const HMM_DMIRROR_PROT_PMD = 0x04;
/** Snapshot flag: mapped by a PUD: a 1 GiB hugetlb page (only where that is the default huge page size). */
export const HMM_DMIRROR_PROT_PUD = 0x08;
/** Snapshot flag: the shared zero page is mapped (a read of a hole), with READ. */
export const HMM_DMIRROR_PROT_ZERO = 0x10;
/** Snapshot flags: a device entry on the device asked about (or on any device when none was given), with READ or WRITE. */
export const HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL = 0x20;
/** Snapshot flags: a device entry on another device, with READ or WRITE; test with `(b & 0x30) === 0x30`. */
export const HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE = 0x30;

// /proc/PID/pagemap bits (Documentation/admin-guide/mm/pagemap.rst), as region.pagemap() returns them.

/** Pagemap bit 63: a CPU page is present; bits 0–54 are its frame number (0 without CAP_SYS_ADMIN). */
export const PM_PRESENT = 1n << 63n;
/** Pagemap bit 62: swapped, or a device entry; bits 0–4 are the swap type ({@link SWP_DEVICE_WRITE}, {@link SWP_DEVICE}), bits 5–54 the offset (the device pfn). */
export const PM_SWAP = 1n << 62n;
/** Pagemap bit 61: a file page or shared anonymous page: set for `shared` and `file` regions' page-cache pages, never for private anonymous memory. */
export const PM_FILE = 1n << 61n;
/** Pagemap bit 57: the pte is userfaultfd write-protected (a page that came back from a read entry, before its first write). */
export const PM_UFFD_WP = 1n << 57n;
/** Pagemap bit 56: the page is mapped exactly once; for device entries, the device page's refcount is 1 (not shared by a fork). */
export const PM_MMAP_EXCLUSIVE = 1n << 56n;
/** Pagemap bit 55: the pte is soft-dirty, as the kernel reports it. */
export const PM_SOFT_DIRTY = 1n << 55n;

/** The largest faultAround: one PMD's worth of 4 KiB pages. */
export const MAX_FAULT_AROUND = 512;

/**
 * Pages a region may have: 2^20 pages is 4 GiB with 4 KiB pages, the largest external ArrayBuffer
 * Node 20 creates (`region.bytes` must cover the whole region).
 */
export const MAX_REGION_PAGES = 1 << 20;

const PROT_NONE = 0;
const PROT_READ = 1;
const PROT_WRITE = 2;
const PROT_READWRITE = 3;
const EAGAIN = -11;
const EEXIST = -17;
/** Why opening a userfaultfd fails when it is not permitted or not there (EPERM, ENOENT, EACCES, ENOSYS). */
const UNAVAILABLE_ERRNOS = new Set([1, 2, 13, 38]);

function unavailableError(cause?: unknown): UffdHmmError {
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

/**
 * A real anonymous mapping registered with userfaultfd: the emulated vma. {@link Region#bytes} is
 * its memory; the region keeps the page table that says, page by page, whether the data is in a
 * CPU page, behind a device entry on a {@link Device}, or nowhere yet ({@link Entry}). A CPU touch
 * of a device-resident page is a real hardware fault that the region's servicer answers by
 * migrating the page back (`do_swap_page` → the device's `migrate_to_ram`), before the touching
 * instruction completes.
 *
 * Pages are addressed by index (0 to {@link Region#pages} − 1); ranges are `first, count` in
 * pages; byte offsets into `bytes` are `page * pageSize + offset`. Create one with
 * {@link Region.map}; release it with {@link Region#close}.
 *
 * Event: `'error'` (an `Error` with code `ERR_SERVICER_FAILED` or `ERR_SERVICER_STALLED`): the
 * worker servicer died or stopped reading faults past the stall deadline, and a native guard now
 * serves this region with the default policy ({@link Region#guarded} turns true). Without a
 * listener the error becomes a process warning.
 *
 * @example
 * ```ts
 * import { Device, Region } from 'uffd-hmm';
 *
 * const gpu = new Device({ capacity: 1024 });
 * const region = Region.map({ pages: 16 });
 * region.bytes.fill(1);
 * region.migrate(0, 16, gpu);           // migrate_vma: 16 device entries, CPU pages freed
 * region.bytes[5 * region.pageSize];    // a real fault: page 5 migrates back
 * console.log(region.stats().migratedBack); // 1
 * await region.close();
 * await gpu.close();
 * ```
 */
export class Region extends EventEmitter implements DeviceHolder {
  /**
   * Maps a new region of `pages` pages (mmap of private anonymous memory), registers it with
   * userfaultfd for missing and write-protect faults, and hands it to the chosen servicer. Every
   * page starts as `'none'`; the first touch of each is a (cheap) fault too, served with a zero
   * page or a fresh page.
   *
   * @param options - `pages` (required), `servicer` (`'worker'` by default), `faultAround`,
   * `countKernelFaults`, and the backing: `shared`, `file`, `hugetlb` or `thp`; see {@link MapOptions}.
   * @throws `ERR_UFFD_UNAVAILABLE` when this process cannot use userfaultfd (the message names the
   * fix; {@link probe} says the same without throwing); `ERR_UFFD_FEATURE_MISSING` when the
   * `'inline'` servicer lacks UFFD_FEATURE_SIGBUS; `ERR_TOO_MANY_INLINE_REGIONS` past 64 open
   * inline regions; `TypeError` (`ERR_INVALID_ARG_TYPE` / `ERR_INVALID_ARG_VALUE`) and `RangeError`
   * (`ERR_OUT_OF_RANGE`) for bad options; a SystemError (`mmap`, `ioctl(UFFDIO_REGISTER)`, …) when
   * the kernel refuses.
   * @example
   * ```ts
   * const region = Region.map({ pages: 256 });                        // 1 MiB, worker servicer
   * const fast = Region.map({ pages: 256, servicer: 'native', faultAround: 16 });
   * const tiny = Region.map({ pages: 1, servicer: 'inline' });        // faults served in the faulting thread
   * ```
   */
  static map(options: MapOptions): Region {
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
    // Our own zaps come back as EVENT_REMOVE (see #zapLocked) on regions whose servicer reads events.
    // A hugetlb region is not registered, so nothing reports zaps there.
    const zapEvents = servicer !== 'inline' && p.features.eventRemove && !backing.hugetlb;
    return new Region(pages, servicer, faultAround, countKernelFaults, zapEvents, backing);
  }

  #pages: number;
  /** Bytes per page: {@link PAGE_SIZE}, the kernel's base page size (4096 on x86-64). */
  readonly pageSize = PAGE_SIZE;
  /** Who serves this region's faults, as given to {@link Region.map}. */
  readonly servicer: ServicerKind;
  /** Pages a device fault may bring back at once (1: only the faulting page), as given to {@link Region.map}. */
  readonly faultAround: number;
  /** What backs the region: private or shared, anonymous memory or a file (MapOptions.shared/file). */
  readonly mapping: RegionMapping;
  /** MapOptions.thp: THPs may back the region and migrate whole. */
  readonly thp: boolean;
  /** @internal */ readonly handle: number;
  /** @internal Region header and page table, shared with the servicer (replaced by remap). */
  shared: Int32Array;
  #address: bigint;
  #buffer: ArrayBuffer;
  #bytes: Uint8Array;
  /**
   * Per-page protection as last set by mprotect (PROT_* bits), allocated on the first mprotect:
   * until then every page is readwrite, and the table costs its 8 bytes per page alone.
   */
  #prot: Uint8Array | undefined;
  readonly #devices = new Set<Device>();
  #closing: Promise<void> | undefined;
  #closed = false;
  /**
   * The region's userfaultfd is user-mode only (UFFD_USER_MODE_ONLY, the most an unprivileged
   * process may get): CPU touches are served, but a system call that touches a device-resident
   * page (`write(2)` from it, `read(2)` into it) fails with `EFAULT`, and the mirror READ/WRITE
   * functions throw `ERR_SERVICER_UNSUPPORTED`. See {@link Probe.userModeOnly}.
   */
  readonly userModeOnly: boolean;
  #servicerHost: WorkerServicer | undefined;
  #guarded = false;
  #trace: FaultTrace | undefined;
  /** The kernel reports our own zaps as EVENT_REMOVE (see #zapLocked). */
  readonly #zapEvents: boolean;

  private constructor(
    pages: number,
    servicer: ServicerKind,
    faultAround: number,
    countKernelFaults: boolean,
    zapEvents: boolean,
    backing: Backing,
  ) {
    super();
    this.#pages = pages;
    this.servicer = servicer;
    this.faultAround = faultAround;
    this.mapping = backing.mapping;
    this.thp = backing.thp;
    this.shared = new Int32Array(new SharedArrayBuffer((REGION_HEADER + 2 * pages) * 4));
    let nat: NativeRegion;
    try {
      nat = native.regionCreate({
        pages,
        shared: this.shared,
        servicer,
        allowUserModeOnly: true,
        classifyFaults: countKernelFaults,
        faultAround,
        mapShared: backing.shared,
        fd: backing.fd,
        offset: backing.offset,
        hugetlb: backing.hugetlb,
        thp: backing.thp,
      });
    } catch (e) {
      // Native system errors already carry code, errno and syscall; only a refused open needs the fix
      // named. Others (EMFILE: too many open files) are not a missing privilege: root would not help.
      const c = e as { syscall?: string; errno?: number };
      if (c.syscall === 'userfaultfd' && UNAVAILABLE_ERRNOS.has(Math.abs(c.errno ?? 0))) throw unavailableError(e);
      throw e;
    }
    this.handle = nat.handle;
    this.#address = nat.address;
    this.#buffer = nat.bytes;
    this.userModeOnly = nat.userModeOnly;
    this.#zapEvents = zapEvents;
    try {
      this.#bytes = new Uint8Array(nat.bytes);
      if (servicer === 'worker') {
        this.#servicerHost = WorkerServicer.get();
        this.#servicerHost.addRegion(this);
      }
    } catch (e) {
      // Never leave a registered region that nobody serves: its next fork event would hang fork().
      this.#servicerHost?.removeRegion(this.handle);
      native.detachArrayBuffer(nat.bytes);
      native.regionClose(this.handle);
      throw e;
    }
  }

  /** The mapping's start address (the vma's `vm_start`); changes with {@link Region#remap}. */
  get address(): bigint {
    return this.#address;
  }

  /** Size in pages (changes with remap). */
  get pages(): number {
    return this.#pages;
  }

  /** Size in bytes: `pages * pageSize`. */
  get length(): number {
    return this.pages * this.pageSize;
  }

  /**
   * The real memory, `length` bytes. Touching a device-resident page faults and is served before
   * the access completes. A new view after {@link Region#remap}; detached (length 0) after
   * {@link Region#close}, never a dangling view.
   */
  get bytes(): Uint8Array {
    return this.#bytes;
  }

  /**
   * True once {@link Region#close} was called; the methods that read or move pages then throw
   * `ERR_REGION_CLOSED`.
   */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * What `console.log(region)` and `util.inspect` show: `Region { address: '0x7f…', pages: 16,
   * servicer: 'worker', mapping: 'private-anonymous' }` (with `faultAround` when above 1, and
   * `closed: true` once closed), or `[Region: 0x7f…]` inside another value.
   */
  [inspect.custom](depth: number, options: InspectOptionsStylized): string {
    const address = `0x${this.#address.toString(16)}`;
    return summary('Region', depth, options, address, () => ({
      address,
      pages: this.#pages,
      servicer: this.servicer,
      mapping: this.mapping,
      ...(this.faultAround > 1 ? { faultAround: this.faultAround } : {}),
      ...(this.#closed ? { closed: true } : {}),
    }));
  }

  /**
   * Migrates pages to `device` (migrate_vma): each page's contents move to a new device page and the
   * CPU page is freed, leaving a device entry — a write entry if the page was writable, else a
   * read entry. Holes migrate as zeroed device pages; pages on another device move device to
   * device. Best effort: returns how many pages of the range are on `device` afterwards.
   *
   * Pages that cannot move are skipped, as migrate_vma skips them: poisoned pages, pages under
   * `mprotect(…, 'none')`, pages unmapped behind the library's back, and everything from the
   * point the device is full. Pages already on `device` count and stay (a `write: false` turns
   * their write entries into read entries). Works with every servicer; a thread touching a page
   * while it moves waits for the migration, then faults it back.
   *
   * @param first - first page of the range.
   * @param count - pages in the range (0 is allowed and does nothing).
   * @param device - the destination, an open {@link Device}.
   * @param options - `write`: force write (true) or read (false) device entries.
   * @returns the number of pages of the range now on `device`; less than `count` when some were
   * skipped.
   * @throws `ERR_REGION_CLOSED` / `ERR_DEVICE_CLOSED` when either is closed; `RangeError`
   * (`ERR_OUT_OF_RANGE`) for a range outside the region; `TypeError` (`ERR_INVALID_ARG_TYPE`) when
   * `device` is not a Device; a SystemError naming the ioctl if the kernel refuses (nothing moved
   * then).
   * @example
   * ```ts
   * region.bytes.fill(7, 0, 4 * region.pageSize);
   * const moved = region.migrate(0, 4, gpu);          // 4, unless gpu is full
   * region.entry(0);                                  // { kind: 'device', write: true, device: gpu, pfn: … }
   * region.migrate(0, 4, gpu, { write: false });      // downgrade to read entries
   * region.migrate(0, 4, otherGpu);                   // device to device
   * ```
   */
  migrate(first: number, count: number, device: Device, options?: MigrateOptions): number {
    this.#checkOpen();
    const [f, c] = pageRange(first, count, this.pages);
    if (!(device instanceof Device)) throw invalidType('device', 'a Device', device);
    if (device.closed) throw deviceClosed(device.name);
    const opts = optionsObject('options', options);
    const forceWrite = optionalBoolean('options.write', opts.write);
    // Shared memory never migrates (migrate_vma_pages keeps pages that have a mapping), nor does
    // hugetlb memory (migrate_vma_setup refuses the vma).
    if (c === 0 || this.mapping !== 'private-anonymous' && this.mapping !== 'private-file') return 0;
    // In a private file mapping only anonymous pages (the CPU's private copies) migrate; holes and
    // pages still backed by the file are skipped (migrate_vma_collect_hole, page_mapping()).
    let kernelView: BigUint64Array | undefined;
    if (this.mapping === 'private-file') {
      kernelView = new BigUint64Array(c);
      native.regionPagemap(this.handle, f, c, kernelView);
    }
    this.#servicerHost?.ensureDevice(device);
    this.#devices.add(device);
    device.addHolder(this);

    const shared = this.shared;
    const pfns = new Int32Array(c).fill(-1); // new device page per page, -1 = not moving
    const old = new Int32Array(c); // state word before the lock
    let locked = 0; // pages [f, f+locked) are locked
    let onDevice = 0;
    // THPs move whole into a huge device page each (block's first page → its first pfn); a THP the
    // device cannot take whole is split and moves as base pages (migrate_vma's fallback).
    const hugeN = PMD_SIZE / PAGE_SIZE;
    const hugeBase = new Map<number, number>();
    if (this.thp) {
      for (const b of thpBlocks(this.handle, this.#address, f, c)) {
        const base = device.allocHugePage(hugeN);
        if (base >= 0) hugeBase.set(b, base);
      }
    }
    const hugeBlockOf = (page: number): number => pmdBlockStart(this.#address, page);
    /** Gives back the pfns of huge device pages that did not get their whole block. */
    const releaseHuge = (keep: boolean): Set<number> => {
      const whole = new Set<number>();
      for (const [b, base] of hugeBase) {
        let all = keep;
        for (let i = 0; i < hugeN && all; i++) all = b + i - f < locked && pfns[b + i - f] === base + i;
        if (all) whole.add(b);
        else for (let i = 0; i < hugeN; i++) if (!(keep && b + i - f < locked && pfns[b + i - f] === base + i)) device.putPage(base + i);
      }
      return whole;
    };
    let hugeWhole = new Set<number>();
    try {
      for (; locked < c; locked++) {
        const page = f + locked;
        const s = lockPage(shared, page);
        old[locked] = s;
        const kind = s & KIND_MASK;
        if (kind === KIND_DEVICE && ((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT) === device.slot) {
          onDevice++;
          continue;
        }
        if (kind === KIND_POISON || (s & UNMAPPED) !== 0 || (this.#protOf(page) & PROT_READ) === 0) continue;
        if (kernelView !== undefined && kind !== KIND_DEVICE) {
          const e = kernelView[locked];
          if ((e & PM_PRESENT) === 0n || (e & PM_FILE) !== 0n) continue;
          // A private copy the kernel made without asking us (a write to a page the file backs, or
          // to one we mapped read-only from it): from here on the table knows it, writable unless
          // we write-protected it ourselves.
          if (kind === KIND_NONE || ((s & WRITE) === 0 && (e & PM_UFFD_WP) === 0n)) {
            old[locked] = KIND_PRESENT | WRITE | (s & ~KIND_MASK);
          }
        }
        const hb = hugeBase.size > 0 ? hugeBase.get(hugeBlockOf(page)) : undefined;
        const pfn = hb !== undefined ? hb + (page - hugeBlockOf(page)) : device.allocPage();
        if (pfn < 0) {
          // The device is full: this page and the rest stay where they are.
          this.#release(page, s);
          break;
        }
        pfns[locked] = pfn;
      }
      // Stop writers first (the migration entry), then copy, then free the CPU pages.
      this.#forRuns(f, locked, (i) => pfns[i] >= 0 && (old[i] & KIND_MASK) === KIND_PRESENT, (a, n) =>
        this.#retry(() => native.regionWriteProtect(this.handle, a, n, true, false), 'ioctl(UFFDIO_WRITEPROTECT)', `write-protecting ${pageSpan(a, n)} to migrate them`),
      );
      const cpuPfns = new Int32Array(locked);
      for (let i = 0; i < locked; i++) {
        const kind = old[i] & KIND_MASK;
        cpuPfns[i] = pfns[i] >= 0 && (kind === KIND_PRESENT || kind === KIND_NONE) ? pfns[i] : -1;
      }
      native.regionCopyOut(this.handle, f, locked, device.slot, cpuPfns);
      for (let i = 0; i < locked; i++) {
        if (pfns[i] < 0 || (old[i] & KIND_MASK) !== KIND_DEVICE) continue;
        const from = deviceBySlot((old[i] >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT)!;
        native.deviceCopyPage(from.slot, shared[stateIndex(f + i) + 1], device.slot, pfns[i]);
        from.putPage(shared[stateIndex(f + i) + 1]);
      }
      this.#forRuns(f, locked, (i) => pfns[i] >= 0 && (old[i] & KIND_MASK) === KIND_PRESENT, (a, n) =>
        this.#zapLocked(a, n),
      );
      hugeWhole = releaseHuge(true);
    } catch (e) {
      for (let i = 0; i < locked; i++) {
        // Pages of a huge device page are all given back by releaseHuge.
        if (pfns[i] >= 0 && !hugeBase.has(hugeBlockOf(f + i))) device.putPage(pfns[i]);
        this.#release(f + i, old[i]);
      }
      releaseHuge(false);
      throw e;
    }
    let moved = 0;
    this.#settleZaps();
    for (let i = 0; i < locked; i++) {
      const page = f + i;
      const s = old[i];
      const kind = s & KIND_MASK;
      // If someone zapped the page while we held it, whatever it held, and the device page we
      // copied it to, is dropped, as zap_pte_range would drop the entry we were making.
      if (pfns[i] < 0) {
        // Already on this device: only a forced read downgrades it (make_device_entry_read).
        const oldPfn = shared[stateIndex(page) + 1];
        if (!this.#publish(page, kind === KIND_DEVICE && forceWrite === false ? s & ~WRITE : s) && kind === KIND_DEVICE) {
          deviceBySlot((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT)!.putPage(oldPfn);
        }
        continue;
      }
      // As the pte was: writable only if the vma allows writes and the page was writable.
      const writable = (this.#protOf(page) & PROT_WRITE) !== 0;
      const write = forceWrite ?? (writable && (kind === KIND_NONE || (s & WRITE) !== 0));
      shared[stateIndex(page) + 1] = pfns[i];
      const huge = hugeWhole.size > 0 && hugeWhole.has(hugeBlockOf(page)) ? HUGE : 0;
      if (this.#publish(page, KIND_DEVICE | (write ? WRITE : 0) | huge | (device.slot << DEVICE_SHIFT))) moved++;
      else device.putPage(pfns[i]);
    }
    Atomics.add(device.shared, DEV_MIGRATED_TO_DEVICE, moved);
    return onDevice + moved;
  }

  /**
   * Migrates the range's device-resident pages back to system memory without a fault (the
   * driver-initiated migrate_vma to system memory, as dmirror's MIGRATE_TO_SYS does): each comes
   * back with its device's data, writable for a write entry, write-protected for a read entry,
   * and its device page loses a reference (freed, with `pageFree`, on the last). Pages not on a
   * device are left alone. Runs of consecutive device pages come back in one UFFDIO_COPY. Works
   * with every servicer; does not count as a fault in {@link Region#stats} (but in `migratedBack`).
   *
   * @param first - first page of the range.
   * @param count - pages in the range.
   * @returns how many pages moved back.
   * @throws `ERR_REGION_CLOSED`; `RangeError` (`ERR_OUT_OF_RANGE`) for a range outside the region;
   * a SystemError (`ioctl(UFFDIO_COPY)`) if the kernel refuses.
   * @example
   * ```ts
   * region.migrate(0, 16, gpu);
   * const e = region.entry(2);
   * if (e.kind === 'device') gpu.write(e.pfn, new Uint8Array([9]));
   * region.migrateToRam(0, 16);            // 16: all back, no fault taken
   * region.bytes[2 * region.pageSize];     // 9
   * ```
   */
  migrateToRam(first: number, count: number): number {
    this.#checkOpen();
    const [f, c] = pageRange(first, count, this.pages);
    return this.#migrateBack(f, c, undefined);
  }

  /**
   * The page's entry, read from the table the servicers share: where its data is now. Reading it
   * never faults or moves the page.
   *
   * @param page - page index, 0 to pages − 1.
   * @throws `ERR_REGION_CLOSED`; `RangeError` (`ERR_OUT_OF_RANGE`) for a page outside the region.
   */
  entry(page: number): Entry {
    this.#checkOpen();
    integer('page', page, 0, this.pages - 1);
    const s = Atomics.load(this.shared, stateIndex(page));
    switch (s & KIND_MASK) {
      case KIND_PRESENT:
        // The pte is writable only if the vma is (mprotect) and the page is not write-protected.
        return { kind: 'present', write: (s & WRITE) !== 0 && (this.#protOf(page) & PROT_WRITE) !== 0 };
      case KIND_DEVICE: {
        const device = deviceBySlot((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT)!;
        return { kind: 'device', write: (s & WRITE) !== 0, device, pfn: Atomics.load(this.shared, stateIndex(page) + 1) };
      }
      case KIND_POISON:
        return { kind: 'poison' };
      default: {
        if (this.mapping === 'private-anonymous' || (s & UNMAPPED) !== 0) return { kind: 'none' };
        // Shared and file pages can be mapped from the page cache without a fault reaching us.
        const pm = new BigUint64Array(1);
        native.regionPagemap(this.handle, page, 1, pm);
        if ((pm[0] & PM_PRESENT) === 0n) return { kind: 'none' };
        const fileBacked = (pm[0] & PM_FILE) !== 0n && this.mapping === 'private-file';
        return { kind: 'present', write: !fileBacked && (this.#protOf(page) & PROT_WRITE) !== 0 };
      }
    }
  }

  /**
   * One HMM_DMIRROR_PROT_* byte per page, as dmirror's snapshot ioctl reports: a device page is
   * LOCAL on `device` (or on any device when none is given) and REMOTE on another. Nothing is
   * faulted or moved; unlike {@link mirrorSnapshot}, pages on other devices show as REMOTE.
   *
   * @param first - first page, default 0.
   * @param count - pages, default to the end of the region.
   * @param device - the device asking; pages on it are LOCAL.
   * @returns one byte per page: {@link HMM_DMIRROR_PROT_NONE}, `HMM_DMIRROR_PROT_READ` /
   * `_WRITE` (a CPU page), `HMM_DMIRROR_PROT_ZERO | READ` (the zero page),
   * `HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL` / `_REMOTE` with READ or WRITE (a device entry), or
   * {@link HMM_DMIRROR_PROT_ERROR} (no access: PROT_NONE, poisoned or unmapped).
   * @throws `ERR_REGION_CLOSED`; `RangeError` (`ERR_OUT_OF_RANGE`) for a range outside the region;
   * `TypeError` when `device` is not a Device.
   */
  snapshot(first = 0, count?: number, device?: Device): Uint8Array {
    this.#checkOpen();
    const [f, c] = pageRange(first, count ?? this.pages - (typeof first === 'number' ? first : 0), this.pages);
    if (device !== undefined && !(device instanceof Device)) throw invalidType('device', 'a Device', device);
    const out = new Uint8Array(c);
    const pm = new BigUint64Array(c);
    if (c > 0) native.regionPagemap(this.handle, f, c, pm);
    const zeroPfn = zeroPagePfn();
    const hugeSeen = new Map<number, boolean>();
    for (let i = 0; i < c; i++) {
      const page = f + i;
      const s = Atomics.load(this.shared, stateIndex(page));
      const rw = (s & WRITE) !== 0 ? HMM_DMIRROR_PROT_WRITE : HMM_DMIRROR_PROT_READ;
      if ((this.#protOf(page) & PROT_READ) === 0 || (s & UNMAPPED) !== 0) {
        out[i] = HMM_DMIRROR_PROT_ERROR;
        continue;
      }
      switch (s & KIND_MASK) {
        case KIND_DEVICE: {
          const slot = (s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT;
          const local = device === undefined || device.slot === slot;
          out[i] = (local ? HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL : HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE) | rw;
          if ((s & HUGE) !== 0 && this.#hugeEntryAt(page, hugeSeen)) out[i] |= HMM_DMIRROR_PROT_PMD;
          break;
        }
        case KIND_PRESENT: {
          const e = pm[i];
          if ((e & PM_PRESENT) === 0n) {
            out[i] = HMM_DMIRROR_PROT_NONE;
          } else if (zeroPfn !== 0n && (e & ((1n << 55n) - 1n)) === zeroPfn) {
            out[i] = HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ;
          } else {
            out[i] = (this.#protOf(page) & PROT_WRITE) !== 0 ? rw : HMM_DMIRROR_PROT_READ;
          }
          break;
        }
        case KIND_POISON:
          out[i] = HMM_DMIRROR_PROT_ERROR;
          break;
        default: {
          // Shared and file pages can be mapped straight from the page cache, without a fault
          // reaching us: the kernel's pagemap tells (a file page is mapped read-only until COW).
          const e = this.mapping === 'private-anonymous' ? 0n : pm[i];
          if ((e & PM_PRESENT) === 0n) out[i] = HMM_DMIRROR_PROT_NONE;
          else if ((e & PM_FILE) !== 0n && this.mapping === 'private-file') out[i] = HMM_DMIRROR_PROT_READ;
          else out[i] = ((this.#protOf(page) & PROT_WRITE) !== 0 ? HMM_DMIRROR_PROT_WRITE : HMM_DMIRROR_PROT_READ) | this.#hugeLevel();
        }
      }
    }
    return out;
  }

  /**
   * The /proc/self/pagemap words of the range, with device entries shown as the kernel shows
   * them: PM_SWAP | swp_type | swp_offset << 5, exclusive when mapped once. CPU pages are
   * reported as the kernel's own pagemap has them (PM_PRESENT, the frame number when this process
   * may see it, PM_UFFD_WP, …); poisoned pages as a swap entry of type {@link SWP_HWPOISON}.
   *
   * @param first - first page, default 0.
   * @param count - pages, default to the end of the region.
   * @returns one 64-bit word per page; decode device entries with {@link PM_SWAP},
   * `Number(word & 31n)` (the type, {@link SWP_DEVICE_WRITE} or {@link SWP_DEVICE}) and
   * `(word >> 5n) & ((1n << 50n) - 1n)` (the pfn).
   * @throws `ERR_REGION_CLOSED`; `RangeError` (`ERR_OUT_OF_RANGE`) for a range outside the region;
   * a SystemError (`pread(/proc/self/pagemap)`) if the kernel refuses.
   */
  pagemap(first = 0, count?: number): BigUint64Array {
    this.#checkOpen();
    const [f, c] = pageRange(first, count ?? this.pages - (typeof first === 'number' ? first : 0), this.pages);
    const out = new BigUint64Array(c);
    if (c > 0) native.regionPagemap(this.handle, f, c, out);
    for (let i = 0; i < c; i++) {
      const s = Atomics.load(this.shared, stateIndex(f + i));
      if ((s & KIND_MASK) === KIND_POISON) {
        // make_hwpoison_entry: shown with the seed's SWP_HWPOISON type (the page has no frame left).
        out[i] = PM_SWAP | BigInt(SWP_HWPOISON);
        continue;
      }
      if ((s & KIND_MASK) !== KIND_DEVICE) continue;
      const pfn = Atomics.load(this.shared, stateIndex(f + i) + 1);
      const e = makeDeviceEntry(pfn, (s & WRITE) !== 0);
      const type = e >> 57n;
      const device = deviceBySlot((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT);
      const exclusive = device !== undefined && device.refcount(pfn) === 1 ? PM_MMAP_EXCLUSIVE : 0n;
      out[i] = PM_SWAP | exclusive | (type | (BigInt(pfn) << 5n));
    }
    return out;
  }

  /**
   * Rss, Anonymous and Swap of this mapping from /proc/self/smaps, with device pages counted as
   * resident anonymous memory, as the kernel counts device-private pages (smaps_pte_entry). All
   * values are in bytes, for this region's range only.
   *
   * @throws `ERR_REGION_CLOSED`; `ERR_SMAPS` when /proc/self/smaps has no entry for the region.
   */
  smaps(): {
    /** Resident bytes: CPU pages plus device pages. */
    rss: number;
    /** Anonymous bytes: CPU pages plus device pages. */
    anonymous: number;
    /** Swapped-out bytes (0 unless the system swapped some of the region's CPU pages). */
    swap: number;
    /** Of `rss`, the bytes held as device pages (device entries × pageSize). */
    device: number;
  } {
    this.#checkOpen();
    const kb = readSmaps(this.#address);
    let devicePages = 0;
    for (let p = 0; p < this.pages; p++) {
      if ((Atomics.load(this.shared, stateIndex(p)) & KIND_MASK) === KIND_DEVICE) devicePages++;
    }
    const device = devicePages * this.pageSize;
    return { rss: kb.rss + device, anonymous: kb.anonymous + device, swap: kb.swap, device };
  }

  /**
   * mprotect(2) over the range. As change_pte_range does, write device entries become read entries:
   * the page comes back write-protected and its next write faults again. Under `'none'` a touch
   * is a SIGSEGV (as with any PROT_NONE memory), {@link Region#snapshot} shows ERROR and
   * {@link Region#migrate} skips the page; under `'read'` a write is a SIGSEGV and migrations
   * leave read entries.
   *
   * @param first - first page of the range.
   * @param count - pages in the range.
   * @param prot - `'none'`, `'read'` or `'readwrite'`.
   * @throws `ERR_REGION_CLOSED`; `RangeError` (`ERR_OUT_OF_RANGE`) for a range outside the region;
   * `TypeError` (`ERR_INVALID_ARG_VALUE`) for another `prot`; a SystemError (`mprotect`).
   */
  mprotect(first: number, count: number, prot: 'none' | 'read' | 'readwrite'): void {
    this.#checkOpen();
    const [f, c] = pageRange(first, count, this.pages);
    this.#checkHugeAligned('mprotect', f, c);
    const bits = prot === 'none' ? PROT_NONE : prot === 'read' ? PROT_READ : prot === 'readwrite' ? PROT_READWRITE : -1;
    if (bits < 0) throw invalidValue('prot', "'none', 'read' or 'readwrite'", prot);
    // Only what is still mapped (someone may have munmapped pages): mprotect(2) over a hole would
    // fail with ENOMEM after changing the vmas before it, leaving our view and the kernel's apart.
    const old = new Int32Array(c);
    for (let i = 0; i < c; i++) old[i] = lockPage(this.shared, f + i);
    try {
      this.#forRuns(f, c, (i) => (old[i] & UNMAPPED) === 0, (a, n) => {
        check(native.regionMprotect(this.handle, a, n, bits), 'mprotect', `${pageSpan(a, n)} to '${prot}'`);
        this.#prot ??= new Uint8Array(this.#pages).fill(PROT_READWRITE);
        this.#prot.fill(bits, a, a + n);
        for (let p = a; p < a + n; p++) {
          // change_pte_range: a write device entry becomes a read entry.
          if ((old[p - f] & KIND_MASK) === KIND_DEVICE) old[p - f] &= ~WRITE;
        }
      });
    } finally {
      for (let i = 0; i < c; i++) this.#release(f + i, old[i]);
    }
  }

  /**
   * MADV_DONTNEED over the range (zap_pte_range): device entries drop their reference (the device
   * page is freed, through pageFree, when it was the last), CPU pages are freed, all read as zero.
   * Every page of the range is `'none'` afterwards; this is also how a poisoned page is cleared.
   *
   * @param first - first page of the range.
   * @param count - pages in the range.
   * @throws `ERR_REGION_CLOSED`; `RangeError` (`ERR_OUT_OF_RANGE`) for a range outside the region;
   * a SystemError (`madvise(MADV_DONTNEED)`); `ERR_SERVICER_STALLED` if the servicer never saw the
   * zap's EVENT_REMOVE (it is stuck).
   */
  discard(first: number, count: number, options?: DiscardOptions): void {
    this.#checkOpen();
    const [f, c] = pageRange(first, count, this.pages);
    const free = optionalBoolean('options.free', optionsObject('options', options).free) ?? false;
    this.#checkHugeAligned('discard', f, c);
    if (c === 0) return;
    const old = new Int32Array(c);
    for (let i = 0; i < c; i++) old[i] = lockPage(this.shared, f + i);
    if (free) {
      // The table does not change: device entries stay, and a CPU page that reclaim frees meanwhile
      // comes back through a missing fault on a 'present' page, which reads zeroes (serveFault).
      // The kernel still sends EVENT_REMOVE for it: the zap handshake keeps the servicer off.
      try {
        this.#forRuns(f, c, (i) => (old[i] & UNMAPPED) === 0, (a, n) => this.#zapLocked(a, n, true));
      } finally {
        for (let i = 0; i < c; i++) this.#release(f + i, old[i]);
      }
      return;
    }
    let zapped = 0; // pages [f, f+zapped) are zapped (or were never mapped)
    try {
      // madvise only what is still mapped: pages someone munmapped have nothing left to zap.
      this.#forRuns(f, c, (i) => (old[i] & UNMAPPED) === 0, (a, n) => {
        this.#zapLocked(a, n);
        zapped = a + n - f;
      });
      zapped = c;
    } finally {
      // A run madvise refused keeps its entries (the kernel changed nothing there).
      for (let i = zapped; i < c; i++) this.#release(f + i, old[i]);
      for (let i = 0; i < zapped; i++) {
        const s = old[i];
        if ((s & KIND_MASK) === KIND_DEVICE) {
          deviceBySlot((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT)!.putPage(this.shared[stateIndex(f + i) + 1]);
        }
        this.shared[stateIndex(f + i) + 1] = 0;
        unlockPage(this.shared, f + i, KIND_NONE | (s & UNMAPPED));
      }
    }
  }

  /**
   * MADV_COLLAPSE over the range: each PMD of it that is fully populated becomes a THP, which a
   * later `migrate` moves whole into one huge device page. Needs MapOptions.thp (else EINVAL, as
   * for a MADV_NOHUGEPAGE vma); the kernel refuses a PMD with missing, device or write-protected
   * pages (EAGAIN/EINVAL, as madvise(2) says). The bytes do not change.
   */
  collapse(first: number, count: number): void {
    this.#checkOpen();
    const [f, c] = pageRange(first, count, this.pages);
    if (c === 0) return;
    check(
      native.regionCollapse(this.handle, f, c),
      'madvise(MADV_COLLAPSE)',
      `collapsing ${pageSpan(f, c)} into THPs`,
      this.thp
        ? 'every page of each PMD must be present and not write-protected: touch (write) them all first'
        : 'map the region with { thp: true } to collapse it',
    );
  }

  /**
   * Forks a child process that runs `steps` in native code (a forked Node process cannot run JS)
   * and reports the results. Device pages become shared with the child (copy_one_pte): their
   * refcount goes up and write entries turn into read entries in both processes. The child's
   * faults arrive on its own userfaultfd (EVENT_FORK) and are served here from the same device
   * pages; a page migrated back in either process comes back for both, write-protected, so the
   * first writer gets its own copy and the other keeps the old bytes.
   *
   * `'worker'` and `'native'` regions only, and only where the kernel grants EVENT_FORK (it needs
   * CAP_SYS_PTRACE: see {@link Probe.features}).
   *
   * @param steps - what the child does, in order (at most 4096): read a byte, write a byte,
   * CRC32 a range of pages, sleep; see {@link ChildStep}.
   * @param options - `timeoutMs` (1 to 600000, default 30000): the child is killed with SIGKILL
   * when its steps overrun it, and the result says so.
   * @returns the child's results, exit code or signal (a SIGBUS from a poisoned page shows here),
   * and its fault counters.
   * @throws `ERR_SERVICER_UNSUPPORTED` for an `'inline'` region; `ERR_UFFD_FEATURE_MISSING`
   * without EVENT_FORK; `ERR_REGION_CLOSED`; `TypeError` / `RangeError` for malformed steps or
   * pages outside the region; `ERR_FORK_EVENT` when the child's userfaultfd never arrived.
   * @example
   * ```ts
   * region.bytes[0] = 5;
   * region.migrate(0, 1, gpu);                     // a write entry; fork makes it a read entry in both
   * const child = await region.fork([
   *   { op: 'read', page: 0 },                     // 5: served from the shared device page
   *   { op: 'write', page: 0, value: 6 },          // the child's own copy (write-protect fault)
   * ]);
   * child.results;                                 // [5, 0]
   * region.bytes[0];                               // still 5 in the parent
   * ```
   */
  async fork(steps: ChildStep[], options?: { timeoutMs?: number }): Promise<ChildResult> {
    this.#checkOpen();
    if (this.servicer === 'inline') {
      throw new UffdHmmError(
        'ERR_SERVICER_UNSUPPORTED',
        "region.fork needs EVENT_FORK, which the 'inline' servicer cannot read; map the region with servicer 'worker' or 'native' to fork it",
      );
    }
    this.#refuseHugetlb('region.fork');
    const opts = optionsObject('options', options);
    const timeoutMs = opts.timeoutMs === undefined ? 30_000 : integer('options.timeoutMs', opts.timeoutMs, 1, 600_000);
    return forkRegion(this.handle, this.shared, this.pages, encodeSteps(steps, this.pages, this.pageSize), timeoutMs);
  }

  /**
   * mremap(MREMAP_MAYMOVE) to `pages` pages: the mapping moves to a new address, device entries and
   * data follow it (the kernel moves the page tables; our table moves with them on EVENT_REMAP).
   * The old `bytes` view is detached and a new one is given; `address` changes. Shrinking drops
   * the device references of the pages cut off, as munmap of the tail would; growing adds
   * `'none'` pages with the protection of the last page.
   *
   * @param pages - the new size in pages, 1 to {@link MAX_REGION_PAGES}.
   * @throws `ERR_SERVICER_UNSUPPORTED` for an `'inline'` region; `ERR_REGION_BUSY` while
   * {@link NativeToucher} threads run on it; `ERR_UFFD_FEATURE_MISSING` without EVENT_REMAP;
   * `ERR_REGION_CLOSED`; `RangeError` (`ERR_OUT_OF_RANGE`); a SystemError (`mremap`).
   */
  remap(pages: number): void {
    this.#checkOpen();
    const newPages = integer('pages', pages, 1, MAX_REGION_PAGES);
    this.#refuseHugetlb('region.remap');
    if ((this.mapping === 'private-file' || this.mapping === 'shared-file') && newPages > this.#pages) {
      // The file's length was checked at map time only; growing could reach past its end (SIGBUS).
      throw new UffdHmmError(
        'ERR_BACKING_UNSUPPORTED',
        `a file-backed region cannot grow (${this.#pages} → ${newPages} pages); map a new region over a longer file instead`,
      );
    }
    if (this.servicer === 'inline') {
      throw new UffdHmmError(
        'ERR_SERVICER_UNSUPPORTED',
        "an 'inline' region reads no EVENT_REMAP, so it cannot be remapped; map the region with servicer 'worker' or 'native' to remap it",
      );
    }
    const oldPages = this.#pages;
    const old = this.shared;
    const states = new Int32Array(oldPages);
    for (let p = 0; p < oldPages; p++) states[p] = lockPage(old, p);
    const next = new Int32Array(new SharedArrayBuffer((REGION_HEADER + 2 * newPages) * 4));
    // Pages stay locked in the new table until the move is done, so no servicer serves them early.
    for (let i = 0; i < REGION_HEADER; i++) next[i] = Atomics.load(old, i);
    const kept = Math.min(oldPages, newPages);
    for (let p = 0; p < kept; p++) {
      next[stateIndex(p)] = states[p] | LOCKED;
      next[stateIndex(p) + 1] = old[stateIndex(p) + 1];
    }
    for (let p = kept; p < newPages; p++) next[stateIndex(p)] = LOCKED;
    let moved: { bytes: ArrayBuffer; address: bigint };
    this.#servicerHost?.replaceTable(this, next, newPages);
    try {
      moved = native.regionRemap(this.handle, newPages, next);
    } catch (e) {
      this.#servicerHost?.replaceTable(this, old, oldPages);
      for (let p = 0; p < oldPages; p++) unlockPage(old, p, states[p]);
      throw e;
    }
    for (let p = newPages; p < oldPages; p++) {
      const s = states[p];
      if ((s & KIND_MASK) === KIND_DEVICE) deviceBySlot((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT)!.putPage(old[stateIndex(p) + 1]);
    }
    native.detachArrayBuffer(this.#buffer);
    this.#buffer = moved.bytes;
    this.#bytes = new Uint8Array(moved.bytes);
    this.#address = moved.address;
    this.shared = next;
    this.#pages = newPages;
    if (this.#prot !== undefined) {
      // Growing extends the last vma, so the new pages have the last kept page's protection.
      const prot = new Uint8Array(newPages).fill(this.#prot[kept - 1]);
      prot.set(this.#prot.subarray(0, kept));
      this.#prot = prot;
    }
    this.#servicerHost?.replaceTable(this, next, newPages); // now with the new address, for hook contexts
    for (let p = 0; p < newPages; p++) unlockPage(next, p, p < kept ? states[p] : KIND_NONE);
  }

  /**
   * Starts recording every fault served on this region (time, page, kind, read/write, thread,
   * device, outcome, service time) into a bounded ring of `capacity` records in shared memory;
   * recording allocates nothing and never blocks a fault: when the ring is full the oldest
   * records are overwritten and counted in `overflow`. A region has at most one trace: starting
   * one stops the previous. Works with every servicer; it adds about 1% to fault latency at p50.
   *
   * @param options - `capacity`: records the ring holds, 1 to 2^24, default 65536 (64 bytes each).
   * @returns the running {@link FaultTrace}; read it with `records()` or `columns()`, end it with
   * `stop()` (closing the region stops it too).
   * @throws `ERR_REGION_CLOSED`; `RangeError` (`ERR_OUT_OF_RANGE`) for a capacity out of range.
   * @example
   * ```ts
   * const trace = region.trace();
   * region.migrate(0, 1, gpu);
   * void region.bytes[0];                          // one fault
   * const [rec] = trace.records();
   * // { page: 0, kind: 'missing', write: false, outcome: 'migrated', device: gpu, serviceUs: …, … }
   * trace.stop();
   * ```
   */
  trace(options?: { capacity?: number }): FaultTrace {
    this.#checkOpen();
    const opts = optionsObject('options', options);
    const capacity = opts.capacity === undefined ? 65536 : integer('options.capacity', opts.capacity, 1, 1 << 24);
    this.#trace?.stop();
    this.#trace = new FaultTrace(this.handle, capacity);
    return this.#trace;
  }

  /** A snapshot of this region's fault counters; still readable after close. */
  stats(): RegionStats {
    const s = this.shared;
    return {
      faults: Atomics.load(s, STAT_FAULTS) >>> 0,
      writeFaults: Atomics.load(s, STAT_WRITE_FAULTS) >>> 0,
      wpFaults: Atomics.load(s, STAT_WP_FAULTS) >>> 0,
      kernelFaults: Atomics.load(s, STAT_KERNEL_FAULTS) >>> 0,
      migratedBack: Atomics.load(s, STAT_MIGRATED_BACK) >>> 0,
    };
  }

  /**
   * munmap: device pages this region held are freed (pageFree), `bytes` is detached, the mapping
   * goes away. Threads still touching the region see plain memory, then a SIGSEGV once unmapped.
   * Nothing is migrated back: the region's data is gone. Calling it again returns the same
   * promise; methods that read or move pages throw `ERR_REGION_CLOSED` from the first call on.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closing = Promise.resolve().then(() => this.#teardown());
    return this.#closing;
  }

  /** @internal Device removal: bring back every page held on `device`. */
  evictDevice(device: Device): void {
    if (this.#closed) return;
    this.#migrateBack(0, this.pages, device);
    this.#devices.delete(device);
  }

  /** @internal Servicer failures land here. */
  reportError(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
    else process.emitWarning(err);
  }

  /** @internal The worker servicer died; a native guard thread (native/region.cc takeOver) serves this region now. */
  servicerTakenOver(): void {
    this.#servicerHost = undefined;
    this.#guarded = true;
  }

  /** True once a native guard took over from a failed worker servicer (default policy only). */
  get guarded(): boolean {
    // The native side may have taken over while this thread was blocked and saw no 'exit' event yet.
    return this.#guarded || (!this.#closed && native.regionGuarded(this.handle));
  }

  #teardown(): void {
    if (this.#closed) return;
    this.#servicerHost?.removeRegion(this.handle);
    this.#servicerHost = undefined;
    // Zap every entry first: device pages lose this mapping's reference (free_swap_and_cache).
    for (let page = 0; page < this.pages; page++) {
      const s = lockPage(this.shared, page);
      if ((s & KIND_MASK) === KIND_DEVICE) {
        deviceBySlot((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT)!.putPage(this.shared[stateIndex(page) + 1]);
      }
      this.shared[stateIndex(page) + 1] = 0;
      unlockPage(this.shared, page, KIND_NONE);
    }
    for (const d of this.#devices) d.removeHolder(this);
    this.#devices.clear();
    this.#trace?.stop();
    this.#closed = true;
    this.#bytes = new Uint8Array(0);
    native.detachArrayBuffer(this.#buffer);
    native.regionClose(this.handle);
  }

  #migrateBack(f: number, c: number, only: Device | undefined): number {
    const shared = this.shared;
    let moved = 0;
    for (let page = f; page < f + c; ) {
      const s = lockPage(shared, page);
      const slot = (s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT;
      if ((s & KIND_MASK) !== KIND_DEVICE || (only !== undefined && only.slot !== slot)) {
        this.#release(page, s);
        page++;
        continue;
      }
      const device = deviceBySlot(slot)!;
      const pfn = shared[stateIndex(page) + 1];
      const write = (s & WRITE) !== 0;
      // A run of entries of the same kind naming consecutive device pages comes back in one COPY.
      let k = 1;
      while (k < MAX_FAULT_AROUND && page + k < f + c && pfn + k < device.capacity) {
        const sq = lockPage(shared, page + k);
        if (sq !== s || shared[stateIndex(page + k) + 1] !== pfn + k) {
          this.#release(page + k, sq);
          break;
        }
        k++;
      }
      try {
        this.#retry(() => {
          const rc = native.regionCopyIn(this.handle, page, slot, pfn, !write, k);
          if (rc === EEXIST && k === 1) Atomics.add(shared, STAT_FILL_RACED, 1);
          if (rc === 0 || rc === EAGAIN || k === 1) return rc === EEXIST ? 0 : rc;
          // The run crosses a vma boundary (mprotect split it: ENOENT) or part of it is there
          // already (EEXIST): fill it page by page, which each vma accepts.
          for (let i = 0; i < k; i++) {
            const one = native.regionCopyIn(this.handle, page + i, slot, pfn + i, !write);
            if (one === EEXIST) Atomics.add(shared, STAT_FILL_RACED, 1);
            else if (one !== 0) return one;
          }
          return 0;
        }, 'ioctl(UFFDIO_COPY)', `migrating ${pageSpan(page, k)} back to system memory`);
      } catch (e) {
        for (let i = 0; i < k; i++) this.#release(page + i, s);
        throw e;
      }
      // Someone may have zapped these pages meanwhile, and the kernel's zap may have come before
      // our fill: then the bytes we put back must go again, and the pages end up none.
      this.#settleZaps();
      this.#forRuns(page, k, (i) => (Atomics.load(shared, stateIndex(page + i)) & (ZAP_PENDING | UNMAPPED)) === ZAP_PENDING, (a, n) =>
        this.#zapLocked(a, n),
      );
      for (let i = 0; i < k; i++) {
        shared[stateIndex(page + i) + 1] = 0;
        this.#publish(page + i, KIND_PRESENT | (write ? WRITE : 0));
        device.putPage(pfn + i);
      }
      Atomics.add(shared, STAT_MIGRATED_BACK, k);
      Atomics.add(device.shared, DEV_MIGRATED_TO_RAM, k);
      // Threads that faulted on these pages while they were locked resume only now, on published state.
      native.regionWake(this.handle, page, k);
      moved += k;
      page += k;
    }
    return moved;
  }


  /**
   * MADV_DONTNEED over pages this thread holds locked. The kernel reports it to the servicer as an
   * EVENT_REMOVE, which must not be mistaken for someone else's zap once the pages are unlocked:
   * each page is flagged ZAPPING, and the lock is kept until the servicer has seen the event and
   * cleared the flag.
   */
  #zapLocked(first: number, count: number, free = false): void {
    const shared = this.shared;
    if (this.#zapEvents) for (let p = first; p < first + count; p++) Atomics.or(shared, stateIndex(p), ZAPPING);
    const rc = native.regionDiscard(this.handle, first, count, free);
    if (rc !== 0) {
      // No event will come to clear the marks.
      if (this.#zapEvents) for (let p = first; p < first + count; p++) Atomics.and(shared, stateIndex(p), ~ZAPPING);
      if (free) check(rc, 'madvise(MADV_FREE)', `freeing ${pageSpan(first, count)}`, 'MADV_FREE takes private anonymous memory only; discard without { free } instead');
      else check(rc, 'madvise(MADV_DONTNEED)', `zapping ${pageSpan(first, count)}`);
    }
    if (!this.#zapEvents) return;
    const deadline = Date.now() + LOCK_DEADLINE_MS;
    for (let p = first, spins = 0; p < first + count; ) {
      if ((Atomics.load(shared, stateIndex(p)) & ZAPPING) === 0) {
        p++;
        continue;
      }
      if (++spins < 256) continue;
      if (Date.now() > deadline) {
        for (let q = p; q < first + count; q++) Atomics.and(shared, stateIndex(q), ~ZAPPING);
        throw new UffdHmmError(
          'ERR_SERVICER_STALLED',
          `the servicer did not see our own MADV_DONTNEED of page ${p} within ${LOCK_DEADLINE_MS} ms: it is stuck, ` +
            'probably in a driver fault hook that does not return; fix the hook, or keep configureServicers({ stallDeadlineMs }) ' +
            `below ${LOCK_DEADLINE_MS} ms (the default 5000 is) so that a native guard takes over a stuck servicer`,
        );
      }
      const seq = Atomics.load(shared, UNLOCK_SEQ);
      if ((Atomics.load(shared, stateIndex(p)) & ZAPPING) !== 0) Atomics.wait(shared, UNLOCK_SEQ, seq, 0.05);
    }
  }

  /** The snapshot flag of a huge mapping's level (hmm_vma_walk_hugetlb_entry), 0 otherwise. */
  #hugeLevel(): number {
    if (this.mapping !== 'private-hugetlb' && this.mapping !== 'shared-hugetlb') return 0;
    return hugePageSize() >= 1 << 30 ? HMM_DMIRROR_PROT_PUD : HMM_DMIRROR_PROT_PMD;
  }

  /**
   * Whether `page` (a HUGE device entry) is still part of a whole huge entry: every entry of its
   * PMD-aligned block alike, naming the pfns of one aligned huge device page. Otherwise it was
   * split (partly discarded, protected or faulted back) into PTE-level entries. Cached per block.
   */
  #hugeEntryAt(page: number, seen: Map<number, boolean>): boolean {
    const n = PMD_SIZE / PAGE_SIZE;
    const first = pmdBlockStart(this.#address, page);
    let whole = seen.get(first);
    if (whole === undefined) {
      const shared = this.shared;
      const s0 = Atomics.load(shared, stateIndex(first)) & ~LOCKED;
      const pfn0 = shared[stateIndex(first) + 1];
      whole = first >= 0 && first + n <= this.pages && (s0 & HUGE) !== 0 && pfn0 % n === 0;
      for (let i = 1; i < n && whole; i++) {
        whole = (Atomics.load(shared, stateIndex(first + i)) & ~LOCKED) === s0 && shared[stateIndex(first + i) + 1] === pfn0 + i;
      }
      seen.set(first, whole);
    }
    return whole;
  }

  /**
   * Waits until the servicer has applied the REMOVE/UNMAP events of every batch of messages it
   * read before now, so that a zap by someone else of a page we hold locked has been marked
   * ZAP_PENDING by the time we publish the page. Cheap when nothing is in flight (three loads); on
   * a stuck servicer it gives up after the page-lock deadline and publishes as before.
   */
  #settleZaps(): void {
    if (!this.#zapEvents) return;
    const s = this.shared;
    let target: number | undefined;
    let deadline = 0;
    for (let spins = 0; ; spins++) {
      if (target === undefined && Atomics.load(s, ZAP_READING) === 0) target = Atomics.load(s, ZAP_BATCHES_READ);
      if (target !== undefined && ((Atomics.load(s, ZAP_BATCHES_DONE) - target) | 0) >= 0) return;
      if (spins < 64) continue;
      if (deadline === 0) deadline = Date.now() + LOCK_DEADLINE_MS;
      else if (Date.now() > deadline) return;
      Atomics.wait(nap, 0, 0, 0.05);
    }
  }

  /**
   * Unlocks a page we hold with its new state, unless someone zapped it meanwhile (ZAP_PENDING):
   * then it becomes none (unmapped if it was munmapped), as the zap leaves it, and this returns
   * false so that the caller drops what the page held.
   */
  #publish(page: number, next: number): boolean {
    const shared = this.shared;
    const idx = stateIndex(page);
    for (;;) {
      const cur = Atomics.load(shared, idx);
      const zapped = (cur & ZAP_PENDING) !== 0;
      if (zapped) shared[idx + 1] = 0;
      if (Atomics.compareExchange(shared, idx, cur, (zapped ? KIND_NONE | (cur & UNMAPPED) : next) & ~LOCKED) !== cur) continue;
      Atomics.add(shared, UNLOCK_SEQ, 1);
      Atomics.notify(shared, UNLOCK_SEQ);
      return !zapped;
    }
  }

  /** Unlocks a page we hold unchanged; if someone zapped it meanwhile, drops its device page. */
  #release(page: number, s: number): void {
    const pfn = this.shared[stateIndex(page) + 1];
    if (!this.#publish(page, s) && (s & KIND_MASK) === KIND_DEVICE) deviceBySlot((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT)!.putPage(pfn);
  }

  /** fork and remap wait for userfaultfd events, which an unregistered (hugetlb) region never gets. */
  #refuseHugetlb(what: string): void {
    if (this.mapping === 'private-hugetlb' || this.mapping === 'shared-hugetlb') {
      throw new UffdHmmError(
        'ERR_BACKING_UNSUPPORTED',
        `${what} needs userfaultfd events, and a hugetlb region is not registered (no device entry can exist in it); use an anonymous region`,
      );
    }
  }

  /** Whole huge pages only, as the kernel requires of madvise and mprotect on hugetlb vmas. */
  #checkHugeAligned(what: string, f: number, c: number): void {
    if (this.mapping !== 'private-hugetlb' && this.mapping !== 'shared-hugetlb') return;
    const huge = hugePageSize() / PAGE_SIZE;
    if (f % huge !== 0 || c % huge !== 0) {
      throw outOfRange(`${what} range`, `whole huge pages (first and count multiples of ${huge}) on a hugetlb region`, `${f}+${c}`);
    }
  }

  /**
   * Calls a native operation until it stops failing with EAGAIN. EAGAIN means the mm is changing:
   * an event (REMOVE, UNMAP, REMAP, FORK) waits to be read, and the kernel refuses every fill until
   * the servicer has read it, however often we ask. That lasts as long as the servicer is busy (a
   * slow driver hook, a loaded machine), so wait for it by time, with the deadline of a locked page,
   * napping between tries; counting tries gave up after ~100 ms of a busy servicer.
   */
  #retry(op: () => number, syscall: string, context: string): void {
    let deadline = 0;
    for (let i = 0; ; i++) {
      const rc = op();
      if (rc !== EAGAIN) return check(rc, syscall, context);
      Atomics.add(this.shared, STAT_FILL_RETRIES, 1);
      if (i < 64) continue;
      if (deadline === 0) deadline = Date.now() + LOCK_DEADLINE_MS;
      else if (Date.now() > deadline) {
        check(
          rc,
          syscall,
          `${context}; the mm kept changing for over ${LOCK_DEADLINE_MS} ms`,
          'the servicer left a userfaultfd event unread (a hung driver hook?); fix the hook or retry the call',
        );
      }
      Atomics.wait(nap, 0, 0, 0.05);
    }
  }

  /** Calls fn(start, length) for each maximal run of pages [f+i] where pred(i) holds. */
  #forRuns(f: number, n: number, pred: (i: number) => boolean, fn: (start: number, length: number) => void): void {
    let i = 0;
    while (i < n) {
      if (!pred(i)) {
        i++;
        continue;
      }
      let j = i;
      while (j < n && pred(j)) j++;
      fn(f + i, j - i);
      i = j;
    }
  }

  #protOf(page: number): number {
    return this.#prot === undefined ? PROT_READWRITE : this.#prot[page];
  }

  #checkOpen(): void {
    if (this.#closed || this.#closing) throw regionClosed();
  }
}

interface Backing {
  mapping: RegionMapping;
  shared: boolean;
  fd: number;
  offset: number;
  hugetlb: boolean;
  thp: boolean;
}

/** Validates MapOptions.shared and .file; the file's type and length are checked by the addon. */
function mapBacking(options: MapOptions, pages: number, servicer: ServicerKind): Backing {
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

let hugePageBytes: number | undefined;
/** The default huge page size in bytes (/proc/meminfo Hugepagesize), as MAP_HUGETLB uses it. */
export function hugePageSize(): number {
  if (hugePageBytes === undefined) {
    const m = /^Hugepagesize:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    hugePageBytes = m ? Number(m[1]) * 1024 : 2 << 20;
  }
  return hugePageBytes;
}

/** The first page of the PMD-aligned block that holds `page` (it may lie before the region). */
function pmdBlockStart(address: bigint, page: number): number {
  const n = PMD_SIZE / PAGE_SIZE;
  return page - ((Number((address / BigInt(PAGE_SIZE)) % BigInt(n)) + page) % n);
}

let kpageflags: number | undefined;
const KPF_THP = 1n << 22n;
const PFN_MASK = (1n << 55n) - 1n;

/**
 * First pages of the PMD-aligned blocks inside [f, f+c) that one THP backs whole: all present,
 * consecutive frames from an aligned head that /proc/kpageflags marks KPF_THP. Empty without
 * CAP_SYS_ADMIN (pagemap hides frames, kpageflags is root's).
 */
function thpBlocks(handle: number, address: bigint, f: number, c: number): number[] {
  const n = PMD_SIZE / PAGE_SIZE;
  const out: number[] = [];
  let b = pmdBlockStart(address, f);
  if (b < f) b += n;
  if (b + n > f + c) return out;
  if (kpageflags === undefined) {
    try {
      kpageflags = openSync('/proc/kpageflags', 'r');
    } catch {
      kpageflags = -1;
    }
  }
  if (kpageflags < 0) return out;
  const pm = new BigUint64Array(n);
  const flags = new BigUint64Array(1);
  for (; b + n <= f + c; b += n) {
    native.regionPagemap(handle, b, n, pm);
    const head = pm[0] & PFN_MASK;
    if ((pm[0] & PM_PRESENT) === 0n || head === 0n || head % BigInt(n) !== 0n) continue;
    let i = 1;
    while (i < n && (pm[i] & PM_PRESENT) !== 0n && (pm[i] & PFN_MASK) === head + BigInt(i)) i++;
    if (i < n) continue;
    if (readSync(kpageflags, new Uint8Array(flags.buffer), 0, 8, Number(head) * 8) !== 8) continue;
    if ((flags[0] & KPF_THP) !== 0n) out.push(b);
  }
  return out;
}

/** Nothing ever notifies it: Atomics.wait on it is a short sleep. */
const nap = new Int32Array(new SharedArrayBuffer(4));

/** "page 3" or "pages 3..9", for error contexts. */
function pageSpan(first: number, count: number): string {
  return count === 1 ? `page ${first}` : `pages ${first}..${first + count - 1}`;
}

let zeroPfnCache: bigint | undefined;
/** The shared zero page's frame (0n when pagemap hides frames, i.e. without CAP_SYS_ADMIN). */
function zeroPagePfn(): bigint {
  if (zeroPfnCache !== undefined) return zeroPfnCache;
  zeroPfnCache = 0n;
  try {
    const probeRegion = native.regionCreate({
      pages: 1,
      shared: new Int32Array(new SharedArrayBuffer((REGION_HEADER + 2) * 4)),
      servicer: 'native',
      allowUserModeOnly: true,
    });
    try {
      void new Uint8Array(probeRegion.bytes)[0]; // the native servicer maps the zero page
      const pm = new BigUint64Array(1);
      native.regionPagemap(probeRegion.handle, 0, 1, pm);
      if ((pm[0] & PM_PRESENT) !== 0n) zeroPfnCache = pm[0] & ((1n << 55n) - 1n);
    } finally {
      native.detachArrayBuffer(probeRegion.bytes);
      native.regionClose(probeRegion.handle);
    }
  } catch {
    zeroPfnCache = 0n;
  }
  return zeroPfnCache;
}

function readSmaps(address: bigint): { rss: number; anonymous: number; swap: number } {
  const text = readFileSync('/proc/self/smaps', 'utf8');
  const start = address.toString(16).padStart(8, '0');
  const at = text.search(new RegExp(`^0*${start.replace(/^0+/, '')}-`, 'm'));
  if (at < 0) {
    throw new UffdHmmError(
      'ERR_SMAPS',
      `region.smaps() found no /proc/self/smaps entry starting at the region's address 0x${start}: its first page was ` +
        'unmapped behind the library (munmap); use region.pagemap() or region.entry(), which work page by page',
    );
  }
  const next = text.slice(at).search(/\n[0-9a-f]+-[0-9a-f]+ /);
  const block = next < 0 ? text.slice(at) : text.slice(at, at + next + 1);
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(block);
    return m ? Number(m[1]) * 1024 : 0;
  };
  return { rss: field('Rss'), anonymous: field('Anonymous'), swap: field('Swap') };
}
