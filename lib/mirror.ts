// The device mirroring a process range, as lib/test_hmm.c's dmirror driver does through its ioctls:
// the device reading and writing process memory (hmm_range_fault), migrating to and from itself
// (migrate_vma with its driver policy), snapshotting the CPU page table, and exclusive access.
//
// The kernel's device keeps its own page table, kept coherent by an mmu notifier. User space has
// no mmu notifier, so a mirror here keeps no page table between calls: every call starts empty and
// faults its range in one pass (`faults` is 1 for every successful call, as each hmm-tests.c case
// expects of a fresh mirror). What the device reaches it reaches the way hmm_range_fault does:
//  - a page on this device (dev_private_owner) is accessed in device memory, where it stays;
//  - anything else goes through the CPU page table from the kernel side (write(2)/read(2) on the
//    region's bytes: kernel-mode faults, handled as the handle_mm_fault calls of hmm_range_fault
//    are): holes fault in (the zero page for reads), pages on other devices migrate back, a
//    missing vma is EFAULT, never a crash of the calling thread.
// vma permissions come from /proc/self/maps, the kernel's own view, so that EFAULT and EPERM are
// decided as hmm_range_fault decides them (VM_READ, VM_WRITE), whatever mprotect(2) made them.
// READ and WRITE therefore need a region whose kernel-mode faults are served: 'worker' or 'native'
// on a full userfaultfd (ERR_SERVICER_UNSUPPORTED otherwise). Errors are SystemErrors named after
// the ioctl, with the errno dmirror returns: EFAULT, EPERM, EINVAL, ENOENT, ENOMEM.
//
// One file per command family, named for the kernel code each one stands in for: mirror/hmm.ts
// (hmm_range_fault: READ, WRITE, SNAPSHOT), mirror/migrate.ts (migrate_vma: MIGRATE_TO_DEV / _SYS),
// mirror/exclusive.ts (make_device_exclusive), and mirror/dmirror.ts (the driver's checks, errors and FLAGS).
export {
  HMM_DMIRROR_FLAG_FAIL_ALLOC,
  mirrorFlags,
  type MirrorMigrateResult,
  type MirrorReadResult,
  type MirrorWriteResult,
} from './mirror/dmirror.js';
export { mirrorRead, mirrorSnapshot, mirrorWrite } from './mirror/hmm.js';
export { mirrorMigrate, mirrorMigrateToSys } from './mirror/migrate.js';
export { mirrorCheckExclusive, mirrorExclusive } from './mirror/exclusive.js';
