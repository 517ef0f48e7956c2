// uffd-hmm: Linux HMM device-private memory semantics, emulated in user space on real
// userfaultfd page faults. See README.md and docs/ for the model.

/**
 * Linux HMM device-private memory, emulated in user space on real userfaultfd page faults.
 *
 * A {@link Region} is real anonymous memory registered with userfaultfd (the vma); a
 * {@link Device} is an emulated device with its own memory (the `dev_pagemap`).
 * {@link Region#migrate} moves pages to a device and leaves device entries in the region's page
 * table (`make_device_entry`, see {@link makeDeviceEntry}); a CPU touch of such a page is a real
 * fault that the region's servicer ({@link ServicerKind}) answers by migrating the page back, as
 * the kernel's `do_swap_page` → `migrate_to_ram` does. {@link probe} says whether this process may
 * use userfaultfd at all and how to fix it when not.
 *
 * Units: pages are {@link PAGE_SIZE} bytes (4096 on x86-64); page indices, ranges
 * (`first, count`), capacities and pfns count pages; `smaps()` reports bytes; trace times are µs.
 *
 * Errors carry a stable `code`: `TypeError` (`ERR_INVALID_ARG_TYPE`) and `RangeError`
 * (`ERR_OUT_OF_RANGE`) for bad arguments, {@link UffdSystemError} (`code`, `errno`, `syscall`) for
 * failed system calls, and {@link UffdHmmError} for the rest (`ERR_UFFD_UNAVAILABLE`,
 * `ERR_REGION_CLOSED`, …). For tests, `uffd-hmm/vitest` adds fixtures and matchers.
 *
 * @example
 * ```ts
 * import { Device, Region } from 'uffd-hmm';
 *
 * const gpu = new Device({ name: 'gpu0', capacity: 1024 });
 * const region = Region.map({ pages: 16 });
 * region.bytes.fill(7);
 * region.migrate(0, 16, gpu);                    // CPU pages freed, device entries left
 * region.entry(3);                               // { kind: 'device', write: true, device: gpu, pfn: 3 }
 * region.bytes[3 * region.pageSize];             // a real fault: page 3 migrates back -> 7
 * await region.close();                          // munmap: the device pages are freed
 * await gpu.close();
 * ```
 *
 * @module uffd-hmm
 */
export { probe, type Probe, type FeatureName } from './probe.js';
export { Device, MAX_DEVICE_CAPACITY, type DeviceOptions, type DeviceStats } from './device.js';
export {
  Region,
  MAX_REGION_PAGES,
  MAX_FAULT_AROUND,
  hugePageSize,
  HMM_DMIRROR_PROT_ERROR,
  HMM_DMIRROR_PROT_NONE,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  HMM_DMIRROR_PROT_PMD,
  HMM_DMIRROR_PROT_PUD,
  HMM_DMIRROR_PROT_ZERO,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE,
  PM_PRESENT,
  PM_SWAP,
  PM_FILE,
  PM_UFFD_WP,
  PM_MMAP_EXCLUSIVE,
  PM_SOFT_DIRTY,
  type Entry,
  type MapOptions,
  type MigrateOptions,
  type DiscardOptions,
  type RegionMapping,
  type FileBacking,
  type RegionStats,
  type ServicerStats,
  type ServicerKind,
} from './region.js';
export {
  SWP_DEVICE,
  SWP_DEVICE_WRITE,
  SWP_HWPOISON,
  SWP_MIGRATION_READ,
  SWP_MIGRATION_WRITE,
  SWP_TYPE_SHIFT,
  MAX_SWAPFILES,
  MAX_SWAPFILES_SHIFT,
  swpEntry,
  swpType,
  swpOffset,
  makeDeviceEntry,
  isDeviceEntry,
  isWriteDeviceEntry,
  makeDeviceEntryRead,
  deviceEntryToPfn,
} from './entry.js';
export { UffdHmmError, UffdSystemError, type SystemErrorFields } from './errors.js';
export type { Driver, FaultContext, FaultDecision, PageFreeContext } from './driver.js';
export { PAGE_SIZE } from './native.js';
export { NativeToucher, type ToucherOptions } from './toucher.js';
export type { ChildResult, ChildStep } from './fork.js';
export {
  mirrorRead,
  mirrorWrite,
  mirrorMigrate,
  mirrorMigrateToSys,
  mirrorSnapshot,
  mirrorExclusive,
  mirrorCheckExclusive,
  mirrorFlags,
  HMM_DMIRROR_FLAG_FAIL_ALLOC,
  type MirrorReadResult,
  type MirrorWriteResult,
  type MirrorMigrateResult,
} from './mirror.js';
export { FaultTrace, type TraceRecord, type TraceColumns, type TraceOutcome, type TracedRegion } from './trace.js';
export { SERVICER_TRACK, type ChromeTrace, type ChromeTraceMetadata, type TraceEvent } from './trace-events.js';
export { configureServicers } from './servicer/host.js';
export type { InspectOptionsStylized } from './inspect.js';
