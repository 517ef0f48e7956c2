// A pure-TypeScript reference model of the kernel rules uffd-hmm emulates (SEMANTICS.md S1-S5, S11,
// S12): page entries, device pages with refcounts, stats and every byte. No I/O, no library code.
//
// The model is written from the semantics, not from the implementation: where the two disagree
// the differential test (model.test.ts) reports it. Device page numbers here are ids that are never
// reused; the test compares them with the real pfns only up to a consistent renaming.

export const PAGE_SIZE = 4096;

export type Prot = 'none' | 'read' | 'readwrite';

export type MEntry =
  | { kind: 'none' }
  /**
   * write: not write-protected (the pte is writable if the vma allows it too); zero: the shared
   * zero page is mapped (a read of a hole), so the snapshot says ZERO.
   */
  | { kind: 'present'; write: boolean; zero: boolean }
  /** huge: part of a huge device entry (a THP migrated whole); its block's ids are consecutive. */
  | { kind: 'device'; write: boolean; dev: number; id: number; huge?: boolean };

export interface MDevicePage {
  bytes: Uint8Array;
  refs: number;
}

export interface MDevice {
  open: boolean;
  capacity: number;
  pages: Map<number, MDevicePage>;
  stats: { faults: number; migratedToDevice: number; migratedToRam: number; freed: number };
}

export interface MRegionStats {
  faults: number;
  writeFaults: number;
  wpFaults: number;
  kernelFaults: number;
  migratedBack: number;
}

export interface MRegion {
  open: boolean;
  pages: number;
  entries: MEntry[];
  prot: Prot[];
  /** What the CPU would read from each page (device pages: see the device's bytes). */
  bytes: Uint8Array[];
  stats: MRegionStats;
}

export type MChildStep =
  | { op: 'read'; page: number; offset: number }
  | { op: 'write'; page: number; offset: number; value: number }
  | { op: 'checksum'; first: number; count: number };

let nextId = 1;

/** 4 KiB pages per PMD: a THP, a huge device entry. */
export const PMD_PAGES = 512;

/** How a kernel-mode access (write(2) from the region) ends: the bytes it read, or the errno. */
export type SyscallResult = number[] | 'EFAULT';


export class Model {
  readonly devices: MDevice[] = [];
  region: MRegion;

  constructor(pages: number, capacities: number[]) {
    for (const capacity of capacities) this.devices.push(Model.newDevice(capacity));
    this.region = Model.newRegion(pages);
  }

  /** A deep copy: each order a racing zap may have taken is tried on one (runner.ts). */
  clone(): Model {
    const m = new Model(0, []);
    m.devices.push(...structuredClone(this.devices));
    m.region = structuredClone(this.region);
    return m;
  }

  static newDevice(capacity: number): MDevice {
    return { open: true, capacity, pages: new Map(), stats: { faults: 0, migratedToDevice: 0, migratedToRam: 0, freed: 0 } };
  }

  static newRegion(pages: number): MRegion {
    return {
      open: true,
      pages,
      entries: Array.from({ length: pages }, () => ({ kind: 'none' }) as MEntry),
      prot: Array.from({ length: pages }, () => 'readwrite' as Prot),
      bytes: Array.from({ length: pages }, () => new Uint8Array(PAGE_SIZE)),
      stats: { faults: 0, writeFaults: 0, wpFaults: 0, kernelFaults: 0, migratedBack: 0 },
    };
  }

  used(dev: number): number {
    return this.devices[dev].pages.size;
  }

  /** The bytes a page holds wherever it lives. */
  content(page: number): Uint8Array {
    const e = this.region.entries[page];
    if (e.kind === 'device') return this.devices[e.dev].pages.get(e.id)!.bytes;
    return this.region.bytes[page];
  }

  // Device page lifetime (S11): allocate within capacity, drop a reference, free on the last.
  #alloc(dev: number, bytes: Uint8Array): number | undefined {
    const d = this.devices[dev];
    if (d.pages.size >= d.capacity) return undefined;
    return this.#allocId(d, bytes);
  }

  #allocId(d: MDevice, bytes: Uint8Array): number {
    const id = nextId++;
    d.pages.set(id, { bytes: bytes.slice(), refs: 1 });
    return id;
  }

  /**
   * Whether `page` is part of a whole huge device entry: every entry of its PMD block a huge entry
   * of the same device and write bit, their ids one consecutive run (a split one comes back, and
   * shows in the snapshot, page by page).
   */
  hugeWhole(page: number): boolean {
    const r = this.region;
    const first = page - (page % PMD_PAGES);
    if (first + PMD_PAGES > r.pages) return false;
    const e0 = r.entries[first];
    if (e0.kind !== 'device' || !e0.huge) return false;
    for (let i = 1; i < PMD_PAGES; i++) {
      const e = r.entries[first + i];
      if (e.kind !== 'device' || !e.huge || e.dev !== e0.dev || e.write !== e0.write || e.id !== e0.id + i) return false;
    }
    return true;
  }

  /**
   * A fault on `page`'s device entry: a whole huge entry comes back whole, if its pages are mapped
   * once and lie in one vma (one protection); a copy cut after `cut` pages (the test hook) brings
   * back that prefix and then the faulting page alone. Otherwise the page alone.
   */
  #faultBack(page: number, cut: number): void {
    const r = this.region;
    const first = page - (page % PMD_PAGES);
    const e0 = r.entries[first];
    const whole =
      this.hugeWhole(page) &&
      r.entries.slice(first, first + PMD_PAGES).every((e) => e.kind === 'device' && this.devices[e.dev].pages.get(e.id)!.refs === 1) &&
      r.prot.slice(first, first + PMD_PAGES).every((p) => p === r.prot[first]);
    if (!whole) return this.#back(page, true);
    const d = this.devices[(e0 as { dev: number }).dev];
    d.stats.faults++;
    const n = cut > 0 && cut < PMD_PAGES ? cut : PMD_PAGES;
    for (let i = 0; i < n; i++) this.#back(first + i, false);
    if (page - first >= n) this.#back(page, false);
  }

  #put(dev: number, id: number): void {
    const d = this.devices[dev];
    const p = d.pages.get(id)!;
    if (--p.refs === 0) {
      d.pages.delete(id);
      d.stats.freed++;
    }
  }

  /**
   * S1 migrate_vma, best effort: page by page until the device is full. A page already on this
   * device counts (a forced read downgrades it, make_device_entry_read); a page the vma cannot read
   * stays. The entry is a write entry when the page was writable (or as forced).
   */
  migrate(first: number, count: number, dev: number, write: boolean | undefined, during: ReadonlySet<number> = new Set(), thpBlocks: number[] = []): number {
    const r = this.region;
    let on = 0;
    let moved = 0;
    const zapped = new Set<number>();
    // A THP the range covers whole moves into one huge device page: an aligned run of free device
    // pages (here: a device with room for a whole one and nothing on it), ids consecutive.
    const d = this.devices[dev];
    const huge = new Map<number, number>();
    for (const b of thpBlocks)
      if (d.pages.size === 0 && d.capacity >= PMD_PAGES && huge.size === 0 && b >= first && b + PMD_PAGES <= first + count) {
        const base = nextId;
        nextId += PMD_PAGES;
        huge.set(b, base);
      }
    for (let page = first; page < first + count; page++) {
      const e = r.entries[page];
      if (e.kind === 'device' && e.dev === dev) {
        if (write === false) e.write = false;
        if (during.has(page)) continue; // zapped before we published it: not on the device any more
        on++;
        continue;
      }
      if (r.prot[page] === 'none') continue;
      const block = page - (page % PMD_PAGES);
      const base = huge.get(block);
      let id: number | undefined;
      if (base !== undefined) {
        id = base + (page - block);
        d.pages.set(id, { bytes: this.content(page).slice(), refs: 1 });
      } else {
        id = this.#alloc(dev, this.content(page));
      }
      if (id === undefined) break;
      const writable = r.prot[page] === 'readwrite' && (e.kind === 'none' || e.write);
      if (e.kind === 'device') this.#put(e.dev, e.id);
      r.entries[page] = { kind: 'device', write: write ?? writable, dev, id, ...(base !== undefined ? { huge: true } : {}) };
      r.bytes[page].fill(0); // no CPU page remains
      // Zapped by someone else while the migration held it: the entry it was making is dropped.
      if (during.has(page)) zapped.add(page);
      else moved++;
    }
    // Those, and the pages the migration did not take, lose their entry to the zap.
    for (const page of during) this.discard(page, 1);
    this.devices[dev].stats.migratedToDevice += moved;
    return on + moved;
  }

  /**
   * What a migration would do, without doing it: how many device pages it allocates, whether it
   * takes a CPU page (so that it has one to zap with madvise), and whether the device fills up
   * before the end of the range.
   */
  migratePlan(first: number, count: number, dev: number): { allocs: number; takesCpuPage: boolean; full: boolean } {
    const m = this.clone();
    const before = m.devices[dev].stats.migratedToDevice;
    m.migrate(first, count, dev, undefined);
    let takesCpuPage = false;
    let wanted = 0;
    for (let p = first; p < first + count; p++) {
      const was = this.region.entries[p];
      const e = m.region.entries[p];
      if (!(was.kind === 'device' && was.dev === dev) && this.region.prot[p] !== 'none') wanted++;
      if (was.kind === 'present' && e.kind === 'device' && e.dev === dev) takesCpuPage = true;
    }
    const allocs = m.devices[dev].stats.migratedToDevice - before;
    return { allocs, takesCpuPage, full: allocs < wanted };
  }

  /** A migration rolled back after allocating `allocs` device pages: they are freed, nothing else changes. */
  migrateRolledBack(dev: number, allocs: number): void {
    this.devices[dev].stats.freed += allocs;
  }

  /** Whether mremap to `pages` refuses (EFAULT): the pages it keeps span vmas of different protections. */
  remapSplit(pages: number): boolean {
    const kept = this.region.prot.slice(0, Math.min(pages, this.region.pages));
    return kept.some((p) => p !== kept[0]);
  }

  /**
   * mremap: entries and bytes move with the mapping; pages cut off drop their device pages (as a
   * munmap of the tail); new pages are holes with the protection of the last page kept.
   */
  remap(pages: number): void {
    const r = this.region;
    for (let p = pages; p < r.pages; p++) {
      const e = r.entries[p];
      if (e.kind === 'device') this.#put(e.dev, e.id);
    }
    const kept = Math.min(pages, r.pages);
    const last = r.prot[kept - 1];
    r.entries = Array.from({ length: pages }, (_, p) => (p < kept ? r.entries[p] : ({ kind: 'none' } as MEntry)));
    r.prot = Array.from({ length: pages }, (_, p) => (p < kept ? r.prot[p] : last));
    r.bytes = Array.from({ length: pages }, (_, p) => (p < kept ? r.bytes[p] : new Uint8Array(PAGE_SIZE)));
    r.pages = pages;
  }

  /** Brings a device page back (S2 migrate back): read entries come back write-protected. */
  #back(page: number, fault: boolean): void {
    const r = this.region;
    const e = r.entries[page];
    if (e.kind !== 'device') throw new Error('not a device entry');
    const d = this.devices[e.dev];
    r.bytes[page] = d.pages.get(e.id)!.bytes.slice();
    r.entries[page] = { kind: 'present', write: e.write, zero: false };
    this.#put(e.dev, e.id);
    r.stats.migratedBack++;
    d.stats.migratedToRam++;
    if (fault) d.stats.faults++;
  }

  migrateToRam(first: number, count: number, only?: number): number {
    let moved = 0;
    for (let page = first; page < first + count; page++) {
      const e = this.region.entries[page];
      if (e.kind !== 'device' || (only !== undefined && e.dev !== only)) continue;
      this.#back(page, false);
      moved++;
    }
    return moved;
  }

  /** A CPU read (user mode): a hole maps the zero page; a device entry faults the page back. */
  read(page: number, offset: number, cut = 0): number {
    const r = this.region;
    const e = r.entries[page];
    if (r.prot[page] === 'none') throw new Error('model: read under PROT_NONE is a SIGSEGV');
    if (e.kind === 'none') {
      r.entries[page] = { kind: 'present', write: true, zero: true };
      r.stats.faults++;
    } else if (e.kind === 'device') {
      r.stats.faults++;
      this.#faultBack(page, cut);
    }
    return r.bytes[page][offset];
  }

  /**
   * A kernel-mode access (write(2) of `len` bytes from the page, S10), in a region that counts
   * kernel faults. PROT_NONE: EFAULT, no fault. The inline servicer fails any missing page with
   * EFAULT (UFFD_FEATURE_SIGBUS, nothing served). A device whose driver refuses faults taken
   * inside system calls (`refuses`, the worker servicer only: hooks run nowhere else): EFAULT,
   * the fault counted, nothing else changes (S2, VM_FAULT_SIGBUS). Otherwise as a CPU read.
   */
  syscallRead(page: number, offset: number, len: number, inline: boolean, refuses: (dev: number) => boolean): SyscallResult {
    const r = this.region;
    const e = r.entries[page];
    if (r.prot[page] === 'none') return 'EFAULT';
    if (e.kind !== 'present' && inline) return 'EFAULT';
    if (e.kind === 'device' && refuses(e.dev)) {
      r.stats.faults++;
      r.stats.kernelFaults++;
      this.devices[e.dev].stats.faults++;
      return 'EFAULT';
    }
    if (e.kind !== 'present') r.stats.kernelFaults++;
    this.read(page, offset);
    return [...r.bytes[page].subarray(offset, offset + len)];
  }

  /** A CPU write: faults a hole in as a private zeroed page, a device entry back, then write-protect faults. */
  write(page: number, offset: number, value: number): void {
    const r = this.region;
    if (r.prot[page] !== 'readwrite') throw new Error('model: write without PROT_WRITE is a SIGSEGV');
    let e = r.entries[page];
    if (e.kind === 'none') {
      r.entries[page] = e = { kind: 'present', write: true, zero: false };
      r.stats.faults++;
      r.stats.writeFaults++;
    } else if (e.kind === 'device') {
      r.stats.faults++;
      r.stats.writeFaults++;
      this.#faultBack(page, 0);
      e = r.entries[page];
    }
    if (e.kind === 'present' && !e.write) {
      e.write = true;
      r.stats.faults++;
      r.stats.writeFaults++;
      r.stats.wpFaults++;
    }
    if (e.kind === 'present') e.zero = false;
    r.bytes[page][offset] = value;
  }

  /** The device's own write to its page (a GPU kernel). */
  deviceWrite(page: number, offset: number, value: number): void {
    const e = this.region.entries[page];
    if (e.kind !== 'device') throw new Error('not a device entry');
    this.devices[e.dev].pages.get(e.id)!.bytes[offset] = value;
  }

  /** S4 zap (MADV_DONTNEED): every page reads zero, device references go. */
  discard(first: number, count: number): void {
    const r = this.region;
    for (let page = first; page < first + count; page++) {
      const e = r.entries[page];
      if (e.kind === 'device') this.#put(e.dev, e.id);
      r.entries[page] = { kind: 'none' };
      r.bytes[page].fill(0);
    }
  }

  /** Whether MADV_COLLAPSE can make a THP of the block at `first`: every page present, writable, not write-protected. */
  collapsible(first: number): boolean {
    const r = this.region;
    for (let p = first; p < first + PMD_PAGES; p++) {
      const e = r.entries[p];
      // A hole or the shared zero page in a userfaultfd region is never filled by a collapse.
      if (e.kind !== 'present' || !e.write || e.zero || r.prot[p] !== 'readwrite') return false;
    }
    return true;
  }

  /** S5 change_pte_range: write device entries become read entries; the vma's protection changes. */
  mprotect(first: number, count: number, prot: Prot): void {
    const r = this.region;
    for (let page = first; page < first + count; page++) {
      const e = r.entries[page];
      if (e.kind === 'device') e.write = false;
      r.prot[page] = prot;
    }
  }

  /**
   * S3 fork + a child running `steps`, then exiting. Device entries are shared (read entries in both
   * processes); a child access to a shared device page migrates it back for both, the parent's copy
   * write-protected; the child's writes stay in the child. Returns the child's results.
   */
  fork(steps: MChildStep[]): number[] {
    const r = this.region;
    for (const e of r.entries) {
      if (e.kind !== 'device') continue;
      e.write = false;
      this.devices[e.dev].pages.get(e.id)!.refs++; // the child maps it too
    }
    // The child's view: its own entries and bytes, copied at fork time.
    const child = r.entries.map((e) => ({ ...e }));
    const childBytes = r.entries.map((_, p) => this.content(p).slice());
    const touchChild = (page: number, write: boolean): void => {
      const e = child[page];
      if (e.kind === 'device') {
        // Migrated back for every process that maps it: the parent gets it read-only too.
        const d = this.devices[e.dev];
        const pe = r.entries[page];
        if (pe.kind === 'device' && pe.id === e.id) {
          r.bytes[page] = d.pages.get(e.id)!.bytes.slice();
          r.entries[page] = { kind: 'present', write: false, zero: false };
          this.#put(e.dev, e.id);
          r.stats.migratedBack++;
        }
        this.#put(e.dev, e.id);
        d.stats.faults++;
        d.stats.migratedToRam++;
        child[page] = { kind: 'present', write: false, zero: false };
      } else if (e.kind === 'none') {
        child[page] = { kind: 'present', write: true, zero: !write };
      }
      if (write) child[page] = { kind: 'present', write: true, zero: false };
    };
    const results: number[] = [];
    for (const s of steps) {
      if (s.op === 'read') {
        touchChild(s.page, false);
        results.push(childBytes[s.page][s.offset]);
      } else if (s.op === 'write') {
        touchChild(s.page, true);
        childBytes[s.page][s.offset] = s.value;
        results.push(0);
      } else {
        for (let p = s.first; p < s.first + s.count; p++) touchChild(p, false);
        results.push(crc32(childBytes.slice(s.first, s.first + s.count)));
      }
    }
    // The child exits: the device pages it still mapped lose its reference.
    for (const e of child) if (e.kind === 'device') this.#put(e.dev, e.id);
    return results;
  }

  /** S12 device removal: every page on it comes back first. */
  closeDevice(dev: number): void {
    if (this.region.open) this.migrateToRam(0, this.region.pages, dev);
    this.devices[dev].open = false;
  }

  /** munmap: device references go; the region is gone. */
  closeRegion(): void {
    const r = this.region;
    for (const e of r.entries) if (e.kind === 'device') this.#put(e.dev, e.id);
    r.open = false;
  }
}

let table: Uint32Array | undefined;
export function crc32(chunks: Uint8Array[]): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let crc = ~0;
  for (const data of chunks) for (let i = 0; i < data.length; i++) crc = table[(crc ^ data[i]) & 0xff] ^ (crc >>> 8);
  return ~crc >>> 0;
}
