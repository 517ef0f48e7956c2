// uffd-hmm: Linux HMM device-private memory semantics, emulated in user space on real
// userfaultfd page faults. See README.md and docs/ for the model.
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
  type RegionStats,
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
export { FaultTrace, type TraceRecord, type TraceColumns, type TraceOutcome } from './trace.js';
export { configureServicers } from './servicer/host.js';
