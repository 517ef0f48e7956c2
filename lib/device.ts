// An emulated device with its own memory: the struct dev_pagemap plus the dmirror driver of
// lib/test_hmm.c. Pages come from a free stack within `capacity`, each with a refcount.
import { EventEmitter } from 'node:events';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { native, PAGE_SIZE } from './native.js';
import { UffdHmmError, deviceClosed, driverLoadFailed, invalidType, outOfRange, pageFreeHookThrew } from './errors.js';
import { integer, optionsObject } from './validate.js';
import {
  DEV_FAULTS,
  DEV_FREED,
  DEV_MIGRATED_TO_DEVICE,
  DEV_MIGRATED_TO_RAM,
  DEV_USED,
} from './layout.js';
import { allocDevicePage, deviceSharedWords, devicePageRefcount, initDevicePages, putDevicePage } from './devicepages.js';
import type { Driver, PageFreeContext } from './driver.js';

export interface DeviceOptions {
  /** Shown in errors, snapshots and hook contexts. Default `device<N>`. */
  name?: string;
  /** Device memory in pages. Default 65536 (256 MiB of 4 KiB pages). */
  capacity?: number;
  /** An ES module (path or URL) exporting the driver hooks `fault` and `pageFree`. */
  driver?: string | URL;
}

export interface DeviceStats {
  /** CPU faults on this device's entries that migrated a page back. */
  faults: number;
  migratedToDevice: number;
  migratedToRam: number;
  /** Device pages freed (their last reference dropped). */
  freed: number;
}

/** The largest capacity a device may have: pfns live in 32-bit words. */
export const MAX_DEVICE_CAPACITY = 1 << 24;

/** What a region needs from a device without importing region.ts (which imports this file). */
export interface DeviceHolder {
  evictDevice(device: Device): void;
}

let nextName = 0;
let nextId = 1;
const bySlot = new Map<number, Device>();

/** @internal The open device that owns `slot`. */
export function deviceBySlot(slot: number): Device | undefined {
  return bySlot.get(slot);
}

function driverUrl(driver: unknown): string | undefined {
  if (driver === undefined) return undefined;
  if (driver instanceof URL) return driver.href;
  if (typeof driver !== 'string') throw invalidType('options.driver', 'a string or URL', driver);
  if (/^[a-z][a-z0-9+.-]*:/i.test(driver) && !/^[a-z]:[\\/]/i.test(driver)) return driver;
  return pathToFileURL(path.resolve(driver)).href;
}

export class Device extends EventEmitter {
  readonly name: string;
  readonly capacity: number;
  /** @internal Slot in the native registry; also the device id in page-state words. */
  readonly slot: number;
  /** @internal Unique for the process lifetime, unlike slots. */
  readonly id: number;
  /** @internal Device header, refcounts and free stack, shared with servicers. */
  readonly shared: Int32Array;
  /** @internal URL of the driver module, if any. */
  readonly driverUrl: string | undefined;
  readonly #holders = new Set<DeviceHolder>();
  #driver: Promise<Driver> | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;

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
  }

  /** Device pages currently allocated. */
  get used(): number {
    return Atomics.load(this.shared, DEV_USED);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The device reading its own page (a copy). */
  read(pfn: number): Uint8Array {
    this.#checkPage(pfn);
    const out = new Uint8Array(PAGE_SIZE);
    native.deviceRead(this.slot, pfn, out);
    return out;
  }

  /** The device writing its own page, as a GPU kernel would; the CPU sees it after migrating back. */
  write(pfn: number, data: ArrayBufferView, offset = 0): void {
    this.#checkPage(pfn);
    if (!ArrayBuffer.isView(data)) throw invalidType('data', 'an ArrayBufferView', data);
    integer('offset', offset, 0, PAGE_SIZE);
    if (offset + data.byteLength > PAGE_SIZE) {
      throw outOfRange('data.byteLength', `at most ${PAGE_SIZE - offset} at offset ${offset}`, data.byteLength);
    }
    native.deviceWrite(this.slot, pfn, data, offset);
  }

  stats(): DeviceStats {
    const s = this.shared;
    return {
      faults: Atomics.load(s, DEV_FAULTS) >>> 0,
      migratedToDevice: Atomics.load(s, DEV_MIGRATED_TO_DEVICE) >>> 0,
      migratedToRam: Atomics.load(s, DEV_MIGRATED_TO_RAM) >>> 0,
      freed: Atomics.load(s, DEV_FREED) >>> 0,
    };
  }

  /** How many page-table entries reference device page `pfn` (0 when free). */
  refcount(pfn: number): number {
    integer('pfn', pfn, 0, this.capacity - 1);
    return devicePageRefcount(this.shared, pfn);
  }

  /**
   * Device removal (dmirror_device_evict_chunk): every page this device holds is migrated back to
   * its owner first, then the device's memory is released. Nothing is lost.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closing = (async () => {
      for (const holder of [...this.#holders]) holder.evictDevice(this);
      this.#holders.clear();
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

  /** @internal Allocates a zeroed-on-copy device page, or -1 when full. */
  allocPage(): number {
    return allocDevicePage(this.shared, this.capacity);
  }

  /** @internal Drops a reference; on the last, frees the page and calls the driver's pageFree. */
  putPage(pfn: number): boolean {
    const freed = putDevicePage(this.shared, this.capacity, pfn);
    if (freed && this.driverUrl !== undefined) this.#pageFree(pfn);
    return freed;
  }

  /** @internal Reports a driver error where the user will see it. */
  reportError(err: unknown): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
    // Unheard, it still must not be swallowed: a process warning prints it with its code.
    else process.emitWarning(err instanceof Error ? err : new Error(String(err)));
  }

  #pageFree(pfn: number): void {
    this.#driver ??= import(this.driverUrl!) as Promise<Driver>;
    const ctx: PageFreeContext = { deviceName: this.name, pfn };
    this.#driver.then(
      (d) => {
        try {
          d.pageFree?.(ctx);
        } catch (e) {
          this.reportError(new UffdHmmError('ERR_DRIVER_HOOK', pageFreeHookThrew(this.name), { cause: e }));
        }
      },
      (e) => this.reportError(new UffdHmmError('ERR_DRIVER_LOAD', driverLoadFailed(this.driverUrl!, this.name, 'its pageFree hook did not run'), { cause: e })),
    );
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
