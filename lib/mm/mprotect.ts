// mprotect over a region (mm/mprotect.c): the vma's protection page by page, and change_pte_range
// turning write device entries into read entries.
import { native } from '../native.js';
import { check, invalidValue } from '../errors.js';
import { pageRange } from '../validate.js';
import { KIND_DEVICE, KIND_MASK, UNMAPPED, WRITE } from '../layout.js';
import { forRuns, lockRange, release } from '../pagelock.js';
import { checkHugeAligned } from './backing.js';
import { pageSpan, type RegionCore } from './vma.js';

export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_READWRITE = 3;

/** The page's protection as mprotect last set it (PROT_* bits). */
export function protOf(core: RegionCore, page: number): number {
  return core.prot === undefined ? PROT_READWRITE : core.prot[page];
}

/** mprotect(2) over the range (Region#mprotect). */
export function mprotect(core: RegionCore, first: number, count: number, prot: 'none' | 'read' | 'readwrite'): void {
  const [f, c] = pageRange(first, count, core.pages);
  checkHugeAligned(core.mapping, 'mprotect', f, c);
  const bits = prot === 'none' ? PROT_NONE : prot === 'read' ? PROT_READ : prot === 'readwrite' ? PROT_READWRITE : -1;
  if (bits < 0) throw invalidValue('prot', "'none', 'read' or 'readwrite'", prot);
  // Only what is still mapped (someone may have munmapped pages): mprotect(2) over a hole would
  // fail with ENOMEM after changing the vmas before it, leaving our view and the kernel's apart.
  const old = lockRange(core.shared, f, c);
  try {
    forRuns(f, c, (i) => (old[i] & UNMAPPED) === 0, (a, n) => {
      check(native.regionMprotect(core.handle, a, n, bits), 'mprotect', `${pageSpan(a, n)} to '${prot}'`);
      core.prot ??= new Uint8Array(core.pages).fill(PROT_READWRITE);
      core.prot.fill(bits, a, a + n);
      for (let p = a; p < a + n; p++) {
        // change_pte_range: a write device entry becomes a read entry.
        if ((old[p - f] & KIND_MASK) === KIND_DEVICE) old[p - f] &= ~WRITE;
      }
    });
  } finally {
    for (let i = 0; i < c; i++) release(core.shared, f + i, old[i]);
  }
}
