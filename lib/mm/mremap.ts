// mremap(MREMAP_MAYMOVE) of a region (mm/mremap.c): the kernel moves the page tables, and our
// table moves with them while every page is held, so no servicer serves a page mid-move.
import { native } from '../native.js';
import { integer } from '../validate.js';
import { DEVICE_SHIFT, KIND_DEVICE, KIND_MASK, KIND_NONE, MAX_DEVICE_SLOT, REGION_HEADER, UNMAPPED, stateIndex } from '../layout.js';
import { UffdSystemError } from '../errors.js';
import { carryZap, lockRange, placeLocked, release, stateOf } from '../pagelock.js';
import { protOf } from './mprotect.js';
import { deviceBySlot } from '../device.js';
import { MAX_REGION_PAGES, refuseRemap } from './backing.js';
import type { RegionCore } from './vma.js';

const EFAULT = 14;
const pagesText = (n: number) => `${n} ${n === 1 ? 'page' : 'pages'}`;

/** What mremap answers when the range it is to move spans more than one vma, and why. */
export const SPLIT_HINT =
  'the region is no longer one mapping (mprotect gave part of it another protection, or part of it was unmapped), ' +
  'and mremap moves one mapping at a time; give the pages it keeps one protection first (region.mprotect), ' +
  'or shrink it to the part before the first change';

/** mremap to `pages` pages (Region#remap). */
export function remap(core: RegionCore, pages: number): void {
  const newPages = integer('pages', pages, 1, MAX_REGION_PAGES);
  refuseRemap(core.mapping, core.servicer, core.pages, newPages);
  const oldPages = core.pages;
  const old = core.shared;
  // The pages kept must be one vma (vma_to_resize): the kernel would refuse with EFAULT. (It also
  // does for a split made behind our back, which the addon words the same way.)
  for (let p = 0; p < Math.min(oldPages, newPages); p++) {
    if (protOf(core, p) !== protOf(core, 0) || (stateOf(old, p) & UNMAPPED) !== 0) {
      throw new UffdSystemError(-EFAULT, 'mremap', `moving a region of ${pagesText(oldPages)} to ${pagesText(newPages)}`, SPLIT_HINT);
    }
  }
  const next = new Int32Array(new SharedArrayBuffer((REGION_HEADER + 2 * newPages) * 4));
  const states = lockRange(old, 0, oldPages);
  // Pages stay locked in the new table until the move is done, so no servicer serves them early.
  for (let i = 0; i < REGION_HEADER; i++) next[i] = Atomics.load(old, i);
  const kept = Math.min(oldPages, newPages);
  for (let p = 0; p < kept; p++) placeLocked(next, p, states[p], old[stateIndex(p) + 1]);
  for (let p = kept; p < newPages; p++) placeLocked(next, p, KIND_NONE);
  let moved: { bytes: ArrayBuffer; address: bigint };
  core.servicerHost?.replaceTable(core.owner, next);
  try {
    moved = native.regionRemap(core.handle, newPages, next);
  } catch (e) {
    core.servicerHost?.replaceTable(core.owner, old);
    for (let p = 0; p < oldPages; p++) release(old, p, states[p]);
    throw e;
  }
  // The servicer has switched to the new table (EVENT_REMAP): zaps it applied to the old one while
  // we held the pages are ours to apply, with those it applied to the new one since.
  for (let p = 0; p < kept; p++) carryZap(old, next, p);
  for (let p = newPages; p < oldPages; p++) {
    const s = states[p];
    if ((s & KIND_MASK) === KIND_DEVICE) deviceBySlot((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT)!.putPage(old[stateIndex(p) + 1]);
  }
  native.detachArrayBuffer(core.buffer);
  core.buffer = moved.bytes;
  core.bytes = new Uint8Array(moved.bytes);
  core.address = moved.address;
  core.shared = next;
  core.pages = newPages;
  if (core.prot !== undefined) {
    // Growing extends the last vma, so the new pages have the last kept page's protection.
    const prot = new Uint8Array(newPages).fill(core.prot[kept - 1]);
    prot.set(core.prot.subarray(0, kept));
    core.prot = prot;
  }
  core.servicerHost?.replaceTable(core.owner, next); // now with the new address, for hook contexts
  for (let p = 0; p < newPages; p++) release(next, p, p < kept ? states[p] : KIND_NONE);
}
