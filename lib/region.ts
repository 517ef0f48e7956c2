// A Region: real anonymous memory under userfaultfd, the emulated vma. A facade: each concern
// lives in lib/mm/ (or lib/fork.ts), in a file named for its kernel twin, and works on RegionCore.
/// <reference types="node" preserve="true" />
import { EventEmitter } from 'node:events';
import { inspect } from 'node:util';

import { native, PAGE_SIZE } from './native.js';
import { regionClosed } from './errors.js';
import type { Device, DeviceHolder } from './device.js';
import { fork, type ChildResult, type ChildStep } from './fork.js';
import { FaultTrace } from './trace.js';
import type { InspectOptionsStylized } from './inspect.js';
import { mapRequest, type MapOptions, type MapRequest, type RegionMapping, type ServicerKind } from './mm/backing.js';
import { evictDevice, migrateToDevice, migrateToRam, type MigrateOptions } from './mm/migrate.js';
import { entry, pagemap, regionStats, servicerStats, showRegion, smaps, snapshot, type Entry, type RegionStats, type ServicerStats } from './mm/proc.js';
import { discard, type DiscardOptions } from './mm/zap.js';
import { attach, mapMemory, munmap, newCore, startTrace, zapMapping } from './mm/mmap.js';
import { mprotect } from './mm/mprotect.js';
import { remap } from './mm/mremap.js';
import { collapse } from './mm/huge.js';
import type { RegionCore } from './mm/vma.js';

export { MAX_FAULT_AROUND, MAX_REGION_PAGES, type FileBacking, type MapOptions, type RegionMapping, type ServicerKind } from './mm/backing.js';
export type { MigrateOptions } from './mm/migrate.js';
export type { DiscardOptions } from './mm/zap.js';
export { hugePageSize } from './mm/huge.js';
export { HMM_DMIRROR_PROT_ERROR, HMM_DMIRROR_PROT_NONE, HMM_DMIRROR_PROT_READ, HMM_DMIRROR_PROT_WRITE, HMM_DMIRROR_PROT_PMD, HMM_DMIRROR_PROT_PUD } from './mm/proc.js';
export { HMM_DMIRROR_PROT_ZERO, HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL, HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE, PM_PRESENT, PM_SWAP, PM_FILE, PM_UFFD_WP } from './mm/proc.js';
export { PM_MMAP_EXCLUSIVE, PM_SOFT_DIRTY, type Entry, type RegionStats, type ServicerStats } from './mm/proc.js';

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
    return new Region(mapRequest(options));
  }

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
  /**
   * The region's userfaultfd is user-mode only (UFFD_USER_MODE_ONLY, the most an unprivileged
   * process may get): CPU touches are served, but a system call that touches a device-resident
   * page (`write(2)` from it, `read(2)` into it) fails with `EFAULT`, and the mirror READ/WRITE
   * functions throw `ERR_SERVICER_UNSUPPORTED`. See {@link Probe.userModeOnly}.
   */
  readonly userModeOnly: boolean;
  readonly #core: RegionCore;
  #closing: Promise<void> | undefined;
  #closeCalled = false;
  #closed = false;
  #guarded = false;

  private constructor(req: MapRequest) {
    super();
    this.servicer = req.servicer;
    this.faultAround = req.faultAround;
    this.mapping = req.backing.mapping;
    this.thp = req.backing.thp;
    this.#core = newCore(this, req);
    const nat = mapMemory(this.#core, req);
    this.handle = nat.handle;
    this.userModeOnly = nat.userModeOnly;
    attach(this.#core, nat);
  }

  /** @internal Region header and page table, shared with the servicer (replaced by remap). */
  get shared(): Int32Array {
    return this.#core.shared;
  }
  /** The mapping's start address (the vma's `vm_start`); changes with {@link Region#remap}. */
  get address(): bigint {
    return this.#core.address;
  }
  /** Size in pages (changes with remap). */
  get pages(): number {
    return this.#core.pages;
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
    return this.#core.bytes;
  }
  /**
   * True once {@link Region#close} has unmapped the region; the methods that read or move pages
   * throw `ERR_REGION_CLOSED` from the call of close() on (even one that failed and is retried).
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
    return showRegion(this.#core, this.#closed, depth, options);
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
   * `device` is not a Device; a SystemError naming the call if the kernel refuses (nothing moved,
   * but pages whose CPU copy the migration had already freed: those are on `device`).
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
    const core = this.#open();
    const trace = core.trace;
    if (trace === undefined) return migrateToDevice(core, first, count, device, options);
    const t0 = FaultTrace.now();
    const moved = migrateToDevice(core, first, count, device, options);
    trace.mark('migrate', t0, FaultTrace.now(), { first, count, moved, device: device.name });
    return moved;
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
    const core = this.#open();
    const trace = core.trace;
    if (trace === undefined) return migrateToRam(core, first, count);
    const t0 = FaultTrace.now();
    const back = migrateToRam(core, first, count);
    trace.mark('migrateToRam', t0, FaultTrace.now(), { first, count, back });
    return back;
  }
  /**
   * The page's entry, read from the table the servicers share: where its data is now. Reading it
   * never faults or moves the page.
   *
   * @param page - page index, 0 to pages − 1.
   * @throws `ERR_REGION_CLOSED`; `RangeError` (`ERR_OUT_OF_RANGE`) for a page outside the region.
   */
  entry(page: number): Entry {
    return entry(this.#open(), page);
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
   * @throws `ERR_REGION_CLOSED`; `ERR_DEVICE_CLOSED` when `device` is closed (its slot may belong
   * to a newer device); `RangeError` (`ERR_OUT_OF_RANGE`) for a range outside the region;
   * `TypeError` when `device` is not a Device.
   */
  snapshot(first = 0, count?: number, device?: Device): Uint8Array {
    return snapshot(this.#open(), first, count, device);
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
    return pagemap(this.#open(), first, count);
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
    return smaps(this.#open());
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
    mprotect(this.#open(), first, count, prot);
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
    discard(this.#open(), first, count, options);
  }
  /**
   * MADV_COLLAPSE over the range: each PMD of it that is fully populated becomes a THP, which a
   * later `migrate` moves whole into one huge device page. Needs MapOptions.thp (else EINVAL, as
   * for a MADV_NOHUGEPAGE vma); the kernel refuses a PMD with missing, device or write-protected
   * pages (EAGAIN/EINVAL, as madvise(2) says). The bytes do not change.
   */
  collapse(first: number, count: number): void {
    collapse(this.#open(), first, count);
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
    return fork(this.#open(), steps, options);
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
   * `ERR_REGION_CLOSED`; `RangeError` (`ERR_OUT_OF_RANGE`); a SystemError (`mremap`): `EFAULT`,
   * as the kernel's, when mprotect split the pages it would keep into several vmas.
   */
  remap(pages: number): void {
    remap(this.#open(), pages);
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
    return startTrace(this.#open(), options);
  }
  /** A snapshot of this region's fault counters; still readable after close. */
  stats(): RegionStats {
    return regionStats(this.shared);
  }
  /**
   * How its servicer served it: JS entries of the worker servicer (0 per fault while no driver's
   * fault hook decides), and fills tried again or found done already. Still readable after close.
   */
  servicerStats(): ServicerStats {
    return servicerStats(this.shared);
  }
  /**
   * munmap: device pages this region held are freed (pageFree), `bytes` is detached, the mapping
   * goes away. Threads still touching the region see plain memory, then a SIGSEGV once unmapped.
   * Nothing is migrated back: the region's data is gone. Calling it again while it runs returns
   * the same promise; methods that read or move pages throw `ERR_REGION_CLOSED` from the first
   * call on. Rejects with `ERR_PAGE_LOCK_TIMEOUT` when a page stayed locked past the deadline (a
   * slow driver hook): nothing was freed, faults are still served; call it again later.
   */
  close(): Promise<void> {
    this.#closeCalled = true;
    return (this.#closing ??= Promise.resolve().then(() => this.#teardown()).catch((e: unknown) => {
      this.#closing = undefined; // a later call tries again
      throw e;
    }));
  }

  /** @internal Device removal: bring back every page held on `device`. */
  evictDevice(device: Device): void {
    if (!this.#closed) evictDevice(this.#core, device);
  }
  /** @internal Servicer failures land here. */
  reportError(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
    else process.emitWarning(err);
  }
  /** @internal The worker servicer died; a native guard (native/guard.cc: its poller's watchdog, or a thread of its own) serves this region now. */
  servicerTakenOver(): void {
    this.#core.servicerHost = undefined;
    this.#guarded = true;
  }
  /** True once a native guard took over from a failed worker servicer (default policy only). */
  get guarded(): boolean {
    // The native side may have taken over while this thread was blocked and saw no 'exit' event yet.
    return this.#guarded || (!this.#closed && native.regionGuarded(this.handle));
  }

  #teardown(): void {
    if (this.#closed) return;
    zapMapping(this.#core);
    this.#closed = true;
    munmap(this.#core);
  }
  /** The region's core for a method that reads or moves pages, or ERR_REGION_CLOSED. */
  #open(): RegionCore {
    if (this.#closed || this.#closeCalled) throw regionClosed();
    return this.#core;
  }
}
