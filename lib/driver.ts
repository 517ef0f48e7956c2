// What a device driver module may export: the dev_pagemap callbacks of the seed patch.

/**
 * Passed to a driver's `fault` hook (dev_pagemap.fault / migrate_to_ram). Valid only during the
 * call: the servicer reuses one object for every fault (the hot path allocates nothing), so copy
 * what you want to keep.
 */
export interface FaultContext {
  /** The {@link Device.name} of the device that holds the page. */
  readonly deviceName: string;
  /** The device page the entry names. */
  readonly pfn: number;
  /** Page index in the region that faulted. */
  readonly page: number;
  /** Virtual address of the faulting page. */
  readonly address: bigint;
  /** The access was a write. */
  readonly write: boolean;
  /**
   * The access came from inside a system call (write(2) from the page, read(2) into it). userfaultfd
   * does not say so: it is told only for regions mapped with countKernelFaults, false otherwise.
   */
  readonly kernelMode: boolean;
}

/**
 * Passed to a driver's `pageFree` hook (free_devpage / page_free) when a device page's last
 * reference goes. Like {@link FaultContext}, it may be reused: copy what you keep.
 */
export interface PageFreeContext {
  /** The {@link Device.name} of the device whose page was freed. */
  readonly deviceName: string;
  /** The device page now free; the device may hand it out again on the next migration. */
  readonly pfn: number;
}

/** The decision of a `fault` hook: migrate the page back (the default) or refuse with SIGBUS. */
export type FaultDecision = 'migrate' | 'sigbus';

/**
 * A driver module: an ES module, named by {@link DeviceOptions.driver}, exporting any of these
 * hooks, the seed patch's `dev_pagemap` callbacks. `fault` runs in the worker servicer's thread,
 * for `'worker'` regions only (`'native'` and `'inline'` regions apply the default policy: migrate
 * back); `pageFree` runs once for every freed page, whoever freed it, on the thread that created
 * the Device, shortly after the free and always before that page is handed out again
 * ({@link Driver.pageFree}). The two hooks may thus run in two instances of the module (the worker's
 * and the main thread's): keep state they share in the device's memory or a SharedArrayBuffer,
 * not in module variables. A hook that throws, or a `fault` hook
 * that returns anything but a {@link FaultDecision} (a Promise included: it must decide
 * synchronously), is a driver bug: the fault is still served by the default policy and the Device
 * emits `'error'` with code `ERR_DRIVER_HOOK` (a process warning when nobody listens), never
 * swallowed. docs/DRIVERS.md is the guide.
 *
 * @example
 * ```js
 * // my-driver.mjs: refuses writes to odd pages, lets everything else migrate back.
 * export function fault(ctx) {
 *   return ctx.write && ctx.page % 2 === 1 ? 'sigbus' : 'migrate';
 * }
 * export function pageFree(ctx) {
 *   // ctx.pfn of ctx.deviceName lost its last reference: release driver state kept for it.
 * }
 * ```
 */
export interface Driver {
  /**
   * dev_pagemap.fault (migrate_to_ram): the CPU touched a page whose entry names this device.
   * Return `'migrate'` (or nothing) to migrate it back, the default; `'sigbus'` to refuse, as
   * VM_FAULT_SIGBUS: that access fails (SIGBUS with BUS_ADRERR at the faulting address; EFAULT from
   * inside a system call) and nothing else changes: the next access asks again.
   * Runs synchronously while the faulting thread waits, so keep it short: a hook that hangs past
   * the stall deadline ({@link configureServicers}) has its regions taken over by native guards.
   */
  fault?(ctx: FaultContext): FaultDecision | void;
  /**
   * free_devpage (page_free): a device page lost its last reference (migrated back, discarded,
   * unmapped, or its region closed). Called exactly once per freed page, on the thread that
   * created the Device, asynchronously: pages freed from JS (`region.close`, `discard`,
   * `migrateToRam`, a shrinking `remap`, `device.close`, a migration to another device) and pages
   * freed by native code (any servicer's faults and zaps, a guard, a `region.fork` child), which
   * the main thread collects every 10 ms and before each allocation on the device. A freed page
   * stays off the device's free list until its pageFree has run, so it is never handed out again
   * before (except while the main thread's first import of the module is still pending: see
   * docs/DRIVERS.md). `fault` runs in the worker: the two hooks may run in two instances of the
   * module, whose module-level state is not shared.
   */
  pageFree?(ctx: PageFreeContext): void;
}

/** @internal What a driver that does not load means, whichever thread (worker, main) finds out first. */
export const DRIVER_LOAD_CONSEQUENCE =
  'none of its hooks run: its faults use the default policy (migrate back) and its freed pages get no pageFree';
