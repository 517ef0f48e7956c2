// What the worker servicer decides in TypeScript: whether a fault on a device page whose driver
// has a fault hook migrates back or gets SIGBUS (the choice dev_pagemap_ops.migrate_to_ram makes).
// Serving the fault is the native engine's (native/fault.cc): pollerWait serves every fault that
// needs no decision, and native.faultServe serves one once the hook has decided.
// Hot path: no allocation, no closures; the hook context is one reused object.
import { FAULT_KERNEL, UFFD_PAGEFAULT_FLAG_WRITE, VERDICT_MIGRATE, VERDICT_SIGBUS } from '../layout.js';
import type { Driver, FaultContext } from '../driver.js';

/** native.faultServe's answers. */
export const SERVED = 0;
export const DEFERRED = 1;
/** The entry changed since the driver was asked: ask again, about the entry the page holds now. */
export const ASK = 2;
export const FAILED = 3;
/**
 * The driver refused a fault taken inside a system call by a thread that blocks the signal a
 * refusal travels by (native/refusal.cc): the fault was served by the default policy instead.
 */
export const SERVED_NOT_REFUSED = 4;
/**
 * The driver refused a fault taken inside a system call, and it failed: a poison marker stands in
 * the page's pte until this servicer reads the zap that takes it away (worker.ts settleRefusal).
 */
export const REFUSED_IN_SYSCALL = 5;

export interface RegionInfo {
  handle: number;
  shared: Int32Array;
  address: bigint;
  pageSize: number;
}

export interface DeviceInfo {
  slot: number;
  id: number;
  name: string;
  capacity: number;
  shared: Int32Array;
  driverUrl: string | undefined;
  driver: Driver | undefined;
  /** The driver module is still being imported: its faults wait for it rather than skip its hook. */
  driverLoading: boolean;
}

export interface PolicyHost {
  devices: (DeviceInfo | undefined)[];
  /** A driver hook threw or answered wrongly: the fault is still served, and this reports the error. */
  hookError(device: DeviceInfo, hook: 'fault', err: unknown): void;
}

/** The one reused context handed to `fault` hooks; `address` is computed only if read. */
class HookContext implements FaultContext {
  deviceName = '';
  pfn = 0;
  page = 0;
  write = false;
  kernelMode = false;
  base = 0n;
  pageSize = 4096;
  get address(): bigint {
    return this.base + BigInt(this.page * this.pageSize);
  }
}
const hookCtx = new HookContext();

/** µs the last {@link askDriver} spent inside the hook (0 when it called none), for the fault's trace record. */
export let lastHookUs = 0;

/**
 * The driver's decision for a fault on `page`, whose entry names device page `pfn` of `dev`:
 * VERDICT_MIGRATE or VERDICT_SIGBUS. A hook that throws or answers wrongly is reported, and the
 * page migrates back (the default).
 */
export function askDriver(host: PolicyHost, dev: DeviceInfo, r: RegionInfo, page: number, pfn: number, flags: number): number {
  const hook = dev.driver?.fault;
  lastHookUs = 0;
  if (hook === undefined) return VERDICT_MIGRATE;
  hookCtx.deviceName = dev.name;
  hookCtx.pfn = pfn;
  hookCtx.page = page;
  hookCtx.write = (flags & UFFD_PAGEFAULT_FLAG_WRITE) !== 0;
  hookCtx.kernelMode = (flags & FAULT_KERNEL) !== 0;
  hookCtx.base = r.address;
  hookCtx.pageSize = r.pageSize;
  let decision: unknown;
  const t0 = performance.now();
  try {
    decision = hook(hookCtx);
  } catch (e) {
    lastHookUs = (performance.now() - t0) * 1000;
    host.hookError(dev, 'fault', e);
    return VERDICT_MIGRATE;
  }
  lastHookUs = (performance.now() - t0) * 1000;
  if (decision === 'sigbus') return VERDICT_SIGBUS;
  if (decision === undefined || decision === 'migrate') return VERDICT_MIGRATE;
  // A driver bug, reported rather than guessed at: the fault migrates back (the default).
  if (decision !== null && typeof (decision as { then?: unknown }).then === 'function') {
    (decision as Promise<unknown>).then(undefined, () => {}); // its rejection is this report, not a crash
    host.hookError(dev, 'fault', new TypeError('a fault hook must decide synchronously: it returned a Promise (is it async?)'));
  } else {
    host.hookError(dev, 'fault', new TypeError(`a fault hook must return 'migrate' or 'sigbus', not ${String(decision)}`));
  }
  return VERDICT_MIGRATE;
}
