// What the model expects of the operations that race something (runner.ts): a zap by another
// thread (every order the kernel allows, page by page), a madvise the kernel refuses, and a driver
// fault hook that holds a page past the page-lock deadline. Pure functions of the model.
import type { Model } from './model.js';

/** A page range clamped into the region, as runner.ts clamps every generated range. */
export function range(first: number, count: number, pages: number): [number, number] {
  const f = first % pages;
  return [f, Math.min(count, pages - f)];
}

/** The operations a racing zap is tried against, with what the model needs of each. */
export type Raced =
  | { op: 'migrate'; first: number; count: number; dev: number; write?: boolean }
  | { op: 'migrateToRam'; first: number; count: number }
  | { op: 'remap'; pages: number }
  | { op: 'fork'; run: (m: Model) => unknown };

/**
 * Every state a zap of `zapped` by someone else, racing `op`, may leave: each page is zapped
 * either before the operation took it, or late (while the operation held it, or after). Late means,
 * by operation: a migration to the device drops the entry it was making (the page does not count
 * as moved); a migration back brings it back, then the zap empties it; remap has moved the mapping
 * away from the address the zap names, which then finds nothing; fork has copied the entry to the
 * child, and only the parent loses it. `apply` runs the operation on a copy and returns its result.
 */
export function zapCandidates(model: Model, zapped: number[], op: Raced, deviceOpen: (dev: number) => boolean): { model: Model; result: unknown }[] {
  const out: { model: Model; result: unknown }[] = [];
  for (let mask = 0; mask < 1 << zapped.length; mask++) {
    const m = model.clone();
    const late = zapped.filter((_, i) => (mask & (1 << i)) === 0);
    for (const [i, p] of zapped.entries()) if (mask & (1 << i)) m.discard(p, 1);
    let result: unknown;
    const n = m.region.pages;
    if (op.op === 'migrate') {
      if (!deviceOpen(op.dev)) {
        result = { error: 'ERR_DEVICE_CLOSED' };
        for (const p of late) m.discard(p, 1);
      } else {
        const [f, c] = range(op.first, op.count, n);
        result = m.migrate(f, c, op.dev, op.write, new Set(late));
      }
    } else if (op.op === 'migrateToRam') {
      result = m.migrateToRam(...range(op.first, op.count, n));
      for (const p of late) m.discard(p, 1);
    } else if (op.op === 'remap') {
      if (m.remapSplit(op.pages)) {
        result = { error: 'EFAULT' };
        for (const p of late) m.discard(p, 1); // nothing moved: the zap finds its pages
      } else {
        m.remap(op.pages);
        result = undefined;
      }
    } else {
      result = op.run(m);
      for (const p of late) m.discard(p, 1);
    }
    out.push({ model: m, result });
  }
  return out;
}

/**
 * A discard or a migration whose first madvise the kernel refuses: it throws ENOMEM and changes
 * nothing, except that a migration gives back the device pages it had allocated (each counts as
 * freed, as migrate_vma_finalize frees them). Undefined when the operation makes no madvise
 * call at all (nothing to zap), so the refusal does not reach it.
 */
export function refusedZap(m: Model, op: { op: 'discard'; first: number; count: number } | { op: 'migrate'; first: number; count: number; dev: number }): unknown {
  const [f, c] = range(op.first, op.count, m.region.pages);
  if (op.op === 'discard') return c > 0 ? { error: 'ENOMEM' } : undefined;
  const plan = m.migratePlan(f, c, op.dev);
  if (!plan.takesCpuPage) return undefined;
  m.migrateRolledBack(op.dev, plan.allocs);
  return { error: 'ENOMEM' };
}

/** The ranged operations a hook holding page `held` can block, with what the model expects. */
export type Held =
  | { op: 'discard' | 'mprotect'; first: number; count: number }
  | { op: 'migrate'; first: number; count: number; dev: number }
  | { op: 'migrateToRam'; first: number; count: number }
  | { op: 'remap' | 'fork' };

/**
 * What an operation does while a driver's fault hook holds page `held` locked past the page-lock
 * deadline: undefined when it does not need that page (it runs as usual); otherwise it times out
 * with ERR_PAGE_LOCK_TIMEOUT having given back every page it took, so nothing changed; except a
 * migration back, which has brought back the pages before `held` by then, and a migration to the
 * device, which gives back the device pages it had allocated for them, or never gets as far as
 * `held` when the device fills up before (then it runs as usual).
 */
export function heldPage(m: Model, op: Held, held: number): { error: string } | undefined {
  const timeout = { error: 'ERR_PAGE_LOCK_TIMEOUT' };
  if (!('first' in op)) return timeout; // remap and fork lock every page
  const [f, c] = range(op.first, op.count, m.region.pages);
  if (held < f || held >= f + c) return undefined;
  if (op.op === 'migrateToRam') {
    m.migrateToRam(f, held - f);
    return timeout;
  }
  if (op.op === 'migrate') {
    const plan = m.migratePlan(f, held - f, op.dev);
    if (plan.full) return undefined;
    m.migrateRolledBack(op.dev, plan.allocs);
  }
  return timeout;
}
