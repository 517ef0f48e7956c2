// Runs one sequence of operations against a real Region and the reference model side by side and,
// after every step, compares every entry, every byte, refcounts, device.used and the stats. Some
// steps race something for real: a zap by another thread (races.ts says which outcomes the model
// accepts), a madvise the kernel refuses (native/test_hooks.cc), a slow driver hook, a kernel-mode
// access a driver refuses, a multi-page copy cut short, a worker that stalls.
import { Device, NativeToucher, Region, type ServicerKind } from 'uffd-hmm';
import { spawnSync } from 'node:child_process';
import { appendFileSync, closeSync, existsSync, mkdtempSync, openSync, readSync, rmSync, writeFile, writeFileSync, writeSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import path from 'node:path';
import { native } from '../../dist/native.js';
import { thpBlocks } from '../../dist/mm/huge.js';
import { LOCKED, ZAP_BATCHES_DONE, ZAP_BATCHES_READ, ZAP_READING, stateIndex } from '../../dist/layout.js';
import { LOCK_DEADLINE_MS, setLockDeadlineForTest } from '../../dist/pagelock.js';
import type { Zapper } from '../zapper.js';
import { compareAll } from './compare.js';
import { Model, PAGE_SIZE, PMD_PAGES, type MChildStep, type Prot } from './model.js';
import { heldPage, range, refusedZap, zapCandidates, type Held, type Raced } from './races.js';

/** Device 1's driver refuses faults taken inside system calls (the worker servicer asks it). */
const REFUSING_DRIVER = new URL('./fixtures/refuse-kernel.mjs', import.meta.url);
/** In stall scenarios it also stalls the worker on every CPU fault, past the stall deadline. */
const STALLING_DRIVER = new URL('./fixtures/stall-or-refuse.mjs', import.meta.url);
/** Bytes a kernel-mode access (write(2) from the region) reads. */
const SYSCALL_LEN = 16;

// UFFD_HMM_MODEL_TRACE=<file> appends every scenario and step as it starts: the last line written
// before a hang names the step that hung.
const trace = process.env.UFFD_HMM_MODEL_TRACE;

export type Op =
  | { op: 'migrate'; first: number; count: number; dev: number; write?: boolean }
  | { op: 'migrateToRam'; first: number; count: number }
  | { op: 'read'; page: number; offset: number }
  | { op: 'write'; page: number; offset: number; value: number }
  | { op: 'deviceWrite'; page: number; offset: number; value: number }
  | { op: 'discard'; first: number; count: number }
  | { op: 'mprotect'; first: number; count: number; prot: Prot }
  | { op: 'fork'; steps: MChildStep[] }
  | { op: 'remap'; pages: number }
  | { op: 'closeDevice'; dev: number }
  | { op: 'openDevice'; dev: number }
  | { op: 'closeRegion' }
  | { op: 'map' }
  /** Another thread zaps [first, first + count) (at most 3 pages) while `then` runs. */
  | { op: 'race'; first: number; count: number; then: RaceThen }
  /** The kernel refuses the first madvise of `then`. */
  | { op: 'refuseZap'; then: Extract<Op, { op: 'discard' | 'migrate' }> }
  /** A fault on `page` (a device entry on device 1, whose driver is slow) holds it while `then` runs. */
  | { op: 'slowHook'; page: number; then: Op }
  /** write(2) of 16 bytes from the page to a file: a kernel-mode access (S10), refused on device 1. */
  | { op: 'syscallRead'; page: number; offset: number }
  /** A read whose fault's multi-page copy (a huge entry's) stops after `cut` pages (testCutCopy). */
  | { op: 'readCut'; page: number; offset: number; cut: number }
  /** migrateToRam with its first multi-page copy stopping after `cut` pages. */
  | { op: 'migrateToRamCut'; first: number; count: number; cut: number }
  /** THP regions: MADV_COLLAPSE of the first PMD, tried when the model says every page allows it. */
  | { op: 'collapse' }
  /** Every page written (byte 0 and 4095): the region made ready to collapse. */
  | { op: 'fillAll'; value: number }
  /**
   * Stall scenarios: a native thread adds 1 to the page's first uint32; on a device-1 page the
   * driver stalls the worker and the watchdog takes the region over. With spawn, the process
   * forks (spawnSync) during that stall.
   */
  | { op: 'stallTouch'; page: number; spawn: boolean };

export type RaceThen = Extract<Op, { op: 'migrate' | 'migrateToRam' | 'remap' | 'fork' }>;

export interface Scenario {
  servicer: ServicerKind;
  pages: number;
  capacities: [number, number];
  ops: Op[];
  /** A THP region (pages: one PMD), collapsed by its ops. */
  thp?: boolean;
  /** Device 1's driver stalls CPU faults (the process runs with a short stall deadline). */
  stall?: boolean;
}

/** What some steps need: a thread that zaps (race), device 1's slow driver and its flag file (slowHook). */
export interface RunEnv {
  zapper?: Zapper;
  slowDriver?: { url: URL; flag: string };
}

/** How often the runs reached the paths of the engine's edges (refusals, huge entries, cut copies, stalls), for the test's summary line. */
export const reached = { stalls: 0, forksDuringStall: 0, refusals: 0, hugeEntries: 0, hugeFaults: 0, cutCopies: 0 };

/** Thrown when real and model disagree: names the step and what differed. */
export class Divergence extends Error {}

const codeOf = (e: unknown): string => (e as { code?: string }).code ?? String(e);
/** How long the servicer holds the batch with a racing zap, unapplied. */
const RACE_HOLD_MS = 20;
/** The page-lock deadline while a slow hook holds a page (its hook takes 700 ms: slow-driver.mjs). */
const SLOW_DEADLINE_MS = 120;

/** Runs fn; a coded error becomes { error: code }, so that real and model compare as results. */
async function outcome(fn: () => unknown): Promise<unknown> {
  try {
    return await fn();
  } catch (e) {
    if (typeof (e as { code?: unknown }).code === 'string') return { error: codeOf(e) };
    throw e;
  }
}

async function waitFor(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * Executes `s` on a fresh region and devices. Operations the current state makes illegal or
 * undefined (touching a page under PROT_NONE, a device write to a page not on a device) are skipped,
 * so every shrunk sequence is still a valid program. Returns the executed steps, for messages.
 */
export async function runScenario(s: Scenario, env: RunEnv = {}): Promise<string[]> {
  if (trace) appendFileSync(trace, `scenario ${JSON.stringify({ ...s, ops: undefined })}\n`);
  let model = new Model(s.pages, s.capacities);
  // Device 1's driver: the slow one for slow-hook scenarios; else one that refuses faults taken in
  // system calls (and, in stall scenarios, stalls the worker on CPU faults).
  const driverOf1 = (): URL => env.slowDriver?.url ?? (s.stall ? STALLING_DRIVER : REFUSING_DRIVER);
  const newDevice = (i: number): Device =>
    new Device({ capacity: s.capacities[i], name: `model-dev${i}`, ...(i === 1 ? { driver: driverOf1() } : {}) });
  const devices = s.capacities.map((_, i) => newDevice(i));
  const mapRegion = (): Region =>
    Region.map({ pages: s.pages, servicer: s.servicer, ...(s.servicer === 'inline' ? {} : { countKernelFaults: true }), ...(s.thp ? { thp: true } : {}) });
  let region = mapRegion();
  // The refusing driver is asked only by a worker servicer, and not once a guard took the region over.
  const refuses = (dev: number): boolean => s.servicer === 'worker' && dev === 1 && env.slowDriver === undefined && !region.guarded;
  const tolerated = (e: unknown): boolean => s.stall === true && codeOf(e) === 'ERR_SERVICER_STALLED';
  let thpBefore: number[] = [];
  const dir = mkdtempSync(path.join(tmpdir(), 'uffd-hmm-model-'));
  const out = openSync(path.join(dir, 'syscall'), 'w+');
  const errors: unknown[] = [];
  region.on('error', (e) => errors.push(e));
  // Per device: model page id -> real pfn, the consistent renaming of device page numbers.
  const rename = devices.map(() => new Map<number, number>());
  const log: string[] = [];
  const fail = (msg: string): never => {
    throw new Divergence(`${msg}\n  after steps:\n    ${log.join('\n    ')}`);
  };
  const same = (what: string, real: unknown, want: unknown): void => {
    if (JSON.stringify(real) !== JSON.stringify(want)) fail(`${what}: real ${JSON.stringify(real)}, model ${JSON.stringify(want)}`);
  };
  /** Runs the synchronous `fn` expecting it to throw ERR_DEVICE_CLOSED. */
  const expectClosed = (what: string, fn: () => unknown): void => {
    try {
      fn();
    } catch (e) {
      if (codeOf(e) === 'ERR_DEVICE_CLOSED') return;
      fail(`${what}: threw ${codeOf(e)} (${(e as Error).message}), expected ERR_DEVICE_CLOSED`);
    }
    fail(`${what}: returned, expected ERR_DEVICE_CLOSED`);
  };
  /** Runs `fn` expecting it to throw `code`. */
  const throws = async (what: string, code: string, fn: () => unknown): Promise<void> => {
    same(what, await outcome(fn), { error: code });
  };
  /** The first of the models (and results) the real region matches; fails with the first's divergence. */
  const oneOf = (desc: string, got: unknown, candidates: { model: Model; result: unknown }[]): void => {
    const misses: string[] = [];
    for (const c of candidates) {
      const kept = model;
      const renamed = rename.map((r) => new Map(r));
      model = c.model;
      try {
        same(`result of ${desc}`, got, c.result);
        compare();
        return;
      } catch (e) {
        if (!(e instanceof Divergence)) throw e;
        misses.push((e as Error).message.split('\n')[0]);
        model = kept;
        renamed.forEach((r, i) => (rename[i] = r));
      }
    }
    fail(`no order of the racing zap the model accepts matches:\n    ${misses.join('\n    ')}`);
  };

  try {
    for (const op of s.ops) {
      const m = model.region;
      const desc = JSON.stringify(op);
      if (trace) appendFileSync(trace, `  ${desc}\n`);
      if (op.op === 'map') {
        if (m.open) continue;
        log.push(desc);
        region = mapRegion();
        region.on('error', (e) => errors.push(e));
        model.region = Model.newRegion(s.pages);
      } else if (op.op === 'openDevice') {
        if (model.devices[op.dev].open) continue;
        log.push(desc);
        devices[op.dev] = newDevice(op.dev);
        rename[op.dev] = new Map();
        model.devices[op.dev] = Model.newDevice(s.capacities[op.dev]);
      } else if (op.op === 'closeDevice') {
        if (!model.devices[op.dev].open) continue;
        log.push(desc);
        await devices[op.dev].close();
        model.closeDevice(op.dev);
      } else if (!m.open) {
        // Every region operation on a closed region is refused with a coded error; its bytes view
        // is detached (length 0), so a CPU access reaches no memory at all.
        if (op.op === 'closeRegion' || op.op === 'race' || op.op === 'refuseZap' || op.op === 'slowHook' || op.op === 'collapse' || op.op === 'fillAll') continue;
        if (op.op === 'read' || op.op === 'write' || op.op === 'readCut' || op.op === 'syscallRead' || op.op === 'stallTouch') {
          same('bytes of a closed region', region.bytes.length, 0);
          continue;
        }
        log.push(desc);
        await throws(desc, 'ERR_REGION_CLOSED', () => apply(op));
        continue;
      } else if (op.op === 'closeRegion') {
        log.push(desc);
        await region.close();
        model.closeRegion();
        same('bytes after close', region.bytes.length, 0);
      } else if (op.op === 'race') {
        if (!applicable(op) || !applicable(op.then)) continue;
        log.push(desc);
        const [f, c] = range(op.first, op.count, m.pages);
        const steps = op.then.op === 'fork' ? childSteps(op.then.steps) : [];
        const got = await race(f, c, op.then, steps);
        const raced: Raced = op.then.op === 'fork' ? { op: 'fork', run: (mm) => forkModel(mm, steps) } : op.then;
        oneOf(desc, got, zapCandidates(model, Array.from({ length: c }, (_, i) => f + i), raced, (d) => model.devices[d].open));
      } else if (op.op === 'refuseZap') {
        if (!applicable(op.then)) continue;
        log.push(desc);
        native.testFailMadvise(region.handle, 0, constants.errno.ENOMEM);
        let got: unknown;
        try {
          got = await outcome(() => apply(op.then));
        } finally {
          native.testFailMadvise(region.handle, 0, 0);
        }
        const refused = op.then.op === 'migrate' && !model.devices[op.then.dev].open ? undefined : refusedZap(model, op.then);
        same(`result of ${desc}`, got, refused ?? applyModel(op.then));
      } else if (op.op === 'slowHook') {
        if (!applicable(op)) continue;
        log.push(desc);
        const held = hookPage(op.page);
        const got = await slowHook(held, op.then);
        const blocked = heldOp(op.then);
        const want = (blocked && heldPage(model, blocked, held)) ?? applyModel(op.then);
        same(`result of ${desc}`, got, want);
        // The hook's fault (a write(2) of 8 bytes from the page: kernel mode) is served last; the slow driver migrates.
        model.syscallRead(held, 0, 8, false, () => false);
      } else {
        if (!applicable(op)) continue;
        log.push(desc);
        same(`result of ${desc}`, await outcome(() => apply(op)), applyModel(op));
      }
      compare();
      if (errors.some((e) => !tolerated(e))) fail(`the region reported errors: ${errors.map((e) => codeOf(e)).join(', ')}`);
    }
  } finally {
    if (!region.closed) await region.close();
    for (const d of devices) if (!d.closed) await d.close();
    closeSync(out);
    rmSync(dir, { recursive: true, force: true });
  }
  return log;

  function applicable(op: Op): boolean {
    const m = model.region;
    const n = m.pages;
    switch (op.op) {
      case 'read':
        return m.prot[op.page % n] !== 'none';
      case 'readCut':
        return m.prot[op.page % n] !== 'none';
      case 'fillAll':
        return m.prot.every((p) => p === 'readwrite');
      case 'collapse':
        return s.thp === true && model.collapsible(0);
      case 'write':
      case 'stallTouch':
        return m.prot[op.page % n] === 'readwrite';
      case 'deviceWrite':
        return m.entries[op.page % n].kind === 'device';
      case 'race':
        return s.servicer !== 'inline' && env.zapper !== undefined;
      case 'slowHook': {
        const then = op.then;
        const held = hookPage(op.page);
        if (s.servicer !== 'worker' || env.slowDriver === undefined || held < 0) return false;
        // Not what would wait for the hook's own fault, or change the devices or the region as a whole.
        if (['closeRegion', 'map', 'openDevice', 'closeDevice', 'race', 'refuseZap', 'slowHook'].includes(then.op)) return false;
        if ((then.op === 'read' || then.op === 'write') && then.page % n === held) return false;
        return applicable(then);
      }
      default:
        return true;
    }
  }

  /**
   * The page a slow hook holds: the first from `page` on (wrapping around) whose fault reaches the
   * hook, a readable device entry on device 1 (the fault is a write(2) from it); -1 when none is.
   */
  function hookPage(page: number): number {
    const m = model.region;
    for (let i = 0; i < m.pages; i++) {
      const p = (page + i) % m.pages;
      const e = m.entries[p];
      if (e.kind === 'device' && e.dev === 1 && m.prot[p] !== 'none') return p;
    }
    return -1;
  }

  /** The step a slow hook's page blocks, as races.ts describes it, or undefined. */
  function heldOp(op: Op): Held | undefined {
    if (op.op === 'discard' || op.op === 'mprotect' || op.op === 'migrateToRam') return op;
    if (op.op === 'migrate') return model.devices[op.dev].open ? op : undefined;
    if (op.op === 'remap') return s.servicer === 'inline' || model.remapSplit(op.pages) ? undefined : op;
    if (op.op === 'fork') return s.servicer === 'inline' ? undefined : op;
    return undefined;
  }

  /** Child steps that would crash the child (PROT_NONE, a write to a read-only page) are left out. */
  function childSteps(steps: MChildStep[]): MChildStep[] {
    const m = model.region;
    const n = m.pages;
    return steps
      .map((st): MChildStep => {
        if (st.op === 'checksum') {
          const [first, count] = range(st.first, st.count, n);
          return { op: 'checksum', first, count };
        }
        return { ...st, page: st.page % n };
      })
      .filter((st) => {
        if (st.op === 'checksum') return m.prot.slice(st.first, st.first + st.count).every((p) => p !== 'none');
        return st.op === 'read' ? m.prot[st.page] !== 'none' : m.prot[st.page] === 'readwrite';
      });
  }

  function forkModel(mm: Model, steps: MChildStep[]): unknown {
    return { results: mm.fork(steps), exitCode: 0, signal: null };
  }

  async function apply(op: Op, steps?: MChildStep[]): Promise<unknown> {
    const n = model.region.open ? model.region.pages : s.pages;
    switch (op.op) {
      case 'migrate': {
        const [f, c] = range(op.first, op.count, n);
        // Whether the kernel backs a block with a THP is its own business (collapse, khugepaged):
        // the model is told what the migration finds.
        thpBefore = s.thp && model.devices[op.dev].open ? thpBlocks(region.handle, region.address, f, c) : [];
        return region.migrate(f, c, devices[op.dev], op.write === undefined ? undefined : { write: op.write });
      }
      case 'migrateToRam':
        return region.migrateToRam(...range(op.first, op.count, n));
      case 'read':
        return region.bytes[(op.page % n) * PAGE_SIZE + op.offset];
      case 'readCut': {
        native.testCutCopy(region.handle, op.cut);
        try {
          return region.bytes[(op.page % n) * PAGE_SIZE + op.offset];
        } finally {
          native.testCutCopy(region.handle, 0); // not taken (no multi-page copy): cancelled
        }
      }
      case 'migrateToRamCut': {
        native.testCutCopy(region.handle, op.cut);
        try {
          return region.migrateToRam(...range(op.first, op.count, n));
        } finally {
          native.testCutCopy(region.handle, 0);
        }
      }
      case 'syscallRead': {
        const at = (op.page % n) * PAGE_SIZE + Math.min(op.offset, PAGE_SIZE - SYSCALL_LEN);
        try {
          if (writeSync(out, region.bytes, at, SYSCALL_LEN, 0) !== SYSCALL_LEN) return fail('a short write(2)');
        } catch (e) {
          return codeOf(e);
        }
        const back = new Uint8Array(SYSCALL_LEN);
        readSync(out, back, 0, SYSCALL_LEN, 0);
        return [...back];
      }
      case 'collapse':
        try {
          region.collapse(0, PMD_PAGES);
        } catch (e) {
          // No free 2 MiB page, or pages the kernel still held: its call, not ours; a THP or not,
          // the next migration finds out (thpBlocks).
          if (codeOf(e) !== 'ENOMEM' && codeOf(e) !== 'EAGAIN') throw e;
        }
        return undefined;
      case 'fillAll':
        for (let p = 0; p < n; p++) {
          region.bytes[p * PAGE_SIZE] = op.value;
          region.bytes[p * PAGE_SIZE + PAGE_SIZE - 1] = (op.value + p) & 0xff;
        }
        return undefined;
      case 'stallTouch': {
        const page = op.page % n;
        const e = model.region.entries[page];
        const stalls = s.servicer === 'worker' && e.kind === 'device' && e.dev === 1 && !region.guarded;
        const t = new NativeToucher(region, { threads: 1, iterations: 1, mode: 'increment', pages: [page] });
        if (op.spawn) {
          await new Promise((res) => setTimeout(res, 20));
          const res = spawnSync('true', { timeout: 20_000 }); // a fork while the worker is stuck
          if (res.status !== 0) return fail(`spawnSync during a stall: status ${res.status}, ${String(res.error)}`);
        }
        await t.finished(20_000);
        if (stalls) {
          reached.stalls++;
          if (op.spawn) reached.forksDuringStall++;
          // The host hears of the takeover on its next check; a region mapped before that would
          // join the dead worker's poller (and be guarded at once, where the model expects hooks).
          const deadline = Date.now() + 10_000;
          while (!errors.some(tolerated) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
          if (!region.guarded) return fail('a stalled hook: the region was not taken over');
        }
        return undefined;
      }
      case 'write':
        region.bytes[(op.page % n) * PAGE_SIZE + op.offset] = op.value;
        return undefined;
      case 'deviceWrite': {
        const e = region.entry(op.page % n);
        if (e.kind !== 'device') return fail(`deviceWrite: page ${op.page % n} is ${e.kind} in the real region`);
        e.device.write(e.pfn, new Uint8Array([op.value]), op.offset);
        return undefined;
      }
      case 'discard':
        region.discard(...range(op.first, op.count, n));
        return undefined;
      case 'mprotect': {
        const [f, c] = range(op.first, op.count, n);
        region.mprotect(f, c, op.prot);
        return undefined;
      }
      case 'fork': {
        const res = await region.fork(steps ?? childSteps(op.steps), { timeoutMs: 20_000 });
        return { results: res.results, exitCode: res.exitCode, signal: res.signal };
      }
      case 'remap':
        region.remap(op.pages);
        return undefined;
      default:
        return fail(`apply: unexpected ${op.op}`);
    }
  }

  function applyModel(op: Op): unknown {
    const n = model.region.pages;
    switch (op.op) {
      case 'migrate': {
        if (!model.devices[op.dev].open) return { error: 'ERR_DEVICE_CLOSED' };
        const [f, c] = range(op.first, op.count, n);
        const moved = model.migrate(f, c, op.dev, op.write, new Set(), thpBefore);
        if (thpBefore.length > 0 && model.hugeWhole(thpBefore[0])) reached.hugeEntries++;
        return moved;
      }
      case 'readCut': {
        const p = op.page % n;
        if (model.region.entries[p].kind === 'device' && model.hugeWhole(p)) reached.cutCopies++;
        return model.read(p, op.offset, op.cut);
      }
      case 'migrateToRamCut':
        return model.migrateToRam(...range(op.first, op.count, n));
      case 'syscallRead': {
        const r = model.syscallRead(op.page % n, Math.min(op.offset, PAGE_SIZE - SYSCALL_LEN), SYSCALL_LEN, s.servicer === 'inline', refuses);
        const e = model.region.entries[op.page % n];
        if (r === 'EFAULT' && e.kind === 'device') reached.refusals++;
        return r;
      }
      case 'collapse':
        return undefined;
      case 'fillAll':
        for (let p = 0; p < n; p++) {
          model.write(p, 0, op.value);
          model.write(p, PAGE_SIZE - 1, (op.value + p) & 0xff);
        }
        return undefined;
      case 'stallTouch': {
        // A plain read, then write, of the little-endian uint32 at byte 0 (native/toucher.cc).
        const page = op.page % n;
        model.read(page, 0);
        const b = model.content(page);
        let v = (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
        v = (v + 1) >>> 0;
        for (let i = 0; i < 4; i++) model.write(page, i, (v >>> (8 * i)) & 0xff);
        return undefined;
      }
      case 'migrateToRam':
        return model.migrateToRam(...range(op.first, op.count, n));
      case 'read': {
        const p = op.page % n;
        if (model.region.entries[p].kind === 'device' && model.hugeWhole(p)) reached.hugeFaults++;
        return model.read(p, op.offset);
      }
      case 'write':
        model.write(op.page % n, op.offset, op.value);
        return undefined;
      case 'deviceWrite':
        model.deviceWrite(op.page % n, op.offset, op.value);
        return undefined;
      case 'discard':
        model.discard(...range(op.first, op.count, n));
        return undefined;
      case 'mprotect': {
        const [f, c] = range(op.first, op.count, n);
        model.mprotect(f, c, op.prot);
        return undefined;
      }
      case 'fork':
        if (s.servicer === 'inline') return { error: 'ERR_SERVICER_UNSUPPORTED' };
        return forkModel(model, childSteps(op.steps));
      case 'remap':
        if (s.servicer === 'inline') return { error: 'ERR_SERVICER_UNSUPPORTED' };
        if (model.remapSplit(op.pages)) return { error: 'EFAULT' };
        model.remap(op.pages);
        return undefined;
      default:
        return fail(`model: unexpected ${op.op}`);
    }
  }

  /**
   * Another thread zaps pages [f, f + c) while `then` runs: the servicer reads the zap's REMOVE
   * (so the madvise returns, the kernel's zap done) and holds it, unapplied, for RACE_HOLD_MS, while
   * `then` takes its pages. Waits until the zap is applied before anything is compared.
   */
  async function race(f: number, c: number, then: RaceThen, steps: MChildStep[]): Promise<unknown> {
    native.testHoldServicer(region.handle, 1, RACE_HOLD_MS);
    const rc = await env.zapper!.discardNow(region, f, c);
    if (rc !== 0) fail(`the racing madvise failed: ${rc}`);
    const got = await outcome(() => apply(then, steps));
    native.testReleaseServicer(region.handle, 0);
    const sh = region.shared;
    await waitFor(
      () => Atomics.load(sh, ZAP_READING) === 0 && Atomics.load(sh, ZAP_BATCHES_DONE) - Atomics.load(sh, ZAP_BATCHES_READ) >= 0,
      'the racing zap to be applied',
    );
    return got;
  }

  /**
   * A write(2) from page `held` on a libuv thread faults on its device entry; the slow hook holds
   * the page locked (700 ms) while `then` runs with a short page-lock deadline. Waits for the write.
   */
  async function slowHook(held: number, then: Op): Promise<unknown> {
    const { flag } = env.slowDriver!;
    writeFileSync(flag, '');
    const sink = `${flag}.sink`;
    const written = new Promise<void>((resolve, reject) =>
      writeFile(sink, region.bytes.subarray(held * PAGE_SIZE, held * PAGE_SIZE + 8), (e) => (e ? reject(e) : resolve())),
    );
    await waitFor(() => !existsSync(flag) && (Atomics.load(region.shared, stateIndex(held)) & LOCKED) !== 0, 'the slow hook to hold its page');
    setLockDeadlineForTest(SLOW_DEADLINE_MS);
    let got: unknown;
    try {
      got = await outcome(() => apply(then));
    } finally {
      setLockDeadlineForTest(LOCK_DEADLINE_MS);
    }
    await written;
    await waitFor(() => (Atomics.load(region.shared, stateIndex(held)) & LOCKED) === 0, 'the slow hook to let its page go');
    return got;
  }

  function compare(): void {
    compareAll({ model, region, devices, rename, same, fail, expectClosed });
  }
}

/**
 * Starts the process's worker servicer and waits until it serves a fault. A fork while that
 * worker is still starting deadlocks the process (see regressions.test.ts, "fork right after the
 * first worker region"); the property test is about the model, so it steps around that bug.
 */
export async function warmWorkerServicer(): Promise<void> {
  const r = Region.map({ pages: 1, servicer: 'worker' });
  r.bytes[0] = 1; // returns only once the worker served the fault
  await r.close();
}
