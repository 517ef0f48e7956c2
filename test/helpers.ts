// Shared test helpers: which servicers to run every behaviour against, and small utilities for
// checking bytes without copying whole regions.
import { spawn } from 'node:child_process';
import { afterEach, describe, expect } from 'vitest';
import { probe, type Region } from 'uffd-hmm';

export const uffdAvailable = probe().available;
/** describe() for suites that need real userfaultfd faults (skipped only under the explicit opt-out). */
export const describeUffd = uffdAvailable ? describe : describe.skip;

export const SERVICERS = ['worker', 'native', 'inline'] as const;

/** A byte pattern that differs per page and per offset, so a misplaced page shows. */
export function pattern(page: number, offset: number, seed = 0): number {
  return (page * 131 + offset * 7 + seed * 17 + 1) & 0xff;
}

export function fillPages(region: Region, first: number, count: number, seed = 0): void {
  const ps = region.pageSize;
  for (let p = first; p < first + count; p++) {
    const view = region.bytes.subarray(p * ps, (p + 1) * ps);
    for (let o = 0; o < ps; o += 1) view[o] = pattern(p, o, seed);
  }
}

/** Returns the first mismatching (page, offset), or null when every byte matches. */
export function checkPages(region: Region, first: number, count: number, seed = 0): string | null {
  const ps = region.pageSize;
  for (let p = first; p < first + count; p++) {
    const view = region.bytes.subarray(p * ps, (p + 1) * ps);
    for (let o = 0; o < ps; o++) {
      if (view[o] !== pattern(p, o, seed)) return `page ${p} offset ${o}: ${view[o]} != ${pattern(p, o, seed)}`;
    }
  }
  return null;
}

/**
 * A NativeToucher in 'increment' mode keeps one uint32 counter per thread at the start of each
 * page: every thread made some increments, and the counters over `pages` sum to exactly the
 * increments it made, so none was lost to a migration, zap or release racing it.
 */
export function expectNoLostIncrement(region: Region, pages: number, counts: number[]): void {
  const view = new Uint32Array(region.bytes.buffer, region.bytes.byteOffset, (pages * region.pageSize) / 4);
  for (let k = 0; k < counts.length; k++) {
    let sum = 0;
    for (let p = 0; p < pages; p++) sum += view[(p * region.pageSize) / 4 + k];
    expect(counts[k]).toBeGreaterThan(0);
    expect(sum).toBe(counts[k]);
  }
}

export function crc32(data: Uint8Array): number {
  let crc = ~0;
  for (let i = 0; i < data.length; i++) {
    crc ^= data[i];
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return ~crc >>> 0;
}

/** Something a test opens and must close: a Region, a Device, or any resource with close(). */
export interface Closable {
  close(): Promise<void>;
}

/**
 * Returns track(x): x is closed after the current test, whatever its outcome, last opened first
 * (so regions drop their device references before their devices close).
 */
export function closeAfterEach(): <T extends Closable>(x: T) => T {
  const open: Closable[] = [];
  afterEach(async () => {
    for (const x of open.splice(0).reverse()) await x.close();
  });
  return (x) => {
    open.push(x);
    return x;
  };
}

export interface NodeOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout and stderr as they arrived, for assertion messages. */
  out: string;
  /** The deadline passed and the child was SIGKILLed: a hang, which no test should accept. */
  timedOut: boolean;
  ms: number;
}

export interface NodeRunOptions {
  timeoutMs?: number;
  cwd?: string;
  /** Variables to set (a value of undefined removes one) over this process's environment. */
  env?: Record<string, string | undefined>;
  /** A command that runs node for us, e.g. setpriv to drop to another user. */
  wrapper?: string[];
}

/**
 * Runs `node <nodeArgs>` in a child process with a hard deadline, for cases that must crash with a
 * signal, run as another user, or could hang: none of that can take the test runner down. SIGKILL
 * at the deadline, since a process stuck in fork(2) waiting for a userfaultfd event ignores the rest.
 */
export function runNode(nodeArgs: string[], opts: NodeRunOptions = {}): Promise<NodeOutcome> {
  // The runner's own NODE_OPTIONS (loaders, inspector flags) must not leak into the child.
  const env: Record<string, string | undefined> = { ...process.env, NODE_OPTIONS: undefined, ...opts.env };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  const argv = [...(opts.wrapper ?? []), process.execPath, ...nodeArgs];
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { cwd: opts.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let out = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      out += s;
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s;
      out += s;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 15_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, out, timedOut, ms: Date.now() - started });
    });
  });
}
