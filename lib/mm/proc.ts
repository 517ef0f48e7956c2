// The /proc views of a region (fs/proc/task_mmu.c): its entries, dmirror's snapshot, pagemap and
// smaps, the kernel's own words with our device entries put in, and their public constants.
import { readFileSync } from 'node:fs';

import { native } from '../native.js';
import { UffdHmmError, deviceClosed, invalidType } from '../errors.js';
import { integer, pageRange } from '../validate.js';
import {
  DEVICE_SHIFT,
  HUGE,
  KIND_DEVICE,
  KIND_MASK,
  KIND_POISON,
  KIND_PRESENT,
  MAX_DEVICE_SLOT,
  REGION_HEADER,
  STAT_FAULTS,
  STAT_KERNEL_FAULTS,
  STAT_FILL_RACED,
  STAT_FILL_RETRIES,
  STAT_JS_ENTRIES,
  STAT_MIGRATED_BACK,
  STAT_WP_FAULTS,
  STAT_WRITE_FAULTS,
  UNMAPPED,
  WRITE,
  stateIndex,
} from '../layout.js';
import { Device, deviceBySlot } from '../device.js';
import { SWP_HWPOISON, makeDeviceEntry } from '../entry.js';
import { summary, type InspectOptionsStylized } from '../inspect.js';
import { hugeEntryAt, hugeLevel } from './huge.js';
import { PROT_READ, PROT_WRITE, protOf } from './mprotect.js';
import type { RegionCore } from './vma.js';
import type { Region } from '../region.js';

/**
 * A page's entry in the region's page table, as {@link Region#entry} reads it; branch on `kind`:
 * - `'none'`: no page: never touched, or discarded (`pte_none`). A read maps the zero page.
 * - `'present'`: a CPU page in system memory; `write` says whether the pte is writable (false
 *   after a read entry came back, or under `mprotect(…, 'read')`).
 * - `'device'`: a device entry (`make_device_entry`): the data is in `device`'s memory at `pfn`,
 *   and the next CPU access faults it back. `write` distinguishes a write entry
 *   ({@link SWP_DEVICE_WRITE}) from a read entry ({@link SWP_DEVICE}).
 * - `'poison'`: hardware poison (S8): every access raises SIGBUS until {@link Region#discard}
 *   clears it. A driver's refusal never leaves one: the entry stays a device entry.
 */
export type Entry =
  | {
      /** No page: never touched, or discarded. */
      kind: 'none';
    }
  | {
      /** A CPU page in system memory. */
      kind: 'present';
      /** The pte is writable (false: the next write takes a write-protect fault, or mprotect forbids it). */
      write: boolean;
    }
  | {
      /** A device entry: the page's data is in device memory. */
      kind: 'device';
      /** A write entry (`SWP_DEVICE_WRITE`), else a read entry (`SWP_DEVICE`): the page comes back write-protected. */
      write: boolean;
      /** The device that holds the page. */
      device: Device;
      /** The device page the entry names (`device_entry_to_pfn`); pass it to {@link Device#read} / {@link Device#write}. */
      pfn: number;
    }
  | {
      /** Poisoned: a driver refused a fault on it; accesses raise SIGBUS. */
      kind: 'poison';
    };

// HMM_DMIRROR_PROT_* of lib/test_hmm_uapi.h: one byte per page in a snapshot (region.snapshot,
// mirrorSnapshot). The low bits are the access, the high ones where the page is.

/** Snapshot byte: the page cannot be accessed (no vma, PROT_NONE, or poisoned). Not a flag: the whole byte. */
export const HMM_DMIRROR_PROT_ERROR = 0xff;
/** Snapshot byte: nothing mapped (never touched or discarded). */
export const HMM_DMIRROR_PROT_NONE = 0x00;
/** Snapshot flag: the page is mapped readable. */
export const HMM_DMIRROR_PROT_READ = 0x01;
/** Snapshot flag: the page is mapped writable. */
export const HMM_DMIRROR_PROT_WRITE = 0x02;
/** Snapshot flag: mapped by a PMD: a 2 MiB hugetlb page, or a whole huge device entry (a THP migrated whole); a THP in system memory shows page by page, without it. */
export const HMM_DMIRROR_PROT_PMD = 0x04;
/** Snapshot flag: mapped by a PUD: a 1 GiB hugetlb page (only where that is the default huge page size). */
export const HMM_DMIRROR_PROT_PUD = 0x08;
/** Snapshot flag: the shared zero page is mapped (a read of a hole), with READ. */
export const HMM_DMIRROR_PROT_ZERO = 0x10;
/** Snapshot flags: a device entry on the device asked about (or on any device when none was given), with READ or WRITE. */
export const HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL = 0x20;
/** Snapshot flags: a device entry on another device, with READ or WRITE; test with `(b & 0x30) === 0x30`. */
export const HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE = 0x30;

// /proc/PID/pagemap bits (Documentation/admin-guide/mm/pagemap.rst), as region.pagemap() returns them.

/** Pagemap bit 63: a CPU page is present; bits 0–54 are its frame number (0 without CAP_SYS_ADMIN). */
export const PM_PRESENT = 1n << 63n;
/** Pagemap bit 62: swapped, or a device entry; bits 0–4 are the swap type ({@link SWP_DEVICE_WRITE}, {@link SWP_DEVICE}), bits 5–54 the offset (the device pfn). */
export const PM_SWAP = 1n << 62n;
/** Pagemap bit 61: a file page or shared anonymous page: set for `shared` and `file` regions' page-cache pages, never for private anonymous memory. */
export const PM_FILE = 1n << 61n;
/** Pagemap bit 57: the pte is userfaultfd write-protected (a page that came back from a read entry, before its first write). */
export const PM_UFFD_WP = 1n << 57n;
/** Pagemap bit 56: the page is mapped exactly once; for device entries, the device page's refcount is 1 (not shared by a fork). */
export const PM_MMAP_EXCLUSIVE = 1n << 56n;
/** Pagemap bit 55: the pte is soft-dirty, as the kernel reports it. */
export const PM_SOFT_DIRTY = 1n << 55n;

/** Counters of {@link Region#stats}: they only go up, from 0 when the region was mapped. */
export interface RegionStats {
  /** Faults served (missing and write-protect). */
  faults: number;
  /** Of those, write accesses. */
  writeFaults: number;
  /** Write-protect faults: the first write to a page that came back from a read entry. */
  wpFaults: number;
  /** Faults taken inside system calls; counted when the region was mapped with countKernelFaults. */
  kernelFaults: number;
  /** Pages migrated back to system memory, by faults or migrateToRam. */
  migratedBack: number;
}

/**
 * How the region's faults were served, beyond what {@link RegionStats} counts (Region#servicerStats):
 * counters that only go up, for benchmarks and for telling a slow servicer from a slow host.
 */
export interface ServicerStats {
  /**
   * Times the worker servicer's JS got control back after its native poller read this region's
   * faults: once per fault a driver's `fault` hook decides, otherwise only at the end of a time
   * slice (every 250 ms or so) or when messages reach the worker. 0 under the native and inline
   * servicers, which have no JS.
   */
  jsEntries: number;
  /** Fills refused with EAGAIN because the mm was changing (an event not read yet), and tried again. */
  fillRetries: number;
  /** Fills that found the page already there (another path filled it first): the thread was only woken. */
  fillRaced: number;
}

/** The region's servicer counters (Region#servicerStats), from its header; readable after close. */
export function servicerStats(s: Int32Array): ServicerStats {
  return {
    jsEntries: Atomics.load(s, STAT_JS_ENTRIES) >>> 0,
    fillRetries: Atomics.load(s, STAT_FILL_RETRIES) >>> 0,
    fillRaced: Atomics.load(s, STAT_FILL_RACED) >>> 0,
  };
}

/** The region's fault counters (Region#stats), from its header; readable after close. */
export function regionStats(s: Int32Array): RegionStats {
  return {
    faults: Atomics.load(s, STAT_FAULTS) >>> 0,
    writeFaults: Atomics.load(s, STAT_WRITE_FAULTS) >>> 0,
    wpFaults: Atomics.load(s, STAT_WP_FAULTS) >>> 0,
    kernelFaults: Atomics.load(s, STAT_KERNEL_FAULTS) >>> 0,
    migratedBack: Atomics.load(s, STAT_MIGRATED_BACK) >>> 0,
  };
}

/** What util.inspect shows of a region (Region[inspect.custom]), as show_map_vma shows a vma. */
export function showRegion(core: RegionCore, closed: boolean, depth: number, options: InspectOptionsStylized): string {
  const address = `0x${core.address.toString(16)}`;
  return summary('Region', depth, options, address, () => ({
    address,
    pages: core.pages,
    servicer: core.servicer,
    mapping: core.mapping,
    ...(core.faultAround > 1 ? { faultAround: core.faultAround } : {}),
    ...(closed ? { closed: true } : {}),
  }));
}

/** The page's entry (Region#entry). */
export function entry(core: RegionCore, page: number): Entry {
  integer('page', page, 0, core.pages - 1);
  const s = Atomics.load(core.shared, stateIndex(page));
  switch (s & KIND_MASK) {
    case KIND_PRESENT:
      // The pte is writable only if the vma is (mprotect) and the page is not write-protected.
      return { kind: 'present', write: (s & WRITE) !== 0 && (protOf(core, page) & PROT_WRITE) !== 0 };
    case KIND_DEVICE: {
      const device = deviceBySlot((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT)!;
      return { kind: 'device', write: (s & WRITE) !== 0, device, pfn: Atomics.load(core.shared, stateIndex(page) + 1) };
    }
    case KIND_POISON:
      return { kind: 'poison' };
    default: {
      if (core.mapping === 'private-anonymous' || (s & UNMAPPED) !== 0) return { kind: 'none' };
      // Shared and file pages can be mapped from the page cache without a fault reaching us.
      const pm = new BigUint64Array(1);
      native.regionPagemap(core.handle, page, 1, pm);
      if ((pm[0] & PM_PRESENT) === 0n) return { kind: 'none' };
      const fileBacked = (pm[0] & PM_FILE) !== 0n && core.mapping === 'private-file';
      return { kind: 'present', write: !fileBacked && (protOf(core, page) & PROT_WRITE) !== 0 };
    }
  }
}

/** One HMM_DMIRROR_PROT_* byte per page (Region#snapshot). */
export function snapshot(core: RegionCore, first: number, count: number | undefined, device: Device | undefined): Uint8Array {
  const [f, c] = pageRange(first, count ?? core.pages - (typeof first === 'number' ? first : 0), core.pages);
  if (device !== undefined && !(device instanceof Device)) throw invalidType('device', 'a Device', device);
  // A closed device's slot may belong to a new device by now: comparing slots would call that
  // device's pages LOCAL to the closed one.
  if (device?.closed) throw deviceClosed(device.name);
  const out = new Uint8Array(c);
  const pm = new BigUint64Array(c);
  if (c > 0) native.regionPagemap(core.handle, f, c, pm);
  const zeroPfn = zeroPagePfn();
  const hugeSeen = new Map<number, boolean>();
  for (let i = 0; i < c; i++) {
    const page = f + i;
    const s = Atomics.load(core.shared, stateIndex(page));
    const rw = (s & WRITE) !== 0 ? HMM_DMIRROR_PROT_WRITE : HMM_DMIRROR_PROT_READ;
    if ((protOf(core, page) & PROT_READ) === 0 || (s & UNMAPPED) !== 0) {
      out[i] = HMM_DMIRROR_PROT_ERROR;
      continue;
    }
    switch (s & KIND_MASK) {
      case KIND_DEVICE: {
        const slot = (s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT;
        const local = device === undefined || device.slot === slot;
        out[i] = (local ? HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL : HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE) | rw;
        if ((s & HUGE) !== 0 && hugeEntryAt(core, page, hugeSeen)) out[i] |= HMM_DMIRROR_PROT_PMD;
        break;
      }
      case KIND_PRESENT: {
        const e = pm[i];
        if ((e & PM_PRESENT) === 0n) {
          out[i] = HMM_DMIRROR_PROT_NONE;
        } else if (zeroPfn !== 0n && (e & ((1n << 55n) - 1n)) === zeroPfn) {
          out[i] = HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ;
        } else {
          out[i] = (protOf(core, page) & PROT_WRITE) !== 0 ? rw : HMM_DMIRROR_PROT_READ;
        }
        break;
      }
      case KIND_POISON:
        out[i] = HMM_DMIRROR_PROT_ERROR;
        break;
      default: {
        // Shared and file pages can be mapped straight from the page cache, without a fault
        // reaching us: the kernel's pagemap tells (a file page is mapped read-only until COW).
        const e = core.mapping === 'private-anonymous' ? 0n : pm[i];
        if ((e & PM_PRESENT) === 0n) out[i] = HMM_DMIRROR_PROT_NONE;
        else if ((e & PM_FILE) !== 0n && core.mapping === 'private-file') out[i] = HMM_DMIRROR_PROT_READ;
        else out[i] = ((protOf(core, page) & PROT_WRITE) !== 0 ? HMM_DMIRROR_PROT_WRITE : HMM_DMIRROR_PROT_READ) | hugeLevel(core);
      }
    }
  }
  return out;
}

/** The pagemap words of the range, with device entries put in (Region#pagemap). */
export function pagemap(core: RegionCore, first: number, count: number | undefined): BigUint64Array {
  const [f, c] = pageRange(first, count ?? core.pages - (typeof first === 'number' ? first : 0), core.pages);
  const out = new BigUint64Array(c);
  if (c > 0) native.regionPagemap(core.handle, f, c, out);
  for (let i = 0; i < c; i++) {
    const s = Atomics.load(core.shared, stateIndex(f + i));
    if ((s & KIND_MASK) === KIND_POISON) {
      // make_hwpoison_entry: shown with the seed's SWP_HWPOISON type (the page has no frame left).
      out[i] = PM_SWAP | BigInt(SWP_HWPOISON);
      continue;
    }
    if ((s & KIND_MASK) !== KIND_DEVICE) continue;
    const pfn = Atomics.load(core.shared, stateIndex(f + i) + 1);
    const e = makeDeviceEntry(pfn, (s & WRITE) !== 0);
    const type = e >> 57n;
    const device = deviceBySlot((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT);
    const exclusive = device !== undefined && device.refcount(pfn) === 1 ? PM_MMAP_EXCLUSIVE : 0n;
    out[i] = PM_SWAP | exclusive | (type | (BigInt(pfn) << 5n));
  }
  return out;
}

/** Rss, Anonymous and Swap of the mapping, device pages counted as resident (Region#smaps). */
export function smaps(core: RegionCore): { rss: number; anonymous: number; swap: number; device: number } {
  const kb = readSmaps(core.address);
  let devicePages = 0;
  for (let p = 0; p < core.pages; p++) {
    if ((Atomics.load(core.shared, stateIndex(p)) & KIND_MASK) === KIND_DEVICE) devicePages++;
  }
  const device = devicePages * core.pageSize;
  return { rss: kb.rss + device, anonymous: kb.anonymous + device, swap: kb.swap, device };
}

let zeroPfnCache: bigint | undefined;
/** The shared zero page's frame (0n when pagemap hides frames, i.e. without CAP_SYS_ADMIN). */
function zeroPagePfn(): bigint {
  if (zeroPfnCache !== undefined) return zeroPfnCache;
  zeroPfnCache = 0n;
  try {
    const probeRegion = native.regionCreate({
      pages: 1,
      shared: new Int32Array(new SharedArrayBuffer((REGION_HEADER + 2) * 4)),
      servicer: 'native',
      allowUserModeOnly: true,
    });
    try {
      void new Uint8Array(probeRegion.bytes)[0]; // the native servicer maps the zero page
      const pm = new BigUint64Array(1);
      native.regionPagemap(probeRegion.handle, 0, 1, pm);
      if ((pm[0] & PM_PRESENT) !== 0n) zeroPfnCache = pm[0] & ((1n << 55n) - 1n);
    } finally {
      native.detachArrayBuffer(probeRegion.bytes);
      native.regionClose(probeRegion.handle);
    }
  } catch {
    zeroPfnCache = 0n;
  }
  return zeroPfnCache;
}

/** The kernel's Rss, Anonymous and Swap of the mapping that starts at `address`, in bytes. */
function readSmaps(address: bigint): { rss: number; anonymous: number; swap: number } {
  const text = readFileSync('/proc/self/smaps', 'utf8');
  const start = address.toString(16).padStart(8, '0');
  const at = text.search(new RegExp(`^0*${start.replace(/^0+/, '')}-`, 'm'));
  if (at < 0) {
    throw new UffdHmmError(
      'ERR_SMAPS',
      `region.smaps() found no /proc/self/smaps entry starting at the region's address 0x${start}: its first page was ` +
        'unmapped behind the library (munmap); use region.pagemap() or region.entry(), which work page by page',
    );
  }
  const next = text.slice(at).search(/\n[0-9a-f]+-[0-9a-f]+ /);
  const block = next < 0 ? text.slice(at) : text.slice(at, at + next + 1);
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(block);
    return m ? Number(m[1]) * 1024 : 0;
  };
  return { rss: field('Rss'), anonymous: field('Anonymous'), swap: field('Swap') };
}
