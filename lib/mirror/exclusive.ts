// Exclusive (atomic) device access, as make_device_exclusive (mm/rmap.c) gives dmirror:
// HMM_DMIRROR_EXCLUSIVE and HMM_DMIRROR_CHECK_EXCLUSIVE.
import { KIND_DEVICE, KIND_MASK, WRITE } from '../layout.js';
import { Device } from '../device.js';
import { Region } from '../region.js';
import {
  EFAULT,
  ENOMEM,
  EPERM,
  MAKE_WRITABLE,
  type MirrorMigrateResult,
  VM_READ,
  VM_WRITE,
  bounce,
  checkArgs,
  mirrorError,
  readEntry,
  slotOf,
  vmaFlags,
} from './dmirror.js';

/** Atomic (exclusive) mappings per device and region: the state word and pfn each page had when taken. */
const atomicMaps = new WeakMap<Device, WeakMap<Region, Map<number, { state: number; pfn: number }>>>();

/**
 * HMM_DMIRROR_EXCLUSIVE: the device takes exclusive (atomic) access to the pages, and reads them.
 * make_device_exclusive() faults each page in for writing and takes it away from the CPU until the
 * CPU touches it again, which revokes the device's access. Modelled here with the one mechanism we
 * have for a page the CPU cannot touch: a write entry on `device`. A CPU access migrates it back
 * and so revokes the atomic mapping; fork and mprotect turn it into a read entry, which revokes it
 * too (the kernel's mmu notifier fires for both). EFAULT without VM_READ and VM_WRITE (the
 * FOLL_WRITE get_user_pages fails), ENOMEM when the device is full.
 *
 * @throws `TypeError` (`ERR_INVALID_ARG_TYPE`) / `RangeError` (`ERR_OUT_OF_RANGE`) for bad
 * arguments (an empty range included, as the ioctl refuses it), `ERR_REGION_CLOSED` /
 * `ERR_DEVICE_CLOSED`, and the SystemErrors above (`syscall: 'ioctl(HMM_DMIRROR_…)'`).
 */
export function mirrorExclusive(region: Region, first: number, count: number, device: Device): MirrorMigrateResult {
  const [r, f, c, d] = checkArgs(region, first, count, device);
  const flags = vmaFlags(r, f, c);
  for (let i = 0; i < c; i++) {
    if ((flags[i] & (VM_READ | VM_WRITE)) !== (VM_READ | VM_WRITE)) {
      throw mirrorError(EFAULT, 'EXCLUSIVE', `page ${f + i} is not readable and writable`, MAKE_WRITABLE);
    }
  }
  // A page on another device, or a read entry here, is first faulted back (FOLL_WRITE would).
  for (let p = f; p < f + c; p++) {
    const s = readEntry(r, p).state;
    if ((s & KIND_MASK) === KIND_DEVICE && (slotOf(s) !== d.slot || (s & WRITE) === 0)) r.migrateToRam(p, 1);
  }
  const got = r.migrate(f, c, d, { write: true });
  if (got < c) {
    throw mirrorError(
      ENOMEM,
      'EXCLUSIVE',
      `device ${d.name} holds only ${got} of ${c} pages`,
      'the device is full; free device pages (migrateToRam, discard, close regions) or use a larger capacity',
    );
  }
  let perRegion = atomicMaps.get(d);
  if (!perRegion) atomicMaps.set(d, (perRegion = new WeakMap()));
  let map = perRegion.get(r);
  if (!map) perRegion.set(r, (map = new Map()));
  for (let p = f; p < f + c; p++) {
    map.set(p, readEntry(r, p));
  }
  return { cpages: c, data: bounce(r, f, c, d, 'EXCLUSIVE') };
}

/**
 * HMM_DMIRROR_CHECK_EXCLUSIVE: EPERM while the device still holds atomic access to a page of the
 * range (its entry unchanged since mirrorExclusive), nothing once the CPU has revoked it everywhere.
 *
 * @throws `TypeError` (`ERR_INVALID_ARG_TYPE`) / `RangeError` (`ERR_OUT_OF_RANGE`) for bad
 * arguments (an empty range included, as the ioctl refuses it), `ERR_REGION_CLOSED` /
 * `ERR_DEVICE_CLOSED`, and the SystemErrors above (`syscall: 'ioctl(HMM_DMIRROR_…)'`).
 */
export function mirrorCheckExclusive(region: Region, first: number, count: number, device: Device): void {
  const [r, f, c, d] = checkArgs(region, first, count, device);
  const map = atomicMaps.get(d)?.get(r);
  if (!map) return;
  for (let p = f; p < f + c; p++) {
    const m = map.get(p);
    if (!m) continue;
    const now = readEntry(r, p);
    if (now.state === m.state && now.pfn === m.pfn) {
      throw mirrorError(
        EPERM,
        'CHECK_EXCLUSIVE',
        `device ${d.name} still has atomic access to page ${p}`,
        'a CPU access to the page (or mprotect, or fork) revokes it',
      );
    }
    map.delete(p); // revoked: the kernel's notifier dropped it from the device page table
  }
}
