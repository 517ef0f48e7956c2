// Migration through the dmirror driver (mm/migrate_device.c's migrate_vma, with dmirror's policy):
// HMM_DMIRROR_MIGRATE_TO_DEV and HMM_DMIRROR_MIGRATE_TO_SYS.
import { KIND_MASK, KIND_NONE, KIND_PRESENT } from '../layout.js';
import { Device } from '../device.js';
import { Region } from '../region.js';
import {
  EINVAL,
  MAKE_READABLE,
  type MirrorMigrateResult,
  VM_READ,
  bounce,
  checkArgs,
  mirrorError,
  onDevice,
  readEntry,
  vmaFlags,
} from './dmirror.js';

/**
 * Calls `fn(first, count)` on each run of pages that are in system memory (never touched, or a CPU
 * page), in order; stops with EINVAL at the first page without VM_READ or vma, as dmirror's
 * vma_lookup check does, after the runs before it were handled.
 */
function systemRuns(region: Region, first: number, count: number, op: string, fn: (first: number, count: number) => void): void {
  const flags = vmaFlags(region, first, count);
  let run = -1;
  for (let p = first; p <= first + count; p++) {
    const end = p === first + count;
    const bad = !end && (flags[p - first] & VM_READ) === 0;
    const kind = end || bad ? -1 : readEntry(region, p).state & KIND_MASK;
    const system = kind === KIND_NONE || kind === KIND_PRESENT;
    if (!system && run >= 0) {
      fn(run, p - run);
      run = -1;
    }
    if (bad) throw mirrorError(EINVAL, op, `page ${p} has no readable vma`, MAKE_READABLE);
    if (system && run < 0) run = p;
  }
}

/**
 * HMM_DMIRROR_MIGRATE_TO_DEV: migrates the range's system pages to `device` (migrate_vma with
 * MIGRATE_VMA_SELECT_SYSTEM: pages already on a device, this one or another, are left where they
 * are, as dmirror_migrate_alloc_and_copy does), then reads back what the device maps. EINVAL at a
 * page without VM_READ or vma; ENOENT when a page of the range is not on `device` afterwards.
 *
 * @throws `TypeError` (`ERR_INVALID_ARG_TYPE`) / `RangeError` (`ERR_OUT_OF_RANGE`) for bad
 * arguments (an empty range included, as the ioctl refuses it), `ERR_REGION_CLOSED` /
 * `ERR_DEVICE_CLOSED`, and the SystemErrors above (`syscall: 'ioctl(HMM_DMIRROR_…)'`).
 */
export function mirrorMigrate(region: Region, first: number, count: number, device: Device): MirrorMigrateResult {
  const [r, f, c, d] = checkArgs(region, first, count, device);
  // migrate_vma_setup refuses a hugetlb vma outright.
  if (r.mapping === 'private-hugetlb' || r.mapping === 'shared-hugetlb') throw mirrorError(EINVAL, 'MIGRATE_TO_DEV', 'the range is hugetlb memory', 'hugetlb pages never migrate to device memory; use a private anonymous region (thp: true for huge pages)');
  systemRuns(r, f, c, 'MIGRATE_TO_DEV', (a, n) => {
    r.migrate(a, n, d);
  });
  return { cpages: c, data: bounce(r, f, c, d, 'MIGRATE_TO_DEV') };
}

/**
 * HMM_DMIRROR_MIGRATE_TO_SYS: migrates the range's pages that are on `device` back to system memory
 * (MIGRATE_VMA_SELECT_DEVICE_PRIVATE with this device as pgmap_owner); returns how many moved.
 * EINVAL at a page without VM_READ or vma, as dmirror's vma_lookup check does.
 *
 * @throws `TypeError` (`ERR_INVALID_ARG_TYPE`) / `RangeError` (`ERR_OUT_OF_RANGE`) for bad
 * arguments (an empty range included, as the ioctl refuses it), `ERR_REGION_CLOSED` /
 * `ERR_DEVICE_CLOSED`, and the SystemErrors above (`syscall: 'ioctl(HMM_DMIRROR_…)'`).
 */
export function mirrorMigrateToSys(
  region: Region,
  first: number,
  count: number,
  device: Device,
): {
  /** Pages migrated back to system memory (cmd.cpages). */
  cpages: number;
} {
  const [r, f, c, d] = checkArgs(region, first, count, device);
  const flags = vmaFlags(r, f, c);
  let cpages = 0;
  for (let p = f; p < f + c; p++) {
    if ((flags[p - f] & VM_READ) === 0) throw mirrorError(EINVAL, 'MIGRATE_TO_SYS', `page ${p} has no readable vma`, MAKE_READABLE);
    if (!onDevice(r, p, d)) continue;
    let q = p + 1;
    while (q < f + c && (flags[q - f] & VM_READ) !== 0 && onDevice(r, q, d)) q++;
    cpages += r.migrateToRam(p, q - p);
    p = q - 1;
  }
  return { cpages };
}
