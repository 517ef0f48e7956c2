// The differential model test's comparison (runner.ts calls it after every step): every
// observable of the real region and devices against the model: entries, bytes, refcounts (device
// page numbers up to a consistent renaming), pagemap, snapshots, device.used and the stats.
import {
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE,
  HMM_DMIRROR_PROT_ERROR,
  HMM_DMIRROR_PROT_NONE,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  HMM_DMIRROR_PROT_ZERO,
  PM_MMAP_EXCLUSIVE,
  PM_PRESENT,
  PM_SWAP,
  SWP_DEVICE,
  SWP_DEVICE_WRITE,
  type Device,
  type Region,
} from 'uffd-hmm';
import { HMM_DMIRROR_PROT_PMD } from '../../dist/mm/proc.js';
import { PAGE_SIZE, type Model } from './model.js';

export interface Compared {
  model: Model;
  region: Region;
  devices: Device[];
  /** Per device: model page id -> real pfn, the consistent renaming of device page numbers. */
  rename: Map<number, number>[];
  same(what: string, real: unknown, want: unknown): void;
  fail(msg: string): never;
  /** Runs the synchronous `fn` expecting it to throw ERR_DEVICE_CLOSED. */
  expectClosed(what: string, fn: () => unknown): void;
}

/** Every observable of the real region and devices against the model. */
export function compareAll(c: Compared): void {
  const { model, region, devices, rename, same, fail, expectClosed } = c;
  const m = model.region;
  const n = m.pages;
  for (let i = 0; i < devices.length; i++) {
    same(`device ${i} used`, devices[i].used, model.used(i));
    same(`device ${i} stats`, devices[i].stats(), model.devices[i].stats);
    // Forget renamings of pages the model freed: the real pfn may be handed out again.
    for (const id of rename[i].keys()) if (!model.devices[i].pages.has(id)) rename[i].delete(id);
  }
  if (!m.open) return;
  same('region stats', region.stats(), m.stats);
  const pm = region.pagemap(0, n);
  const snap = region.snapshot(0, n);
  // Asked for by a closed device, a snapshot is refused: the closed Device must never stand for
  // the device that took its slot (whose pages would show as LOCAL).
  for (const d of devices) if (d.closed) expectClosed('snapshot for a closed device', () => region.snapshot(0, n, d));
  const snapFor = devices.map((d) => (d.closed ? undefined : region.snapshot(0, n, d)));
  const view = Buffer.from(region.bytes.buffer, region.bytes.byteOffset, region.bytes.byteLength);
  for (let p = 0; p < n; p++) {
    const want = m.entries[p];
    const real = region.entry(p);
    const at = `page ${p}`;
    same(`${at} kind`, real.kind, want.kind);
    const prot = m.prot[p];
    let wantSnap: number;
    if (want.kind === 'device' && real.kind === 'device') {
      same(`${at} write`, real.write, want.write);
      if (real.device !== devices[want.dev]) fail(`${at}: on ${real.device.name}, model says model-dev${want.dev}`);
      // pfn up to renaming: the same model page always shows as the same real pfn, and no two
      // live model pages share one.
      const map = rename[want.dev];
      const known = map.get(want.id);
      if (known === undefined) {
        for (const [id, pfn] of map) if (pfn === real.pfn && id !== want.id) fail(`${at}: pfn ${real.pfn} already names another device page`);
        map.set(want.id, real.pfn);
      } else if (known !== real.pfn) {
        fail(`${at}: device page moved from pfn ${known} to ${real.pfn} without a migration`);
      }
      const dev = devices[want.dev];
      same(`${at} refcount`, dev.refcount(real.pfn), model.devices[want.dev].pages.get(want.id)!.refs);
      if (!Buffer.from(dev.read(real.pfn)).equals(model.content(p))) fail(`${at}: device page bytes differ (${diffAt(dev.read(real.pfn), model.content(p))})`);
      // pagemap shows the device swap entry (S6), exclusive while mapped once.
      const e = pm[p];
      if ((e & PM_SWAP) === 0n || (e & PM_PRESENT) !== 0n) fail(`${at}: pagemap 0x${e.toString(16)} is not a swap entry`);
      same(`${at} pagemap type`, Number(e & 31n), want.write ? SWP_DEVICE_WRITE : SWP_DEVICE);
      same(`${at} pagemap offset`, Number((e >> 5n) & ((1n << 50n) - 1n)), real.pfn);
      same(`${at} pagemap exclusive`, (e & PM_MMAP_EXCLUSIVE) !== 0n, true);
      const rw = (want.write ? HMM_DMIRROR_PROT_WRITE : HMM_DMIRROR_PROT_READ) | (model.hugeWhole(p) ? HMM_DMIRROR_PROT_PMD : 0);
      wantSnap = HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | rw;
      snapFor.forEach((sn, i) => {
        if (sn === undefined) return;
        same(
          `${at} snapshot for dev${i}`,
          sn[p],
          prot === 'none' ? HMM_DMIRROR_PROT_ERROR : (want.dev === i ? HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL : HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE) | rw,
        );
      });
    } else if (want.kind === 'present' && real.kind === 'present') {
      // The pte is writable when the page is not write-protected and the vma allows writes.
      same(`${at} write`, real.write, want.write && prot === 'readwrite');
      if ((pm[p] & PM_PRESENT) === 0n) fail(`${at}: present in the table but not in pagemap (0x${pm[p].toString(16)})`);
      // Readable without a fault (present), unless PROT_NONE, where touching it is a SIGSEGV.
      if (prot !== 'none') {
        const got = view.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
        if (!got.equals(m.bytes[p])) fail(`${at}: bytes differ (${diffAt(got, m.bytes[p])})`);
      }
      wantSnap = want.zero
        ? HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ
        : prot === 'readwrite'
          ? want.write
            ? HMM_DMIRROR_PROT_WRITE
            : HMM_DMIRROR_PROT_READ
          : HMM_DMIRROR_PROT_READ;
    } else {
      if ((pm[p] & (PM_PRESENT | PM_SWAP)) !== 0n) fail(`${at}: none in the table but pagemap 0x${pm[p].toString(16)}`);
      wantSnap = HMM_DMIRROR_PROT_NONE;
    }
    if (prot === 'none') wantSnap = HMM_DMIRROR_PROT_ERROR;
    same(`${at} snapshot`, snap[p], wantSnap);
  }
}

function diffAt(a: Uint8Array, b: Uint8Array): string {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return `first at offset ${i}: real ${a[i]}, model ${b[i]}`;
  return 'lengths differ';
}
