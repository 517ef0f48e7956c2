// Device page bookkeeping over the device's shared buffer: a free stack under a spinlock, a
// refcount per page, and the log of pages native code freed. The main thread, the worker servicer
// and native/device.cc all use it.
import {
  DEVICE_HEADER,
  DEV_FREED,
  DEV_FREED_LOGGED,
  DEV_FREEING,
  DEV_FREE_TOP,
  DEV_LOCK,
  DEV_RELEASED,
  DEV_RELEASING,
  DEV_USED,
  RELEASE_BATCH,
  RELEASE_WARM,
} from './layout.js';


export function deviceSharedWords(capacity: number): number {
  return DEVICE_HEADER + 3 * capacity;
}

/** Fills the free stack so that pops hand out pfn 0, 1, 2, … */
export function initDevicePages(shared: Int32Array, capacity: number): void {
  const stack = DEVICE_HEADER + capacity;
  for (let i = 0; i < capacity; i++) shared[stack + i] = capacity - 1 - i;
  shared[DEV_FREE_TOP] = capacity;
  shared[DEV_RELEASED] = capacity; // never touched: none holds memory yet
}

function spinLock(shared: Int32Array): void {
  while (Atomics.compareExchange(shared, DEV_LOCK, 0, 1) !== 0) {
    // Held for a handful of instructions by another thread: spin.
  }
}

function spinUnlock(shared: Int32Array): void {
  Atomics.store(shared, DEV_LOCK, 0);
}

/** Takes a free device page with refcount 1, or returns -1 when the device is full. */
export function allocDevicePage(shared: Int32Array, capacity: number): number {
  for (;;) {
    spinLock(shared);
    const top = shared[DEV_FREE_TOP];
    if (top === 0) {
      spinUnlock(shared);
      // A fault is freeing a page right now (its thread may already run): it is free, wait for it.
      // Freeing is read first: the engine pushes the page before it stops counting it as freeing.
      if (Atomics.load(shared, DEV_FREEING) > 0 || Atomics.load(shared, DEV_FREE_TOP) > 0) continue;
      return -1;
    }
    if (top - 1 < Atomics.load(shared, DEV_RELEASING)) {
      // Being given back to the kernel right now (only once the warm pages above ran out): wait.
      spinUnlock(shared);
      continue;
    }
    const pfn = shared[DEVICE_HEADER + capacity + top - 1];
    shared[DEV_FREE_TOP] = top - 1;
    // A given-back page comes back zeroed on its first write: it holds memory again.
    if (top - 1 < shared[DEV_RELEASED]) shared[DEV_RELEASED] = top - 1;
    Atomics.store(shared, DEVICE_HEADER + pfn, 1);
    Atomics.add(shared, DEV_USED, 1);
    spinUnlock(shared);
    return pfn;
  }
}

/**
 * Takes `n` free device pages forming one naturally aligned block (a huge device page, for a THP
 * migrated whole), each with refcount 1; returns the first pfn, or -1 when no such block is free.
 * O(capacity) under the lock: huge allocations are rare, base-page ones never wait on a scan.
 */
export function allocHugeDevicePages(shared: Int32Array, capacity: number, n: number): number {
  const free = new Uint8Array(capacity); // before the lock: servicer threads spin on it
  // Pages a fault is freeing right now count as free: let them reach the stack first.
  while (Atomics.load(shared, DEV_FREEING) > 0);
  spinLock(shared);
  while (Atomics.load(shared, DEV_RELEASING) !== 0) {
    // A release is giving pages back: the scan below may take any free page, so wait it out.
    spinUnlock(shared);
    spinLock(shared);
  }
  const stack = DEVICE_HEADER + capacity;
  const top = shared[DEV_FREE_TOP];
  const released = shared[DEV_RELEASED];
  for (let i = 0; i < top; i++) free[shared[stack + i]] = 1;
  let base = -1;
  for (let b = 0; b + n <= capacity && base < 0; b += n) {
    let i = 0;
    while (i < n && free[b + i] === 1) i++;
    if (i === n) base = b;
  }
  if (base >= 0) {
    // Drop the block from the free stack, keeping the order of the rest.
    let w = 0;
    let keptReleased = 0;
    for (let i = 0; i < top; i++) {
      const pfn = shared[stack + i];
      if (pfn < base || pfn >= base + n) {
        if (i < released) keptReleased++;
        shared[stack + w++] = pfn;
      }
    }
    shared[DEV_FREE_TOP] = w;
    shared[DEV_RELEASED] = keptReleased; // the given-back entries stay below the resident ones
    for (let i = 0; i < n; i++) Atomics.store(shared, DEVICE_HEADER + base + i, 1);
    Atomics.add(shared, DEV_USED, n);
  }
  spinUnlock(shared);
  return base;
}

/** Adds a reference (a second mapping of the same device page, as after fork). */
export function getDevicePage(shared: Int32Array, pfn: number): void {
  Atomics.add(shared, DEVICE_HEADER + pfn, 1);
}

/** Whether enough freed pages hold memory for the device to give some back (native deviceRelease). */
export function wantsRelease(shared: Int32Array): boolean {
  return Atomics.load(shared, DEV_FREE_TOP) - Atomics.load(shared, DEV_RELEASED) >= RELEASE_WARM + RELEASE_BATCH;
}

/** Drops a reference; returns true when it was the last and the page went back to the free stack. */
export function putDevicePage(shared: Int32Array, capacity: number, pfn: number): boolean {
  if (Atomics.sub(shared, DEVICE_HEADER + pfn, 1) !== 1) return false;
  spinLock(shared);
  const top = shared[DEV_FREE_TOP];
  shared[DEVICE_HEADER + capacity + top] = pfn;
  shared[DEV_FREE_TOP] = top + 1;
  Atomics.sub(shared, DEV_USED, 1);
  spinUnlock(shared);
  Atomics.add(shared, DEV_FREED, 1);
  return true;
}

/**
 * putDevicePage's first half, for a device whose driver's pageFree must run before the page is
 * handed out again: drops a reference and, on the last, counts the page freed (no longer used)
 * while it stays off the free stack; {@link pushFreeDevicePage} puts it there once the hook ran.
 * Returns true on the last reference.
 */
export function dropDevicePage(shared: Int32Array, pfn: number): boolean {
  if (Atomics.sub(shared, DEVICE_HEADER + pfn, 1) !== 1) return false;
  Atomics.sub(shared, DEV_USED, 1);
  Atomics.add(shared, DEV_FREED, 1);
  return true;
}

/** Takes a freed page that never reached the free stack (see PageFrees.takeEarly), with refcount 1. */
export function claimDevicePage(shared: Int32Array, pfn: number): void {
  Atomics.store(shared, DEVICE_HEADER + pfn, 1);
  Atomics.add(shared, DEV_USED, 1);
}

/** Puts a freed page (its references gone, its pageFree run) on the free stack. */
export function pushFreeDevicePage(shared: Int32Array, capacity: number, pfn: number): void {
  spinLock(shared);
  const top = shared[DEV_FREE_TOP];
  shared[DEVICE_HEADER + capacity + top] = pfn;
  shared[DEV_FREE_TOP] = top + 1;
  spinUnlock(shared);
}

/**
 * Takes the pfns that native code freed and logged since the last call (DEV_LOG_FREES): off the
 * free stack until the driver's pageFree ran for them. Undefined when there are none (one load,
 * no lock).
 */
export function drainFreedLog(shared: Int32Array, capacity: number): number[] | undefined {
  if (Atomics.load(shared, DEV_FREED_LOGGED) === 0) return undefined;
  spinLock(shared);
  const log = DEVICE_HEADER + 2 * capacity;
  const pfns = Array.from(shared.subarray(log, log + shared[DEV_FREED_LOGGED]));
  Atomics.store(shared, DEV_FREED_LOGGED, 0);
  spinUnlock(shared);
  return pfns;
}

export function devicePageRefcount(shared: Int32Array, pfn: number): number {
  return Atomics.load(shared, DEVICE_HEADER + pfn);
}
