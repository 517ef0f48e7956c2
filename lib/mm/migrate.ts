// Migration between system memory and device memory (mm/migrate_device.c): migrate_vma to a
// device (collect, allocate, unmap, copy, finalize), and back to system memory without a fault.
import { native, PAGE_SIZE } from '../native.js';
import { deviceClosed, invalidType } from '../errors.js';
import { optionalBoolean, optionsObject, pageRange } from '../validate.js';
import {
  DEVICE_SHIFT,
  DEV_MIGRATED_TO_DEVICE,
  DEV_MIGRATED_TO_RAM,
  HUGE,
  KIND_DEVICE,
  KIND_MASK,
  KIND_NONE,
  KIND_POISON,
  KIND_PRESENT,
  MAX_DEVICE_SLOT,
  PMD_SIZE,
  STAT_MIGRATED_BACK,
  UNMAPPED,
  WRITE,
  stateIndex,
} from '../layout.js';
import { forRuns, forgetZap, lockPage, publish, release, retry, tryLockPage, zapPendingAt } from '../pagelock.js';
import { Device, deviceBySlot } from '../device.js';
import { MAX_FAULT_AROUND } from './backing.js';
import { pmdBlockStart, thpBlocks } from './huge.js';
import { PROT_READ, PROT_WRITE, protOf } from './mprotect.js';
import { PM_FILE, PM_PRESENT, PM_UFFD_WP } from './proc.js';
import { settleZaps, zapLocked } from './zap.js';
import { pageSpan, type RegionCore } from './vma.js';
import type { Region } from '../region.js';


/** Options of {@link Region#migrate}. */
export interface MigrateOptions {
  /** Force write (true) or read (false) device entries; default: as the page was mapped. */
  write?: boolean;
}

/** Migrates pages to `device` (Region#migrate): migrate_vma_setup, _pages and _finalize in one. */
export function migrateToDevice(core: RegionCore, first: number, count: number, device: Device, options: MigrateOptions | undefined): number {
  const [f, c] = pageRange(first, count, core.pages);
  if (!(device instanceof Device)) throw invalidType('device', 'a Device', device);
  if (device.closed) throw deviceClosed(device.name);
  const opts = optionsObject('options', options);
  const forceWrite = optionalBoolean('options.write', opts.write);
  // Shared memory never migrates (migrate_vma_pages keeps pages that have a mapping), nor does
  // hugetlb memory (migrate_vma_setup refuses the vma).
  if (c === 0 || core.mapping !== 'private-anonymous' && core.mapping !== 'private-file') return 0;
  // In a private file mapping only anonymous pages (the CPU's private copies) migrate; holes and
  // pages still backed by the file are skipped (migrate_vma_collect_hole, page_mapping()).
  let kernelView: BigUint64Array | undefined;
  if (core.mapping === 'private-file') {
    kernelView = new BigUint64Array(c);
    native.regionPagemap(core.handle, f, c, kernelView);
  }
  core.servicerHost?.ensureDevice(device);
  core.devices.add(device);
  device.addHolder(core.owner);
  device.collectFrees(); // pageFree hooks that are due run now, before any page is locked

  const shared = core.shared;
  const pfns = new Int32Array(c).fill(-1); // new device page per page, -1 = not moving, -2 = rolled back
  const old = new Int32Array(c); // state word before the lock
  let locked = 0; // pages [f, f+locked) are locked
  let onDevice = 0;
  // THPs move whole into a huge device page each (block's first page → its first pfn); a THP the
  // device cannot take whole is split and moves as base pages (migrate_vma's fallback).
  const hugeN = PMD_SIZE / PAGE_SIZE;
  const hugeBase = new Map<number, number>();
  if (core.thp) {
    for (const b of thpBlocks(core.handle, core.address, f, c)) {
      const base = device.allocHugePage(hugeN);
      if (base >= 0) hugeBase.set(b, base);
    }
  }
  const hugeBlockOf = (page: number): number => pmdBlockStart(core.address, page);
  /** Gives back the pfns of huge device pages whose block is not moving whole; the whole ones. */
  const releaseHuge = (): Set<number> => {
    const whole = new Set<number>();
    const moving = (b: number, i: number) => b + i - f < locked && pfns[b + i - f] === hugeBase.get(b)! + i;
    for (const [b, base] of hugeBase) {
      let all = true;
      for (let i = 0; i < hugeN && all; i++) all = moving(b, i);
      if (all) whole.add(b);
      else for (let i = 0; i < hugeN; i++) if (!moving(b, i)) device.putPage(base + i);
    }
    return whole;
  };
  const writeProtected = new Uint8Array(c); // stopped writers: let in again if the page stays
  let finished = 0; // on failure, pages [f, f+finished) finish their migration (their CPU copy is gone)
  let error: unknown;
  try {
    for (; locked < c; locked++) {
      const page = f + locked;
      const s = lockPage(shared, page);
      old[locked] = s;
      const kind = s & KIND_MASK;
      if (kind === KIND_DEVICE && ((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT) === device.slot) {
        onDevice++;
        continue;
      }
      if (kind === KIND_POISON || (s & UNMAPPED) !== 0 || (protOf(core, page) & PROT_READ) === 0) continue;
      if (kernelView !== undefined && kind !== KIND_DEVICE) {
        const e = kernelView[locked];
        if ((e & PM_PRESENT) === 0n || (e & PM_FILE) !== 0n) continue;
        // A private copy the kernel made without asking us (a write to a page the file backs, or
        // to one we mapped read-only from it): from here on the table knows it, writable unless
        // we write-protected it ourselves.
        if (kind === KIND_NONE || ((s & WRITE) === 0 && (e & PM_UFFD_WP) === 0n)) {
          old[locked] = KIND_PRESENT | WRITE | (s & ~KIND_MASK);
        }
      }
      const hb = hugeBase.size > 0 ? hugeBase.get(hugeBlockOf(page)) : undefined;
      const pfn = hb !== undefined ? hb + (page - hugeBlockOf(page)) : device.allocPage();
      if (pfn < 0) {
        // The device is full: this page and the rest stay where they are.
        release(core.shared, page, s);
        break;
      }
      pfns[locked] = pfn;
    }
    const cpuPage = (i: number) => pfns[i] >= 0 && (old[i] & KIND_MASK) === KIND_PRESENT;
    // Stop writers first (the migration entry), then copy, then free the CPU pages.
    forRuns(f, locked, cpuPage, (a, n) => {
      retry(core.shared, () => native.regionWriteProtect(core.handle, a, n, true, false), 'ioctl(UFFDIO_WRITEPROTECT)', `write-protecting ${pageSpan(a, n)} to migrate them`);
      writeProtected.fill(1, a - f, a - f + n);
    });
    const cpuPfns = new Int32Array(locked);
    for (let i = 0; i < locked; i++) {
      const kind = old[i] & KIND_MASK;
      cpuPfns[i] = pfns[i] >= 0 && (kind === KIND_PRESENT || kind === KIND_NONE) ? pfns[i] : -1;
    }
    native.regionCopyOut(core.handle, f, locked, device.slot, cpuPfns);
    for (let i = 0; i < locked; i++) {
      if (pfns[i] < 0 || (old[i] & KIND_MASK) !== KIND_DEVICE) continue;
      // The old device page is put only once the migration cannot be rolled back any more.
      native.deviceCopyPage((old[i] >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT, shared[stateIndex(f + i) + 1], device.slot, pfns[i]);
    }
    forRuns(f, locked, cpuPage, (a, n) => zapLocked(core, a, n, false, () => (finished = a + n - f)));
    finished = locked;
  } catch (e) {
    // Pages whose CPU copy is gone finish their migration (their bytes are on the device); the
    // others roll back: new device page given back, writers let in again, the entry as it was.
    error = e;
    for (let i = finished; i < locked; i++) {
      if (pfns[i] >= 0 && !hugeBase.has(hugeBlockOf(f + i))) device.putPage(pfns[i]); // huge ones: releaseHuge
      pfns[i] = -2;
    }
    forRuns(f, locked, (i) => pfns[i] === -2 && writeProtected[i] === 1 && (old[i] & WRITE) !== 0, (a, n) => {
      // Best effort: a page left write-protected only costs its next write a fault that un-protects it.
      native.regionWriteProtect(core.handle, a, n, false, false);
    });
  }
  const hugeWhole = releaseHuge();
  let moved = 0;
  settleZaps(core);
  for (let i = 0; i < locked; i++) {
    const page = f + i;
    const s = old[i];
    const kind = s & KIND_MASK;
    if (pfns[i] === -2) {
      release(core.shared, page, s);
      continue;
    }
    // If someone zapped the page while we held it, whatever it held, and the device page we
    // copied it to, is dropped, as zap_pte_range would drop the entry we were making.
    const oldPfn = shared[stateIndex(page) + 1];
    if (pfns[i] < 0) {
      // Already on this device: only a forced read downgrades it (make_device_entry_read).
      if (!publish(core.shared, page, kind === KIND_DEVICE && forceWrite === false ? s & ~WRITE : s) && kind === KIND_DEVICE) {
        const slot = (s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT;
        deviceBySlot(slot)!.putPage(oldPfn);
        if (slot === device.slot) onDevice--; // zapped: no longer on the device
      }
      continue;
    }
    // As the pte was: writable only if the vma allows writes and the page was writable.
    const writable = (protOf(core, page) & PROT_WRITE) !== 0;
    const write = forceWrite ?? (writable && (kind === KIND_NONE || (s & WRITE) !== 0));
    shared[stateIndex(page) + 1] = pfns[i];
    const huge = hugeWhole.size > 0 && hugeWhole.has(hugeBlockOf(page)) ? HUGE : 0;
    if (publish(core.shared, page, KIND_DEVICE | (write ? WRITE : 0) | huge | (device.slot << DEVICE_SHIFT))) moved++;
    else device.putPage(pfns[i]);
    // Device to device: the old page goes, zapped or not (the entry naming it is gone either way).
    if (kind === KIND_DEVICE) deviceBySlot((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT)!.putPage(oldPfn);
  }
  Atomics.add(device.shared, DEV_MIGRATED_TO_DEVICE, moved);
  if (error !== undefined) throw error;
  return onDevice + moved;
}

/** Migrates the range's device-resident pages back to system memory (Region#migrateToRam). */
export function migrateToRam(core: RegionCore, first: number, count: number): number {
  const [f, c] = pageRange(first, count, core.pages);
  return migrateBack(core, f, c, undefined);
}

/** Device removal: brings back every page the region holds on `device`. */
export function evictDevice(core: RegionCore, device: Device): void {
  migrateBack(core, 0, core.pages, device);
  core.devices.delete(device);
}

/**
 * The driver-initiated migration back to system memory of the device pages of [f, f + c) (all
 * devices', or only those of `only`): a run of entries of one kind naming consecutive device pages
 * comes back in one UFFDIO_COPY, and the threads that faulted on them meanwhile are woken.
 */
export function migrateBack(core: RegionCore, f: number, c: number, only: Device | undefined): number {
  const shared = core.shared;
  let moved = 0;
  for (let page = f; page < f + c; ) {
    const s = lockPage(shared, page);
    const slot = (s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT;
    if ((s & KIND_MASK) !== KIND_DEVICE || (only !== undefined && only.slot !== slot)) {
      release(core.shared, page, s);
      page++;
      continue;
    }
    const device = deviceBySlot(slot)!;
    const pfn = shared[stateIndex(page) + 1];
    const write = (s & WRITE) !== 0;
    // A run of entries of the same kind naming consecutive device pages comes back in one COPY.
    // It grows only over pages nobody holds: waiting for one while holding the run could time out
    // with the run held; the next round waits for that page with nothing else held.
    let k = 1;
    while (k < MAX_FAULT_AROUND && page + k < f + c && pfn + k < device.capacity) {
      const sq = tryLockPage(shared, page + k);
      if (sq < 0) break;
      if (sq !== s || shared[stateIndex(page + k) + 1] !== pfn + k) {
        release(core.shared, page + k, sq);
        break;
      }
      k++;
    }
    try {
      // One COPY for the run; page by page where it crosses a vma boundary (mprotect split it) or
      // part of it is there already (EEXIST): the engine's fill (native/fault.cc fillFromDevice).
      retry(core.shared, () => native.regionFillFromDevice(core.handle, page, k, slot, pfn, !write), 'ioctl(UFFDIO_COPY)', `migrating ${pageSpan(page, k)} back to system memory`);
    } catch (e) {
      for (let i = 0; i < k; i++) release(core.shared, page + i, s);
      throw e;
    }
    // Someone may have zapped these pages meanwhile, and the kernel's zap may have come before
    // our fill: then the bytes we put back must go again, and the pages end up none. Where the
    // kernel refuses that madvise, it changed nothing: those pages keep the bytes and are present.
    settleZaps(core);
    let error: unknown;
    forRuns(page, k, (i) => zapPendingAt(shared, page + i), (a, n) => {
      let zapped = false;
      try {
        if (error === undefined) zapLocked(core, a, n, false, () => (zapped = true));
      } catch (e) {
        error = e;
      }
      if (!zapped) for (let p = a; p < a + n; p++) forgetZap(shared, p);
    });
    for (let i = 0; i < k; i++) {
      shared[stateIndex(page + i) + 1] = 0;
      publish(core.shared, page + i, KIND_PRESENT | (write ? WRITE : 0));
      device.putPage(pfn + i);
    }
    Atomics.add(shared, STAT_MIGRATED_BACK, k);
    Atomics.add(device.shared, DEV_MIGRATED_TO_RAM, k);
    // Threads that faulted on these pages while they were locked resume only now, on published state.
    native.regionWake(core.handle, page, k);
    moved += k;
    page += k;
    if (error !== undefined) throw error;
  }
  return moved;
}
