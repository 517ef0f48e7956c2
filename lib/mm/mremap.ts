// mremap(MREMAP_MAYMOVE) of a region (mm/mremap.c): the kernel moves the page tables, and our
// table moves with them while every page is held, so no servicer serves a page mid-move.
import { native } from '../native.js';
import { integer } from '../validate.js';
import { DEVICE_SHIFT, KIND_DEVICE, KIND_MASK, KIND_NONE, MAX_DEVICE_SLOT, REGION_HEADER, stateIndex } from '../layout.js';
import { carryZap, lockRange, placeLocked, release } from '../pagelock.js';
import { deviceBySlot } from '../device.js';
import { MAX_REGION_PAGES, refuseRemap } from './backing.js';
import type { RegionCore } from './vma.js';

/** mremap to `pages` pages (Region#remap). */
export function remap(core: RegionCore, pages: number): void {
  const newPages = integer('pages', pages, 1, MAX_REGION_PAGES);
  refuseRemap(core.mapping, core.servicer, core.pages, newPages);
  const oldPages = core.pages;
  const old = core.shared;
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
