// S5 mprotect (change_pte_range) over device entries, on real faults: write entries become read
// entries, so the next write after 'read' → 'readwrite' costs one write-protect fault; 'read' and 'none' fault as for any page.
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import {
  Device,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_ERROR,
  HMM_DMIRROR_PROT_NONE,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  PM_PRESENT,
  PM_UFFD_WP,
  Region,
  SWP_DEVICE,
  SWP_DEVICE_WRITE,
  type RegionStats,
} from 'uffd-hmm';
import { checkPages, closeAfterEach, describeUffd, fillPages, pattern, SERVICERS } from './helpers.js';
import { describeOutcome, jsonLines, runChild } from './fixtures/semantics/run-child.js';

const child = fileURLToPath(new URL('./fixtures/semantics/mprotect-child.mjs', import.meta.url));

const track = closeAfterEach();

/** The swap type a region's pagemap word carries for a device entry (low 5 bits). */
const pmType = (r: Region, page: number): number => Number(r.pagemap(page, 1)[0] & 31n);
const delta = (a: RegionStats, b: RegionStats) => ({
  faults: b.faults - a.faults,
  writeFaults: b.writeFaults - a.writeFaults,
  wpFaults: b.wpFaults - a.wpFaults,
  migratedBack: b.migratedBack - a.migratedBack,
});

describeUffd.each(SERVICERS)('mprotect over device pages with the %s servicer', (servicer) => {
  const map = (pages: number) => track(Region.map({ pages, servicer }));
  const device = (capacity = 16) => track(new Device({ capacity }));

  it('downgrades write device entries to read entries and touches nothing else', () => {
    const r = map(6);
    const d = device();
    fillPages(r, 0, 4);
    fillPages(r, 5, 1);
    r.migrate(0, 2, d); // pages 0-1: write entries
    r.migrate(2, 1, d, { write: false }); // page 2: already a read entry
    r.migrate(5, 1, d); // page 5: a write entry outside the mprotect range
    // page 3 stays a present CPU page, page 4 a never-touched hole
    const pfns = [0, 1, 2, 5].map((p) => (r.entry(p) as { pfn: number }).pfn);
    const before = r.stats();

    r.mprotect(0, 5, 'read');

    for (const [i, p] of [0, 1, 2].entries()) {
      expect(r.entry(p)).toEqual({ kind: 'device', write: false, device: d, pfn: pfns[i] });
      expect(pmType(r, p)).toBe(SWP_DEVICE);
    }
    expect(r.entry(3)).toMatchObject({ kind: 'present' });
    expect(r.entry(4)).toEqual({ kind: 'none' });
    expect(r.entry(5)).toEqual({ kind: 'device', write: true, device: d, pfn: pfns[3] });
    expect(pmType(r, 5)).toBe(SWP_DEVICE_WRITE);
    // The pages stay on the device, each still referenced once, and mprotect itself faults nothing.
    expect(d.used).toBe(4);
    for (const pfn of pfns) expect(d.refcount(pfn)).toBe(1);
    expect(r.stats()).toEqual(before);
    expect(d.stats()).toMatchObject({ faults: 0, freed: 0 });

    // Restoring write permission does not restore the write entry: only a fault does.
    r.mprotect(0, 5, 'readwrite');
    expect(r.entry(0)).toMatchObject({ kind: 'device', write: false });
    expect(pmType(r, 0)).toBe(SWP_DEVICE);
    expect(r.stats()).toEqual(before);
    expect(checkPages(r, 0, 4)).toBeNull();
    expect(checkPages(r, 5, 1)).toBeNull();
  });

  it("read → readwrite, then a write: exactly one extra write-protect fault against an untouched write entry", () => {
    const r = map(2);
    const d = device();
    fillPages(r, 0, 2, 4);
    r.migrate(0, 2, d);
    r.mprotect(1, 1, 'read');
    r.mprotect(1, 1, 'readwrite');
    expect(r.entry(0)).toMatchObject({ kind: 'device', write: true });
    expect(r.entry(1)).toMatchObject({ kind: 'device', write: false });

    // Control: the write entry comes back writable, one fault.
    let s = r.stats();
    r.bytes[10] = 0xee;
    const control = delta(s, r.stats());
    expect(control).toEqual({ faults: 1, writeFaults: 1, wpFaults: 0, migratedBack: 1 });

    // The downgraded entry comes back write-protected (UFFDIO_COPY_MODE_WP) and the same write then
    // takes a write-protect fault: one more fault, and it is the write-protect one.
    s = r.stats();
    r.bytes[r.pageSize + 10] = 0xee;
    const downgraded = delta(s, r.stats());
    expect(downgraded).toEqual({ faults: 2, writeFaults: 2, wpFaults: 1, migratedBack: 1 });
    expect(downgraded.faults - control.faults).toBe(1);

    for (const p of [0, 1]) {
      expect(r.entry(p)).toEqual({ kind: 'present', write: true });
      const pm = r.pagemap(p, 1)[0];
      expect(pm & PM_PRESENT).toBe(PM_PRESENT);
      expect(pm & PM_UFFD_WP).toBe(0n);
      expect(r.bytes[p * r.pageSize + 10]).toBe(0xee);
      expect(r.bytes[p * r.pageSize + 9]).toBe(pattern(p, 9, 4));
      expect(r.bytes[p * r.pageSize + 11]).toBe(pattern(p, 11, 4));
    }
    expect(d.used).toBe(0);
    expect(d.stats()).toMatchObject({ faults: 2, migratedToRam: 2, freed: 2 });
  });

  it("a page read under 'read' comes back write-protected; after 'readwrite' its first write is one write-protect fault", () => {
    const r = map(1);
    const d = device();
    fillPages(r, 0, 1, 6);
    r.migrate(0, 1, d);
    r.mprotect(0, 1, 'read');
    let s = r.stats();
    expect(r.bytes[77]).toBe(pattern(0, 77, 6)); // reads are allowed and served
    expect(delta(s, r.stats())).toEqual({ faults: 1, writeFaults: 0, wpFaults: 0, migratedBack: 1 });
    expect(r.entry(0)).toEqual({ kind: 'present', write: false });
    expect(r.pagemap(0, 1)[0] & (PM_PRESENT | PM_UFFD_WP)).toBe(PM_PRESENT | PM_UFFD_WP);
    expect(d.used).toBe(0);

    r.mprotect(0, 1, 'readwrite');
    s = r.stats();
    r.bytes[77] = 1;
    expect(delta(s, r.stats())).toEqual({ faults: 1, writeFaults: 1, wpFaults: 1, migratedBack: 0 });
    expect(r.entry(0)).toEqual({ kind: 'present', write: true });
    expect(r.pagemap(0, 1)[0] & PM_UFFD_WP).toBe(0n);
    expect(r.bytes[77]).toBe(1);
    expect(r.bytes[76]).toBe(pattern(0, 76, 6));
  });

  it("snapshot: read entries under 'read', HMM_DMIRROR_PROT_ERROR for every page under 'none'; the entries survive", () => {
    const r = map(3);
    const d = device();
    fillPages(r, 0, 2, 8);
    r.migrate(0, 1, d); // page 0 on the device, page 1 present, page 2 a hole
    const { pfn } = r.entry(0) as { pfn: number };

    r.mprotect(0, 3, 'read');
    expect([...r.snapshot(0, 3, d)]).toEqual([
      HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_READ,
      HMM_DMIRROR_PROT_READ,
      HMM_DMIRROR_PROT_NONE,
    ]);

    r.mprotect(0, 3, 'none');
    expect([...r.snapshot(0, 3, d)]).toEqual([HMM_DMIRROR_PROT_ERROR, HMM_DMIRROR_PROT_ERROR, HMM_DMIRROR_PROT_ERROR]);
    // PROT_NONE hides the page from the CPU, it does not take it from the device.
    expect(r.entry(0)).toEqual({ kind: 'device', write: false, device: d, pfn });
    expect(d.refcount(pfn)).toBe(1);

    r.mprotect(0, 3, 'readwrite');
    expect([...r.snapshot(0, 3, d)]).toEqual([
      HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_READ,
      HMM_DMIRROR_PROT_WRITE,
      HMM_DMIRROR_PROT_NONE,
    ]);
    expect(checkPages(r, 0, 2, 8)).toBeNull();
    expect(d.used).toBe(0);
  });

  // The faulting access kills its process, so each runs in a child; the control case proves a
  // child that does the same set-up and a permitted access exits cleanly.
  const crashing = [
    ['write-read-device', "a write to a device page under 'read'", { entry: 'device', write: false, snapshot: HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_READ }],
    ['write-read-present', "a write to a present page under 'read'", { entry: 'present', snapshot: HMM_DMIRROR_PROT_READ }],
    ['read-none-device', "a read of a device page under 'none'", { entry: 'device', write: false, snapshot: HMM_DMIRROR_PROT_ERROR }],
    ['write-none-device', "a write to a device page under 'none'", { entry: 'device', write: false, snapshot: HMM_DMIRROR_PROT_ERROR }],
    ['read-none-present', "a read of a present page under 'none'", { entry: 'present', snapshot: HMM_DMIRROR_PROT_ERROR }],
  ] as const;
  for (const [name, what, state] of crashing) {
    it.concurrent(`${what} raises SIGSEGV (child process)`, async ({ expect }) => {
      const o = await runChild(child, [servicer, name]);
      expect(o.timedOut, describeOutcome(o)).toBe(false);
      expect(o.signal, describeOutcome(o)).toBe('SIGSEGV');
      expect(o.stdout).toContain('ACCESS');
      expect(o.stdout).not.toContain('READ ');
      expect(o.stdout).not.toContain('SURVIVED');
      expect(jsonLines(o.stdout)[0]).toMatchObject(state);
    });
  }
  it.concurrent("control: a read of a device page under 'read' is served and the child exits 0", async ({ expect }) => {
    const o = await runChild(child, [servicer, 'read-read-device']);
    expect(o.timedOut, describeOutcome(o)).toBe(false);
    expect({ code: o.code, signal: o.signal }, describeOutcome(o)).toEqual({ code: 0, signal: null });
    expect(o.stdout).toContain(`READ ${0x5a}`);
    expect(o.stdout).toContain('SURVIVED');
  });
});

describeUffd('migrate under mprotect', () => {
  // S1: "a write entry when the page was writable, else a read entry" (migrate_vma_collect_pmd
  // takes MIGRATE_PFN_WRITE from pte_write). Under PROT_READ the pte is not writable.
  it("a present page migrated while mprotect('read') leaves a read entry", () => {
    const r = track(Region.map({ pages: 1 }));
    const d = track(new Device({ capacity: 1 }));
    fillPages(r, 0, 1);
    r.mprotect(0, 1, 'read');
    expect(r.migrate(0, 1, d)).toBe(1);
    expect(r.entry(0)).toMatchObject({ kind: 'device', write: false });
    expect(pmType(r, 0)).toBe(SWP_DEVICE);
  });
});
