// A Region: real anonymous memory under userfaultfd, the emulated vma. It owns the page table
// (the device entries) in shared memory and performs the main-thread side of every migration.
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';

import { native, PAGE_SIZE, type NativeRegion } from './native.js';
import { UffdHmmError, check, deviceClosed, invalidType, invalidValue, regionClosed } from './errors.js';
import { integer, optionalBoolean, optionsObject, pageRange } from './validate.js';
import {
  DEVICE_SHIFT,
  DEV_MIGRATED_TO_DEVICE,
  DEV_MIGRATED_TO_RAM,
  KIND_DEVICE,
  KIND_MASK,
  KIND_NONE,
  KIND_POISON,
  KIND_PRESENT,
  LOCKED,
  MAX_DEVICE_SLOT,
  REGION_HEADER,
  STAT_FAULTS,
  STAT_KERNEL_FAULTS,
  STAT_MIGRATED_BACK,
  STAT_WP_FAULTS,
  STAT_WRITE_FAULTS,
  UNLOCK_SEQ,
  UNMAPPED,
  WRITE,
  ZAPPING,
  stateIndex,
} from './layout.js';
import { LOCK_DEADLINE_MS, lockPage, unlockPage } from './pagelock.js';
import { Device, deviceBySlot, type DeviceHolder } from './device.js';
import { SWP_HWPOISON, makeDeviceEntry } from './entry.js';
import { FIX_PRIVILEGE, probe } from './probe.js';
import { encodeSteps, forkRegion, type ChildResult, type ChildStep } from './fork.js';
import { FaultTrace } from './trace.js';
import { WorkerServicer } from './servicer/host.js';

export type ServicerKind = 'worker' | 'native' | 'inline';

export interface MapOptions {
  /** Size in pages. */
  pages: number;
  /** Who serves the faults: 'worker' (default, TypeScript in a worker_thread) or 'native' (a C++ thread, default policy only). */
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
}

export type Entry =
  | { kind: 'none' }
  | { kind: 'present'; write: boolean }
  | { kind: 'device'; write: boolean; device: Device; pfn: number }
  | { kind: 'poison' };

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

export interface MigrateOptions {
  /** Force write (true) or read (false) device entries; default: as the page was mapped. */
  write?: boolean;
}

/** HMM_DMIRROR_PROT_* flags of lib/test_hmm_uapi.h, one per page in a snapshot. */
export const HMM_DMIRROR_PROT_ERROR = 0xff;
export const HMM_DMIRROR_PROT_NONE = 0x00;
export const HMM_DMIRROR_PROT_READ = 0x01;
export const HMM_DMIRROR_PROT_WRITE = 0x02;
export const HMM_DMIRROR_PROT_PMD = 0x04;
export const HMM_DMIRROR_PROT_PUD = 0x08;
export const HMM_DMIRROR_PROT_ZERO = 0x10;
export const HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL = 0x20;
export const HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE = 0x30;

/** /proc/PID/pagemap bits. */
export const PM_PRESENT = 1n << 63n;
export const PM_SWAP = 1n << 62n;
export const PM_FILE = 1n << 61n;
export const PM_UFFD_WP = 1n << 57n;
export const PM_MMAP_EXCLUSIVE = 1n << 56n;
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
  // Without a problem, the probe (run at startup) saw userfaultfd available: the refusal is news to it.
  const err = new UffdHmmError(
    'ERR_UFFD_UNAVAILABLE',
    `userfaultfd is unavailable: ${p.problem ?? `opening a userfaultfd was refused (${(cause as { code?: string } | undefined)?.code ?? 'unknown reason'})`}. ` +
      `Fix: ${p.fix ?? FIX_PRIVILEGE}.`,
    { cause },
  );
  if (cause && typeof cause === 'object') {
    const c = cause as { errno?: number; syscall?: string };
    if (c.errno !== undefined) Object.assign(err, { errno: c.errno, syscall: c.syscall });
  }
  return err;
}

export class Region extends EventEmitter implements DeviceHolder {
  /** Maps a new region; faults on it are served by the chosen servicer. */
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
    // Our own zaps come back as EVENT_REMOVE (see #zapLocked) on regions whose servicer reads events.
    const zapEvents = servicer !== 'inline' && p.features.eventRemove;
    return new Region(pages, servicer, faultAround, countKernelFaults, zapEvents);
  }

  #pages: number;
  readonly pageSize = PAGE_SIZE;
  readonly servicer: ServicerKind;
  readonly faultAround: number;
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
  readonly userModeOnly: boolean;
  #servicerHost: WorkerServicer | undefined;
  #guarded = false;
  #trace: FaultTrace | undefined;
  /** The kernel reports our own zaps as EVENT_REMOVE (see #zapLocked). */
  readonly #zapEvents: boolean;

  private constructor(pages: number, servicer: ServicerKind, faultAround: number, countKernelFaults: boolean, zapEvents: boolean) {
    super();
    this.#pages = pages;
    this.servicer = servicer;
    this.faultAround = faultAround;
    this.shared = new Int32Array(new SharedArrayBuffer((REGION_HEADER + 2 * pages) * 4));
    let nat: NativeRegion;
    try {
      nat = native.regionCreate(pages, this.shared, servicer, true, countKernelFaults, faultAround);
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

  get address(): bigint {
    return this.#address;
  }

  /** Size in pages (changes with remap). */
  get pages(): number {
    return this.#pages;
  }

  get length(): number {
    return this.pages * this.pageSize;
  }

  /** The real memory. Touching a device-resident page faults and is served. Length 0 after close(). */
  get bytes(): Uint8Array {
    return this.#bytes;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Migrates pages to `device` (migrate_vma): each page's contents move to a new device page and the
   * CPU page is freed, leaving a device entry — a write entry if the page was writable, else a
   * read entry. Holes migrate as zeroed device pages; pages on another device move device to
   * device. Best effort: returns how many pages of the range are on `device` afterwards.
   */
  migrate(first: number, count: number, device: Device, options?: MigrateOptions): number {
    this.#checkOpen();
    const [f, c] = pageRange(first, count, this.pages);
    if (!(device instanceof Device)) throw invalidType('device', 'a Device', device);
    if (device.closed) throw deviceClosed(device.name);
    const opts = optionsObject('options', options);
    const forceWrite = optionalBoolean('options.write', opts.write);
    if (c === 0) return 0;
    this.#servicerHost?.ensureDevice(device);
    this.#devices.add(device);
    device.addHolder(this);

    const shared = this.shared;
    const pfns = new Int32Array(c).fill(-1); // new device page per page, -1 = not moving
    const old = new Int32Array(c); // state word before the lock
    let locked = 0; // pages [f, f+locked) are locked
    let onDevice = 0;
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
        const pfn = device.allocPage();
        if (pfn < 0) {
          // The device is full: this page and the rest stay where they are.
          unlockPage(shared, page, s);
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
    } catch (e) {
      for (let i = 0; i < locked; i++) {
        if (pfns[i] >= 0) device.putPage(pfns[i]);
        unlockPage(shared, f + i, old[i]);
      }
      throw e;
    }
    let moved = 0;
    for (let i = 0; i < locked; i++) {
      const page = f + i;
      const s = old[i];
      const kind = s & KIND_MASK;
      if (pfns[i] < 0) {
        // Already on this device: only a forced read downgrades it (make_device_entry_read).
        unlockPage(shared, page, kind === KIND_DEVICE && forceWrite === false ? s & ~WRITE : s);
        continue;
      }
      // As the pte was: writable only if the vma allows writes and the page was writable.
      const writable = (this.#protOf(page) & PROT_WRITE) !== 0;
      const write = forceWrite ?? (writable && (kind === KIND_NONE || (s & WRITE) !== 0));
      shared[stateIndex(page) + 1] = pfns[i];
      unlockPage(shared, page, KIND_DEVICE | (write ? WRITE : 0) | (device.slot << DEVICE_SHIFT));
      moved++;
    }
    Atomics.add(device.shared, DEV_MIGRATED_TO_DEVICE, moved);
    return onDevice + moved;
  }

  /** Migrates device-resident pages of the range back to system memory; returns how many moved. */
  migrateToRam(first: number, count: number): number {
    this.#checkOpen();
    const [f, c] = pageRange(first, count, this.pages);
    return this.#migrateBack(f, c, undefined);
  }

  /** The page's entry, read from the table the servicers share. */
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
      default:
        return { kind: 'none' };
    }
  }

  /**
   * One HMM_DMIRROR_PROT_* byte per page, as dmirror's snapshot ioctl reports: a device page is
   * LOCAL on `device` (or on any device when none is given) and REMOTE on another.
   */
  snapshot(first = 0, count?: number, device?: Device): Uint8Array {
    this.#checkOpen();
    const [f, c] = pageRange(first, count ?? this.pages - (typeof first === 'number' ? first : 0), this.pages);
    if (device !== undefined && !(device instanceof Device)) throw invalidType('device', 'a Device', device);
    const out = new Uint8Array(c);
    const pm = new BigUint64Array(c);
    if (c > 0) native.regionPagemap(this.handle, f, c, pm);
    const zeroPfn = zeroPagePfn();
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
        default:
          out[i] = HMM_DMIRROR_PROT_NONE;
      }
    }
    return out;
  }

  /**
   * The /proc/self/pagemap words of the range, with device entries shown as the kernel shows
   * them: PM_SWAP | swp_type | swp_offset << 5, exclusive when mapped once.
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

  /** Rss/Anonymous/Swap of this mapping from /proc/self/smaps, device pages counted as resident. */
  smaps(): { rss: number; anonymous: number; swap: number; device: number } {
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
   * the page comes back write-protected and its next write faults again.
   */
  mprotect(first: number, count: number, prot: 'none' | 'read' | 'readwrite'): void {
    this.#checkOpen();
    const [f, c] = pageRange(first, count, this.pages);
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
      for (let i = 0; i < c; i++) unlockPage(this.shared, f + i, old[i]);
    }
  }

  /**
   * MADV_DONTNEED over the range (zap_pte_range): device entries drop their reference (the device
   * page is freed, through pageFree, when it was the last), CPU pages are freed, all read as zero.
   */
  discard(first: number, count: number): void {
    this.#checkOpen();
    const [f, c] = pageRange(first, count, this.pages);
    if (c === 0) return;
    const old = new Int32Array(c);
    for (let i = 0; i < c; i++) old[i] = lockPage(this.shared, f + i);
    try {
      // madvise only what is still mapped: pages someone munmapped have nothing left to zap.
      this.#forRuns(f, c, (i) => (old[i] & UNMAPPED) === 0, (a, n) =>
        this.#zapLocked(a, n),
      );
    } finally {
      for (let i = 0; i < c; i++) {
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
   * Forks a child process that runs `steps` in native code (a forked Node process cannot run JS)
   * and reports the results. Device pages become shared with the child (copy_one_pte): their
   * refcount goes up and write entries turn into read entries in both processes. The child's
   * faults arrive on its own userfaultfd (EVENT_FORK) and are served here from the same device
   * pages; a page migrated back in either process comes back for both, write-protected, so the
   * first writer gets its own copy and the other keeps the old bytes.
   */
  async fork(steps: ChildStep[], options?: { timeoutMs?: number }): Promise<ChildResult> {
    this.#checkOpen();
    if (this.servicer === 'inline') {
      throw new UffdHmmError(
        'ERR_SERVICER_UNSUPPORTED',
        "region.fork needs EVENT_FORK, which the 'inline' servicer cannot read; map the region with servicer 'worker' or 'native' to fork it",
      );
    }
    const opts = optionsObject('options', options);
    const timeoutMs = opts.timeoutMs === undefined ? 30_000 : integer('options.timeoutMs', opts.timeoutMs, 1, 600_000);
    return forkRegion(this.handle, this.shared, this.pages, encodeSteps(steps, this.pages, this.pageSize), timeoutMs);
  }

  /**
   * mremap(MREMAP_MAYMOVE) to `pages` pages: the mapping moves to a new address, device entries and
   * data follow it (the kernel moves the page tables; our table moves with them on EVENT_REMAP).
   * The old `bytes` view is detached and a new one is given; `address` changes. Shrinking drops
   * the device references of the pages cut off, as munmap of the tail would.
   */
  remap(pages: number): void {
    this.#checkOpen();
    const newPages = integer('pages', pages, 1, MAX_REGION_PAGES);
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
   * one stops the previous.
   */
  trace(options?: { capacity?: number }): FaultTrace {
    this.#checkOpen();
    const opts = optionsObject('options', options);
    const capacity = opts.capacity === undefined ? 65536 : integer('options.capacity', opts.capacity, 1, 1 << 24);
    this.#trace?.stop();
    this.#trace = new FaultTrace(this.handle, capacity);
    return this.#trace;
  }

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
        unlockPage(shared, page, s);
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
          unlockPage(shared, page + k, sq);
          break;
        }
        k++;
      }
      try {
        this.#retry(() => {
          const rc = native.regionCopyIn(this.handle, page, slot, pfn, !write, k);
          if (rc === 0 || rc === EAGAIN || k === 1) return rc === EEXIST ? 0 : rc;
          // The run crosses a vma boundary (mprotect split it: ENOENT) or part of it is there
          // already (EEXIST): fill it page by page, which each vma accepts.
          for (let i = 0; i < k; i++) {
            const one = native.regionCopyIn(this.handle, page + i, slot, pfn + i, !write);
            if (one !== 0 && one !== EEXIST) return one;
          }
          return 0;
        }, 'ioctl(UFFDIO_COPY)', `migrating ${pageSpan(page, k)} back to system memory`);
      } catch (e) {
        for (let i = 0; i < k; i++) unlockPage(shared, page + i, s);
        throw e;
      }
      for (let i = 0; i < k; i++) {
        shared[stateIndex(page + i) + 1] = 0;
        unlockPage(shared, page + i, KIND_PRESENT | (write ? WRITE : 0));
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
  #zapLocked(first: number, count: number): void {
    const shared = this.shared;
    if (this.#zapEvents) for (let p = first; p < first + count; p++) Atomics.or(shared, stateIndex(p), ZAPPING);
    check(native.regionDiscard(this.handle, first, count), 'madvise(MADV_DONTNEED)', `zapping ${pageSpan(first, count)}`);
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

  /** Calls a native operation until it stops failing with EAGAIN (the mm is changing). */
  #retry(op: () => number, syscall: string, context: string): void {
    for (let i = 0; ; i++) {
      const rc = op();
      if (rc !== EAGAIN) return check(rc, syscall, context);
      if (i > 100_000) check(rc, syscall, `${context}, still EAGAIN after 100000 tries`, 'the address space kept changing under us; retry the call');
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
    const probeRegion = native.regionCreate(1, new Int32Array(new SharedArrayBuffer((REGION_HEADER + 2) * 4)), 'native', true);
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
