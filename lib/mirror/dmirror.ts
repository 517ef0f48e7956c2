// The dmirror driver's command plumbing (lib/test_hmm.c): argument checks, the errors its ioctls
// return, the vma permissions hmm_range_fault checks, and the page-table reads every command makes.
import { readFileSync } from 'node:fs';

import { native } from '../native.js';
import { UffdHmmError, UffdSystemError, deviceClosed, invalidType, regionClosed } from '../errors.js';
import { integer } from '../validate.js';
import { DEVICE_SHIFT, KIND_DEVICE, KIND_MASK, MAX_DEVICE_SLOT, stateIndex } from '../layout.js';
import { lockPage, release } from '../pagelock.js';
import { Device } from '../device.js';
import { FIX_PRIVILEGE } from '../probe.js';
import { Region } from '../region.js';

/** What {@link mirrorWrite} reports, as dmirror fills `struct hmm_dmirror_cmd`. */
export interface MirrorWriteResult {
  /** Pages the device wrote (cmd.cpages). */
  cpages: number;
  /** hmm_range_fault passes the device needed (cmd.faults). */
  faults: number;
}

/** What {@link mirrorRead} reports: the command's counters and the bytes the device read. */
export interface MirrorReadResult extends MirrorWriteResult {
  /** What the device read: `count` pages, as the dmirror bounce buffer. */
  data: Uint8Array;
}

/** What {@link mirrorMigrate} and {@link mirrorExclusive} report: the pages the device maps, and their bytes. */
export interface MirrorMigrateResult {
  /** Pages of the range the device now maps (cmd.cpages). */
  cpages: number;
  /** The device's copy of them, read back as dmirror_migrate_to_device does. */
  data: Uint8Array;
}

export const EPERM = 1;
export const ENOENT = 2;
export const ENOMEM = 12;
export const EFAULT = 14;
export const EINVAL = 22;

export const VM_READ = 1;
export const VM_WRITE = 2;

export function mirrorError(errno: number, op: string, context: string, hint: string): UffdSystemError {
  return new UffdSystemError(-errno, `ioctl(HMM_DMIRROR_${op})`, context, hint);
}

// The next steps of the mirror's errors, as dmirror's callers would take them.
export const MAKE_READABLE = "mprotect it 'read' or 'readwrite' first, or leave it out of the range";
export const MAKE_WRITABLE = "mprotect it 'readwrite' first, or leave it out of the range";
export const UNFAULTABLE =
  'a page whose driver refused its fault (each access asks the driver again) or one unmapped behind the library ' +
  'cannot be reached; leave it out of the range, or try again once the driver accepts';

/** "page 3" or "pages 3..9", for error contexts. */
export function pageSpan(first: number, count: number): string {
  return count === 1 ? `page ${first}` : `pages ${first}..${first + count - 1}`;
}

export function checkArgs(region: unknown, first: unknown, count: unknown, device: unknown): [Region, number, number, Device] {
  if (!(region instanceof Region)) throw invalidType('region', 'a Region', region);
  if (region.closed) throw regionClosed();
  if (!(device instanceof Device)) throw invalidType('device', 'a Device', device);
  if (device.closed) throw deviceClosed(device.name);
  // The ioctls refuse an empty range (addr >= addr + npages * PAGE_SIZE is EINVAL): so do we.
  const f = integer('first', first, 0, region.pages - 1);
  const c = integer('count', count, 1, region.pages - f);
  return [region, f, c, device];
}

/**
 * The device's accesses outside its own memory are kernel-mode faults: only a servicer on a full
 * (not user-mode-only) userfaultfd, off the faulting thread, can serve them.
 */
export function checkKernelAccess(region: Region, op: string): void {
  if (region.userModeOnly) {
    throw new UffdHmmError(
      'ERR_SERVICER_UNSUPPORTED',
      `HMM_DMIRROR_${op} faults pages in from the kernel side, which this process's user-mode-only userfaultfd cannot serve; ` +
        `it needs full userfaultfd: ${FIX_PRIVILEGE}`,
    );
  }
  if (region.servicer === 'inline') {
    throw new UffdHmmError(
      'ERR_SERVICER_UNSUPPORTED',
      `HMM_DMIRROR_${op} faults pages in from the kernel side, which the 'inline' servicer cannot serve; map the region with servicer 'worker' or 'native'`,
    );
  }
}

/** VM_READ / VM_WRITE of every page of the range as /proc/self/maps shows its vmas; 0 = no vma or PROT_NONE. */
export function vmaFlags(region: Region, first: number, count: number): Uint8Array {
  const ps = BigInt(region.pageSize);
  const start = region.address + BigInt(first) * ps;
  const end = start + BigInt(count) * ps;
  const out = new Uint8Array(count);
  for (const line of readFileSync('/proc/self/maps', 'latin1').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (.)(.)/.exec(line);
    if (!m) continue;
    const lo = BigInt('0x' + m[1]);
    const hi = BigInt('0x' + m[2]);
    if (hi <= start || lo >= end) continue;
    const flags = (m[3] === 'r' ? VM_READ : 0) | (m[4] === 'w' ? VM_WRITE : 0);
    const a = Number(((lo > start ? lo : start) - start) / ps);
    const b = Number(((hi < end ? hi : end) - start) / ps);
    out.fill(flags, a, b);
  }
  return out;
}

/** The device slot a device entry's state word names. */
export const slotOf = (s: number) => (s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT;

/** The page's state word (LOCKED clear) and device pfn, read under its lock so that the two agree. */
export function readEntry(region: Region, page: number): { state: number; pfn: number } {
  const shared = region.shared;
  const s = lockPage(shared, page);
  const pfn = shared[stateIndex(page) + 1];
  release(shared, page, s); // a zap that came meanwhile is applied, not lost
  return { state: s, pfn };
}

/** Whether the page holds a device entry on `device` (read under its lock). */
export function onDevice(region: Region, page: number, device: Device): boolean {
  const { state } = readEntry(region, page);
  return (state & KIND_MASK) === KIND_DEVICE && slotOf(state) === device.slot;
}

/** Reads back what the device maps of the range (dmirror_do_read after a migration): ENOENT at the first page it does not. */
export function bounce(region: Region, first: number, count: number, device: Device, op: string): Uint8Array {
  const ps = region.pageSize;
  const data = new Uint8Array(count * ps);
  for (let p = first; p < first + count; p++) {
    const shared = region.shared;
    const s = lockPage(shared, p);
    try {
      if ((s & KIND_MASK) !== KIND_DEVICE || slotOf(s) !== device.slot) {
        throw mirrorError(
          ENOENT,
          op,
          `page ${p} is not on device ${device.name}`,
          'it stayed on another device or the device is full; migrate it with region.migrate(), or free device pages first',
        );
      }
      native.deviceRead(device.slot, shared[stateIndex(p) + 1], data.subarray((p - first) * ps, (p - first + 1) * ps));
    } finally {
      release(shared, p, s);
    }
  }
  return data;
}

/** HMM_DMIRROR_FLAG_FAIL_ALLOC: the next huge allocation fails (see `Device.failNextHugeAllocation`). */
export const HMM_DMIRROR_FLAG_FAIL_ALLOC = 0x1;

/**
 * HMM_DMIRROR_FLAGS: sets dmirror's one-shot test flags on `device`. The only flag is
 * HMM_DMIRROR_FLAG_FAIL_ALLOC; other bits are EINVAL, as the driver answers unknown ones.
 *
 * @throws `ERR_DEVICE_CLOSED` for a closed device, whatever the flags.
 */
export function mirrorFlags(device: Device, flags: number): void {
  if (!(device instanceof Device)) throw invalidType('device', 'a Device', device);
  if (device.closed) throw deviceClosed(device.name);
  const f = integer('flags', flags, 0, 0x7fffffff);
  if ((f & ~HMM_DMIRROR_FLAG_FAIL_ALLOC) !== 0) throw mirrorError(EINVAL, 'FLAGS', `unknown flags 0x${f.toString(16)}`, 'pass HMM_DMIRROR_FLAG_FAIL_ALLOC or 0');
  if ((f & HMM_DMIRROR_FLAG_FAIL_ALLOC) !== 0) device.failNextHugeAllocation();
}
