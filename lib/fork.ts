// region.fork(steps): what copy_one_pte does to device entries at fork, done on our tables, then a
// native child that runs `steps` (no JS can run in a forked Node process) and reports back.
import { native } from './native.js';
import { invalidType, invalidValue } from './errors.js';
import { integer, optionsObject } from './validate.js';
import {
  DEVICE_SHIFT,
  FORK_OP_CHECKSUM,
  FORK_OP_READ,
  FORK_OP_SLEEP,
  FORK_OP_WRITE,
  FORK_STEP_STRIDE,
  KIND_DEVICE,
  KIND_MASK,
  KIND_NONE,
  MAX_DEVICE_SLOT,
  REGION_HEADER,
  UNMAPPED,
  WRITE,
  ZAP_PENDING,
  stateIndex,
} from './layout.js';
import { lockRange, release, stateOf } from './pagelock.js';
import { settleZaps } from './mm/zap.js';
import { deviceBySlot } from './device.js';
import { refuseFork } from './mm/backing.js';
import type { RegionCore } from './mm/vma.js';
import type { Region } from './region.js';

/**
 * One step of a {@link Region#fork} child, run in native code in the child process (a forked
 * Node process cannot run JS). Each step's result lands in {@link ChildResult.results}:
 * - `read`: reads the byte at `offset` of `page`; result: the byte.
 * - `write`: writes `value` at `offset` of `page`; result 0.
 * - `checksum`: CRC32 of the bytes of pages `first` to `first + count − 1`; result: the CRC32.
 * - `sleep`: sleeps `ms` milliseconds (an extension), so the parent can inspect shared state while
 *   the child lives; result 0.
 *
 * Touching a device-resident page is a real fault in the child too, served by the parent.
 */
export type ChildStep =
  | {
      /** Read one byte. */
      op: 'read';
      /** Page index in the region. */
      page: number;
      /** Byte offset in the page, default 0. */
      offset?: number;
    }
  | {
      /** Write one byte. */
      op: 'write';
      /** Page index in the region. */
      page: number;
      /** Byte offset in the page, default 0. */
      offset?: number;
      /** The byte to write, 0 to 255. */
      value: number;
    }
  | {
      /** CRC32 of a range of pages. */
      op: 'checksum';
      /** First page of the range. */
      first: number;
      /** Pages in the range. */
      count: number;
    }
  /** Extension: the child sleeps, so the parent can look at shared state while it lives. */
  | {
      /** Sleep. */
      op: 'sleep';
      /** Milliseconds, 0 to 60000. */
      ms: number;
    };

/** What a {@link Region#fork} child did, once it has exited. */
export interface ChildResult {
  /** One number per step that completed: the byte read, the CRC32, or 0. Shorter when the child died early. */
  results: number[];
  /** The signal that killed the child (`'SIGBUS'` from a poisoned page, `'SIGKILL'` after the timeout, …), or null. */
  signal: string | null;
  /** The child's exit code when it exited normally (0 after all steps), or null when a signal killed it. */
  exitCode: number | null;
  /** Extension: the child's faults, as served by the parent on the child's userfaultfd. */
  stats: {
    /** Faults served for the child. */
    faults: number;
    /** Of those, write-protect faults (first writes to pages that came back write-protected). */
    wpFaults: number;
    /** Pages migrated back from a device into the child. */
    migratedBack: number;
  };
}

const OPS = { read: FORK_OP_READ, write: FORK_OP_WRITE, checksum: FORK_OP_CHECKSUM, sleep: FORK_OP_SLEEP } as const;

/** Encodes steps as four int32 words each (native/fork.cc), validating them against the region. */
export function encodeSteps(steps: unknown, pages: number, pageSize: number): Int32Array {
  if (!Array.isArray(steps)) throw invalidType('steps', 'an array of steps', steps);
  if (steps.length > 4096) throw invalidValue('steps', 'at most 4096 steps', steps.length);
  const out = new Int32Array(steps.length * FORK_STEP_STRIDE);
  steps.forEach((step: unknown, i) => {
    if (step === null || typeof step !== 'object') throw invalidType(`steps[${i}]`, 'a step object', step);
    const s = step as Record<string, unknown>;
    const op = typeof s.op === 'string' && Object.hasOwn(OPS, s.op) ? OPS[s.op as keyof typeof OPS] : undefined;
    if (op === undefined) throw invalidValue(`steps[${i}].op`, "'read', 'write', 'checksum' or 'sleep'", s.op);
    out[i * FORK_STEP_STRIDE] = op;
    if (s.op === 'read' || s.op === 'write') {
      out[i * FORK_STEP_STRIDE + 1] = integer(`steps[${i}].page`, s.page, 0, pages - 1);
      out[i * FORK_STEP_STRIDE + 2] = s.offset === undefined ? 0 : integer(`steps[${i}].offset`, s.offset, 0, pageSize - 1);
      if (s.op === 'write') out[i * FORK_STEP_STRIDE + 3] = integer(`steps[${i}].value`, s.value, 0, 255);
    } else if (s.op === 'checksum') {
      const first = integer(`steps[${i}].first`, s.first, 0, pages - 1);
      out[i * FORK_STEP_STRIDE + 1] = first;
      out[i * FORK_STEP_STRIDE + 2] = integer(`steps[${i}].count`, s.count, 0, pages - first);
    } else {
      out[i * FORK_STEP_STRIDE + 1] = integer(`steps[${i}].ms`, s.ms, 0, 60_000);
    }
  });
  return out;
}

/**
 * Forks the process with the region's device entries handled as copy_one_pte does: each device page
 * gains a reference (the child maps it too), and write entries of this private mapping become read
 * entries in parent and child alike, so whoever writes first after migrating back takes a
 * write-protect fault and keeps its own copy.
 */
export async function forkRegion(core: RegionCore, steps: Int32Array, timeoutMs: number): Promise<ChildResult> {
  const { shared, pages } = core;
  const child = new Int32Array(new SharedArrayBuffer((REGION_HEADER + 2 * pages) * 4));
  const next = new Int32Array(pages); // after the fork, in parent and child alike
  const old = lockRange(shared, 0, pages); // as locked: restored if the fork fails
  const taken = new Uint8Array(pages); // pages whose device page the child took a reference to
  let job: number;
  try {
    // A zap someone made before the fork (its REMOVE read, perhaps not applied yet) is the child's
    // too: it never sees the entry. One the servicer applies later came after the copy: the child
    // keeps its entry and its reference, the parent drops its own as it unlocks.
    settleZaps(core);
    for (let p = 0; p < pages; p++) {
      const s = old[p];
      next[p] = s;
      const now = stateOf(shared, p);
      if ((now & ZAP_PENDING) !== 0) {
        child[stateIndex(p)] = KIND_NONE | (now & UNMAPPED);
        continue;
      }
      if ((s & KIND_MASK) === KIND_DEVICE) {
        next[p] = s & ~WRITE;
        const pfn = shared[stateIndex(p) + 1];
        deviceBySlot((s >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT)!.getPage(pfn);
        taken[p] = 1;
        child[stateIndex(p) + 1] = pfn;
      }
      child[stateIndex(p)] = next[p];
    }
    job = native.regionFork(core.handle, steps, child, timeoutMs);
  } catch (e) {
    // The fork never happened: give back the references it took; entries stay as they were.
    for (let p = 0; p < pages; p++) {
      if (taken[p] !== 0) deviceBySlot((old[p] >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT)!.putPage(shared[stateIndex(p) + 1]);
    }
    for (let p = 0; p < pages; p++) release(shared, p, old[p]);
    throw e;
  }
  for (let p = 0; p < pages; p++) release(shared, p, next[p]);
  native.forkStart(job);
  for (;;) {
    const res = native.forkPoll(job);
    if (res !== undefined) return res;
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** region.fork (Region#fork): what the region refuses, the steps checked, then {@link forkRegion}. */
export function fork(core: RegionCore, steps: unknown, options: { timeoutMs?: number } | undefined): Promise<ChildResult> {
  refuseFork(core.mapping, core.servicer);
  const opts = optionsObject('options', options);
  const timeoutMs = opts.timeoutMs === undefined ? 30_000 : integer('options.timeoutMs', opts.timeoutMs, 1, 600_000);
  return forkRegion(core, encodeSteps(steps, core.pages, core.pageSize), timeoutMs);
}
