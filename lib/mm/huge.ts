// Huge pages (mm/huge_memory.c, and hugetlb's fixed sizes): THP collapse, finding the THPs a
// migration may move whole, and whether a huge device entry is still whole.
import { openSync, readFileSync, readSync } from 'node:fs';

import { native, PAGE_SIZE } from '../native.js';
import { check } from '../errors.js';
import { pageRange } from '../validate.js';
import { HUGE, PMD_SIZE, stateIndex } from '../layout.js';
import { stateOf } from '../pagelock.js';
import { PM_PRESENT, HMM_DMIRROR_PROT_PMD, HMM_DMIRROR_PROT_PUD } from './proc.js';
import { pageSpan, type RegionCore } from './vma.js';

/**
 * MADV_COLLAPSE over the range (Region#collapse). The addon retries the kernel's transient EAGAIN
 * for up to a quarter second; what is left is reported with the next step its errno calls for.
 */
export function collapse(core: RegionCore, first: number, count: number): void {
  const [f, c] = pageRange(first, count, core.pages);
  if (c === 0) return;
  const rc = native.regionCollapse(core.handle, f, c);
  check(rc, 'madvise(MADV_COLLAPSE)', `collapsing ${pageSpan(f, c)} into THPs`, collapseHint(core.thp, rc));
}

/** The next step for MADV_COLLAPSE's errno, as mm/khugepaged.c's madvise_collapse_errno sorts them. */
function collapseHint(thp: boolean, rc: number): string | undefined {
  if (!thp) return 'map the region with { thp: true } to collapse it';
  switch (native.errnoName(-rc)) {
    case 'EBUSY':
      return 'a PMD has missing pages or device entries, and the kernel fills no hole in a userfaultfd region: migrate them back and write every page of it first';
    case 'EAGAIN':
      return 'its pages stayed locked or referenced elsewhere (khugepaged, a migration) for a quarter second of retries; try again';
    case 'ENOMEM':
      return `no free ${PMD_SIZE >> 20} MiB page could be allocated; free memory or compact it (vm.compact_memory) and try again`;
    case 'EINVAL':
      return 'a page of a PMD is write-protected (a read device entry comes back so): write every page of it first';
    default:
      return undefined;
  }
}

let hugePageBytes: number | undefined;
/** The default huge page size in bytes (/proc/meminfo Hugepagesize), as MAP_HUGETLB uses it. */
export function hugePageSize(): number {
  if (hugePageBytes === undefined) {
    const m = /^Hugepagesize:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    hugePageBytes = m ? Number(m[1]) * 1024 : 2 << 20;
  }
  return hugePageBytes;
}

/** The first page of the PMD-aligned block that holds `page` (it may lie before the region). */
export function pmdBlockStart(address: bigint, page: number): number {
  const n = PMD_SIZE / PAGE_SIZE;
  return page - ((Number((address / BigInt(PAGE_SIZE)) % BigInt(n)) + page) % n);
}

let kpageflags: number | undefined;
const KPF_THP = 1n << 22n;
const PFN_MASK = (1n << 55n) - 1n;

/**
 * First pages of the PMD-aligned blocks inside [f, f+c) that one THP backs whole: all present,
 * consecutive frames from an aligned head that /proc/kpageflags marks KPF_THP. Empty without
 * CAP_SYS_ADMIN (pagemap hides frames, kpageflags is root's).
 */
export function thpBlocks(handle: number, address: bigint, f: number, c: number): number[] {
  const n = PMD_SIZE / PAGE_SIZE;
  const out: number[] = [];
  let b = pmdBlockStart(address, f);
  if (b < f) b += n;
  if (b + n > f + c) return out;
  if (kpageflags === undefined) {
    try {
      kpageflags = openSync('/proc/kpageflags', 'r');
    } catch {
      kpageflags = -1;
    }
  }
  if (kpageflags < 0) return out;
  const pm = new BigUint64Array(n);
  const flags = new BigUint64Array(1);
  for (; b + n <= f + c; b += n) {
    native.regionPagemap(handle, b, n, pm);
    const head = pm[0] & PFN_MASK;
    if ((pm[0] & PM_PRESENT) === 0n || head === 0n || head % BigInt(n) !== 0n) continue;
    let i = 1;
    while (i < n && (pm[i] & PM_PRESENT) !== 0n && (pm[i] & PFN_MASK) === head + BigInt(i)) i++;
    if (i < n) continue;
    if (readSync(kpageflags, new Uint8Array(flags.buffer), 0, 8, Number(head) * 8) !== 8) continue;
    if ((flags[0] & KPF_THP) !== 0n) out.push(b);
  }
  return out;
}

/** The snapshot flag of a huge mapping's level (hmm_vma_walk_hugetlb_entry), 0 otherwise. */
export function hugeLevel(core: RegionCore): number {
  if (core.mapping !== 'private-hugetlb' && core.mapping !== 'shared-hugetlb') return 0;
  return hugePageSize() >= 1 << 30 ? HMM_DMIRROR_PROT_PUD : HMM_DMIRROR_PROT_PMD;
}

/**
 * Whether `page` (a HUGE device entry) is still part of a whole huge entry: every entry of its
 * PMD-aligned block alike, naming the pfns of one aligned huge device page. Otherwise it was
 * split (partly discarded, protected or faulted back) into PTE-level entries. Cached per block.
 */
export function hugeEntryAt(core: RegionCore, page: number, seen: Map<number, boolean>): boolean {
  const n = PMD_SIZE / PAGE_SIZE;
  const first = pmdBlockStart(core.address, page);
  let whole = seen.get(first);
  if (whole === undefined) {
    const shared = core.shared;
    const s0 = stateOf(shared, first);
    const pfn0 = shared[stateIndex(first) + 1];
    whole = first >= 0 && first + n <= core.pages && (s0 & HUGE) !== 0 && pfn0 % n === 0;
    for (let i = 1; i < n && whole; i++) {
      whole = stateOf(shared, first + i) === s0 && shared[stateIndex(first + i) + 1] === pfn0 + i;
    }
    seen.set(first, whole);
  }
  return whole;
}
