// An emulated device with its own memory: the struct dev_pagemap plus the dmirror driver of
// lib/test_hmm.c. Pages come from a free stack within `capacity`, each with a refcount.
/// <reference types="node" preserve="true" />
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { inspect } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { native, PAGE_SIZE } from './native.js';
import { UffdHmmError, check, deviceClosed, driverNotFound, invalidType, outOfRange, warnNow } from './errors.js';
import { integer, optionsObject } from './validate.js';
import {
  DEV_FAIL_ALLOC,
  DEV_FAULTS,
  DEV_FREED,
  DEV_FREE_TOP,
  DEV_FREED_LOGGED,
  DEV_ASK_FAULT,
  DEV_LOG_FREES,
  DEV_MIGRATED_TO_DEVICE,
  DEV_MIGRATED_TO_RAM,
  DEV_USED,
} from './layout.js';
import {
  allocDevicePage,
  allocHugeDevicePages,
  claimDevicePage,
  deviceSharedWords,
  devicePageRefcount,
  dropDevicePage,
  getDevicePage,
  initDevicePages,
  putDevicePage,
  wantsRelease,
} from './devicepages.js';
import { PageFrees } from './pagefree.js';
import { summary, type InspectOptionsStylized } from './inspect.js';

/** Options of `new` {@link Device}. */
export interface DeviceOptions {
  /** Shown in errors, snapshots and hook contexts (`ctx.deviceName`). Default `device<N>`. */
  name?: string;
  /**
   * Device memory in pages (of {@link PAGE_SIZE} bytes), 1 to {@link MAX_DEVICE_CAPACITY}.
   * Default 65536 (256 MiB of 4 KiB pages). The memory is reserved, not committed: a page costs
   * RAM only once something migrates into it, plus 8 bytes of bookkeeping per page up front.
   * Freed pages go back to the kernel in batches, all but the 1024 freed last (4 MiB), which the
   * next migrations reuse first: the memory a device holds follows {@link Device#used}.
   */
  capacity?: number;
  /**
   * An ES module exporting the driver hooks (see {@link Driver}): a URL (best:
   * `new URL('./driver.mjs', import.meta.url)`), a `file:` or other URL string, or a path, which
   * is resolved against `process.cwd()`, not against the calling module. The module is imported
   * lazily, by the worker servicer on the first fault it serves for this device and by the main
   * thread (for `pageFree`) at the first migration to it; a module that fails to load is reported
   * as `'error'` (`ERR_DRIVER_LOAD`) and the default policy applies.
   */
  driver?: string | URL;
}

/** Counters of {@link Device#stats}: they only go up, from 0 when the device was created. */
export interface DeviceStats {
  /** CPU faults on this device's entries that migrated a page back. */
  faults: number;
  /** Pages migrated to this device, from system memory or from another device. */
  migratedToDevice: number;
  /** Pages migrated back from this device to system memory: by faults, `migrateToRam` and eviction. */
  migratedToRam: number;
  /** Device pages freed (their last reference dropped). */
  freed: number;
}

/** The largest capacity a device may have: pfns live in 32-bit words. */
export const MAX_DEVICE_CAPACITY = 1 << 24;

/**
 * @internal What a device needs from the regions that hold its pages (to evict them on close),
 * without importing region.ts (which imports this file). Not exported from the package.
 */
export interface DeviceHolder {
  evictDevice(device: Device): void;
}

let nextName = 0;
/** How soon pageFree runs for a page that native code freed (the log is also drained before every allocation). */
const FREED_LOG_POLL_MS = 10;
let nextId = 1;
const bySlot = new Map<number, Device>();

/**
 * How often free device pages that nobody took since the last tick go back to the kernel, so that
 * RSS follows `used` within about two ticks while a page freed and taken again soon (a migration
 * round trip) keeps its memory and costs no first touch.
 */
const RELEASE_TICK_MS = 250;
let releaseTimer: NodeJS.Timeout | undefined;

function releaseTick(): void {
  for (const device of bySlot.values()) device.releaseIdle();
  if (bySlot.size === 0) {
    clearInterval(releaseTimer);
    releaseTimer = undefined;
  }
}

/** @internal The open device that owns `slot`. */
export function deviceBySlot(slot: number): Device | undefined {
  return bySlot.get(slot);
}

function driverUrl(driver: unknown): string | undefined {
  if (driver === undefined) return undefined;
  let url: string;
  if (driver instanceof URL) url = driver.href;
  else if (typeof driver !== 'string') throw invalidType('options.driver', 'a string or URL', driver);
  else if (/^[a-z][a-z0-9+.-]*:/i.test(driver) && !/^[a-z]:[\\/]/i.test(driver)) url = driver;
  else url = pathToFileURL(path.resolve(driver)).href;
  // A file that is not there fails now, naming where it was looked for, rather than at the first
  // fault or free; anything else wrong with the module is found when it is imported.
  if (url.startsWith('file:')) {
    const file = fileURLToPath(url);
    if (!existsSync(file)) throw new UffdHmmError('ERR_DRIVER_LOAD', driverNotFound(String(driver), file));
  }
  return url;
}

/**
 * An emulated device with its own memory: the kernel's `struct dev_pagemap` of device-private
 * pages plus the dmirror driver of lib/test_hmm.c. Its memory is `capacity` pages, addressed by
 * pfn (0 to capacity − 1); each page has a refcount (the page-table entries that name it) and goes
 * back to the free list when the last goes, calling the driver's `pageFree`. Pages get here
 * through {@link Region#migrate}, and leave by a CPU fault, {@link Region#migrateToRam}, a
 * discard or unmap of the region, or {@link Device#close}.
 *
 * The device computes on its pages with {@link Device#read} and {@link Device#write} (what a
 * GPU kernel would do); the CPU sees the result after the page migrates back.
 *
 * Events: `'error'` (an `Error` with code `ERR_DRIVER_HOOK` or `ERR_DRIVER_LOAD`: the driver hook
 * threw or would not load; the fault was still served, and without a listener the error becomes
 * a process warning) and `'close'` (after {@link Device#close} evicted everything).
 *
 * @example
 * ```ts
 * import { Device, Region } from 'uffd-hmm';
 *
 * const gpu = new Device({ name: 'gpu0', capacity: 1024 });     // 1024 pages of device memory
 * const region = Region.map({ pages: 16 });
 * region.bytes.fill(7);
 * region.migrate(0, 16, gpu);                                   // 16 device pages in use
 * const e = region.entry(3);                                    // { kind: 'device', pfn, … }
 * if (e.kind === 'device') gpu.write(e.pfn, new Uint8Array([42])); // the device writes its copy
 * console.log(region.bytes[3 * region.pageSize]);               // a real fault migrates it back: 42
 * await region.close();
 * await gpu.close();
 * ```
 */
export class Device extends EventEmitter {
  /** The name given in {@link DeviceOptions.name}, or `device<N>`. */
  readonly name: string;
  /** Device memory in pages; pfns run from 0 to capacity − 1. */
  readonly capacity: number;
  /** @internal Slot in the native registry; also the device id in page-state words. */
  readonly slot: number;
  /** @internal Unique for the process lifetime, unlike slots. */
  readonly id: number;
  /**
   * @internal When it was created, in µs of CLOCK_MONOTONIC (the clock of fault-trace records): a
   * record older than this was made on an earlier device in its slot, never on this one.
   */
  readonly openedUs = Number(process.hrtime.bigint()) / 1000;
  /** @internal Device header, refcounts and free stack, shared with servicers. */
  readonly shared: Int32Array;
  /** @internal URL of the driver module, if any. */
  readonly driverUrl: string | undefined;
  readonly #holders = new Set<DeviceHolder>();
  /** With a driver: its pageFree hooks, which run before a freed page is handed out again. */
  readonly #frees: PageFrees | undefined;
  #loadReported = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  /** With a driver: drains the log of pages native code freed, so their pageFree runs here. */
  #freedLogTimer: NodeJS.Timeout | undefined;
  /** The lowest the free stack's top fell to since the last release tick: entries below it sat idle. */
  #freeTopLow = 0;

  /**
   * Creates the device and reserves its memory; it has no pages in use yet.
   *
   * @param options - name, capacity (pages) and driver module; all optional.
   * @throws `TypeError` (`ERR_INVALID_ARG_TYPE`) for options of the wrong type, `RangeError`
   * (`ERR_OUT_OF_RANGE`) for a capacity outside 1 to {@link MAX_DEVICE_CAPACITY}, an `Error` with
   * code `ERR_TOO_MANY_DEVICES` past 32767 open devices, a SystemError (`syscall: 'mmap'`) when the
   * memory cannot be reserved.
   */
  constructor(options?: DeviceOptions) {
    super();
    const opts = optionsObject('options', options);
    const capacity = opts.capacity === undefined ? 65536 : integer('options.capacity', opts.capacity, 1, MAX_DEVICE_CAPACITY);
    if (opts.name !== undefined && typeof opts.name !== 'string') throw invalidType('options.name', 'a string', opts.name);
    this.name = (opts.name as string | undefined) ?? `device${nextName++}`;
    this.capacity = capacity;
    this.driverUrl = driverUrl(opts.driver);
    this.shared = new Int32Array(new SharedArrayBuffer(deviceSharedWords(capacity) * 4));
    initDevicePages(this.shared, capacity);
    this.slot = native.deviceCreate(capacity, this.shared);
    this.id = nextId++;
    bySlot.set(this.slot, this);
    releaseTimer ??= setInterval(releaseTick, RELEASE_TICK_MS).unref();
    if (this.driverUrl !== undefined) {
      // Pages native code frees (every servicer, a guard, a migration back, a fork child) are logged
      // for us: their pageFree runs on this thread, soon after. Faults on this device are handed to
      // the worker servicer's JS, which asks the driver's fault hook, until it finds there is none.
      Atomics.store(this.shared, DEV_LOG_FREES, 1);
      Atomics.store(this.shared, DEV_ASK_FAULT, 1);
      this.#frees = new PageFrees(this, this.driverUrl);
      this.#freedLogTimer = setInterval(() => this.#frees?.run(), FREED_LOG_POLL_MS).unref();
    }
  }

  /** Device pages currently allocated (referenced by at least one entry), 0 to {@link Device.capacity}. */
  get used(): number {
    return Atomics.load(this.shared, DEV_USED);
  }

  /**
   * True once {@link Device#close} has evicted everything. From then on every call handed this
   * device throws `ERR_DEVICE_CLOSED` (read, write, migrate, snapshot, the `mirror*` functions):
   * its slot may belong to a newer device, which it must never stand for.
   */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * What `console.log(device)` and `util.inspect` show: `Device { name: 'gpu0', capacity: 1024, used: 16 }`
   * (`closed: true` once closed), or `[Device: gpu0]` inside another value such as an entry.
   */
  [inspect.custom](depth: number, options: InspectOptionsStylized): string {
    return summary('Device', depth, options, this.name, () => ({
      name: this.name,
      capacity: this.capacity,
      used: this.used,
      ...(this.#closed ? { closed: true } : {}),
    }));
  }

  /**
   * The device reading its own page: a copy of the {@link PAGE_SIZE} bytes of device page `pfn`,
   * as they are in device memory now. Does not fault or migrate anything.
   *
   * @param pfn - an allocated device page, e.g. `region.entry(page).pfn` of a device entry.
   * @throws `ERR_DEVICE_CLOSED` after close; `RangeError` (`ERR_OUT_OF_RANGE`) for a pfn outside
   * the device; `ERR_DEVICE_PAGE_FREE` for a page no entry references.
   */
  read(pfn: number): Uint8Array {
    this.#checkPage(pfn);
    const out = new Uint8Array(PAGE_SIZE);
    native.deviceRead(this.slot, pfn, out);
    return out;
  }

  /**
   * The device writing its own page, as a GPU kernel would: copies `data` into device page `pfn`
   * at byte `offset`. The CPU sees it once the page migrates back (its next fault, or
   * {@link Region#migrateToRam}); every region sharing the page (after a fork) sees it.
   *
   * @param pfn - an allocated device page.
   * @param data - the bytes to write (any typed array or DataView); at most PAGE_SIZE − offset bytes.
   * @param offset - byte offset in the page, default 0.
   * @throws `ERR_DEVICE_CLOSED`, `ERR_DEVICE_PAGE_FREE` and `RangeError` (`ERR_OUT_OF_RANGE`) as
   * {@link Device#read} does, and for an offset or length past the page; `TypeError`
   * (`ERR_INVALID_ARG_TYPE`) when `data` is not an ArrayBufferView.
   */
  write(pfn: number, data: ArrayBufferView, offset = 0): void {
    this.#checkPage(pfn);
    if (!ArrayBuffer.isView(data)) throw invalidType('data', 'an ArrayBufferView', data);
    integer('offset', offset, 0, PAGE_SIZE);
    if (offset + data.byteLength > PAGE_SIZE) {
      throw outOfRange('data.byteLength', `at most ${PAGE_SIZE - offset} at offset ${offset}`, data.byteLength);
    }
    native.deviceWrite(this.slot, pfn, data, offset);
  }

  /** A snapshot of this device's counters (faults served from it, pages migrated in, out and freed). */
  stats(): DeviceStats {
    const s = this.shared;
    return {
      faults: Atomics.load(s, DEV_FAULTS) >>> 0,
      migratedToDevice: Atomics.load(s, DEV_MIGRATED_TO_DEVICE) >>> 0,
      migratedToRam: Atomics.load(s, DEV_MIGRATED_TO_RAM) >>> 0,
      freed: Atomics.load(s, DEV_FREED) >>> 0,
    };
  }

  /**
   * How many page-table entries reference device page `pfn` (0 when free): 1 normally, more after
   * {@link Region#fork} shared it with a child.
   *
   * @throws `RangeError` (`ERR_OUT_OF_RANGE`) for a pfn outside the device.
   */
  refcount(pfn: number): number {
    integer('pfn', pfn, 0, this.capacity - 1);
    return devicePageRefcount(this.shared, pfn);
  }

  /**
   * Device removal (dmirror_device_evict_chunk): every page this device holds is migrated back to
   * the regions that reference it, and to the {@link Region#fork} children still running that share
   * it (each child keeps the data as its own copy-on-write view), then the device's memory is
   * released and `'close'` is emitted.
   * Nothing is lost: the data is in system memory afterwards. Calling it again returns the same
   * promise. Close regions first when you do not need their data: that frees pages rather than
   * copying them back.
   *
   * @returns a promise that resolves once the device is gone; it rejects only if migrating a page
   * back failed (a SystemError naming the ioctl).
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closing = (async () => {
      // Every mapping of the device's pages, region.fork children included: a child left with an
      // entry on a removed device would fault on it forever.
      check(native.forkEvictDevice(this.slot), 'ioctl(UFFDIO_COPY)', `migrating ${this.name}'s pages back into a region.fork child`);
      for (const holder of [...this.#holders]) holder.evictDevice(this);
      this.#holders.clear();
      clearInterval(this.#freedLogTimer);
      this.#frees?.close(); // pageFree for every page freed, those a fault on another thread is freeing now included
      this.#closed = true;
      bySlot.delete(this.slot);
      this.emit('close');
      native.deviceDestroy(this.slot);
    })();
    return this.#closing;
  }

  /** @internal A region now has (or may have) pages on this device. */
  addHolder(holder: DeviceHolder): void {
    this.#holders.add(holder);
  }

  /** @internal */
  removeHolder(holder: DeviceHolder): void {
    this.#holders.delete(holder);
  }

  /** @internal Allocates a zeroed-on-copy device page, or -1 when full; due pageFree hooks run first. */
  allocPage(): number {
    for (;;) {
      this.#frees?.run();
      let pfn = allocDevicePage(this.shared, this.capacity);
      if (pfn < 0 && this.#frees !== undefined) {
        // Full, but a fault freed a page meanwhile (logged, for its pageFree): once more.
        if (Atomics.load(this.shared, DEV_FREED_LOGGED) !== 0) continue;
        pfn = this.#frees.takeEarly();
        if (pfn >= 0) claimDevicePage(this.shared, pfn);
      }
      this.#noteFreeTop();
      return pfn;
    }
  }

  /**
   * @internal A migration to this device is about to lock pages: the driver module must be
   * loading (its pageFree runs before a freed page is handed out again), and due hooks run now.
   */
  collectFrees(): void {
    this.#frees?.load();
    this.#frees?.run();
  }

  /**
   * @internal A huge device page: `n` aligned consecutive pages, or -1 when none is free or the
   * allocation was made to fail (`failNextHugeAllocation`, consumed here).
   */
  allocHugePage(n: number): number {
    if (Atomics.exchange(this.shared, DEV_FAIL_ALLOC, 0) !== 0) return -1;
    this.#frees?.run();
    const base = allocHugeDevicePages(this.shared, this.capacity, n);
    this.#freeTopLow = 0; // it reorders the free stack: count every free page as taken this tick
    return base;
  }

  /**
   * @internal The release tick: gives back to the kernel the free pages nobody took since the last
   * tick (those below the lowest the free stack fell to), beyond a warm reserve. No system call
   * while there is nothing to give back.
   */
  releaseIdle(): void {
    const top = Atomics.load(this.shared, DEV_FREE_TOP);
    const idleTop = Math.min(this.#freeTopLow, top);
    this.#freeTopLow = top;
    if (!wantsRelease(this.shared)) return;
    // Up to 1024 pages a call; a tick gives back at most 1 GiB.
    for (let calls = 0; calls < 256 && native.deviceRelease(this.slot, idleTop) > 0; calls++);
  }

  /** After an allocation: the lowest the free stack fell to since the last release tick. */
  #noteFreeTop(): void {
    this.#freeTopLow = Math.min(this.#freeTopLow, Atomics.load(this.shared, DEV_FREE_TOP));
  }

  /**
   * Makes the next huge (PMD-sized) allocation fail, once: dmirror's HMM_DMIRROR_FLAG_FAIL_ALLOC.
   * If the next one is the device's (a THP migrating to it), the THP is split and migrates as base
   * pages; if it is the CPU's (a huge device entry coming back on a fault), only the faulting page
   * comes back and the huge entry is split. Either way nothing is lost: this tests the fallbacks.
   */
  failNextHugeAllocation(): void {
    if (this.#closed) throw deviceClosed(this.name);
    Atomics.store(this.shared, DEV_FAIL_ALLOC, 1);
  }

  /** @internal Takes one more reference to an allocated page (another entry names it: a fork child). */
  getPage(pfn: number): void {
    getDevicePage(this.shared, pfn);
  }

  /** @internal Drops a reference; on the last, frees the page (with a driver: see {@link PageFrees}). */
  putPage(pfn: number): boolean {
    if (this.#frees === undefined) return putDevicePage(this.shared, this.capacity, pfn);
    if (!dropDevicePage(this.shared, pfn)) return false;
    this.#frees.freed(pfn);
    return true;
  }

  /** @internal Reports a driver error where the user will see it. */
  reportError(err: unknown): void {
    // A driver that cannot be loaded is reported once per device, though both the worker (for
    // faults) and this thread (for every pageFree) find out.
    if ((err as { code?: unknown } | null)?.code === 'ERR_DRIVER_LOAD') {
      if (this.#loadReported) return;
      this.#loadReported = true;
    }
    if (this.listenerCount('error') > 0) this.emit('error', err);
    // Unheard, it still must not be swallowed: a process warning prints it with its code, at once
    // (the report may arrive as the process exits: see WorkerServicer).
    else warnNow(err instanceof Error ? err : new Error(String(err)));
  }

  #checkPage(pfn: number): void {
    if (this.#closed) throw deviceClosed(this.name);
    integer('pfn', pfn, 0, this.capacity - 1);
    if (devicePageRefcount(this.shared, pfn) <= 0) {
      throw new UffdHmmError(
        'ERR_DEVICE_PAGE_FREE',
        `device page ${pfn} of ${this.name} is not allocated; read or write only a pfn that region.entry(page) shows on this device`,
      );
    }
  }
}
