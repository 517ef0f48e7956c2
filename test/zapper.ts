// A thread that zaps behind the library's back (MADV_DONTNEED or munmap straight through the addon,
// as any other code in the process could), and the waits that go with it: shared by the tests of
// zaps racing the library's own operations (test/ordering.test.ts, test/zap-races.test.ts).
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { expect } from 'vitest';
import type { Region } from 'uffd-hmm';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nativeUrl = pathToFileURL(path.join(repo, 'dist', 'native.js')).href;

/** Every wait of these tests ends by this deadline. */
export const WAIT_MS = 5000;

export async function until(cond: () => boolean, what: string, ms = WAIT_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 1));
  }
}

/** Threads of this process blocked in the kernel function `wchan`. */
export function blockedIn(wchan: string): number {
  let n = 0;
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      if (readFileSync(`/proc/self/task/${tid}/wchan`, 'utf8') === wchan) n++;
    } catch {
      // the thread exited meanwhile
    }
  }
  return n;
}
/** A thread blocked on a userfaultfd page fault. */
export const IN_FAULT = 'handle_userfault';
/** A thread blocked in madvise/munmap until its EVENT_REMOVE/UNMAP is read. */
export const IN_EVENT = 'userfaultfd_event_wait_completion';

/**
 * A worker_thread that calls madvise(MADV_DONTNEED) or munmap straight through the addon, bypassing
 * the table, as any other code in the process could: only the servicer's EVENT_REMOVE or
 * EVENT_UNMAP tells the library.
 */
export class Zapper {
  readonly #worker: Worker;
  #tid = '';
  readonly #results: number[] = [];

  constructor() {
    this.#worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const tid = require('node:fs').readlinkSync('/proc/thread-self').split('/').pop();
       import(workerData.nativeUrl).then(({ native }) => {
         parentPort.on('message', ({ op, handle, first, count }) =>
           parentPort.postMessage({ rc: op === 'unmap' ? native.regionUnmap(handle, first, count) : native.regionDiscard(handle, first, count) }));
         parentPort.postMessage({ tid });
       });`,
      { eval: true, workerData: { nativeUrl } },
    );
    this.#worker.on('message', (m: { tid?: string; rc?: number }) => {
      if (m.tid !== undefined) this.#tid = m.tid;
      else this.#results.push(m.rc!);
    });
  }

  async ready(): Promise<void> {
    await until(() => this.#tid !== '', 'the zapper thread to start');
  }

  /** Starts MADV_DONTNEED (or munmap) of the pages and waits until it blocks on its unread event. */
  async discard(r: Region, first: number, count: number, op: 'discard' | 'unmap' = 'discard'): Promise<void> {
    const done = this.#results.length;
    this.#worker.postMessage({ op, handle: r.handle, first, count });
    await until(() => this.blocked() || this.#results.length > done, `${op} to block on its event`);
    expect(this.blocked(), `${op} returned before its event was read`).toBe(true);
  }

  /** MADV_DONTNEED of the pages, waiting for it to return (its REMOVE read, perhaps not applied). */
  async discardNow(r: Region, first: number, count: number): Promise<number> {
    this.#worker.postMessage({ op: 'discard', handle: r.handle, first, count });
    return this.finished();
  }
  blocked(): boolean {
    try {
      return readFileSync(`/proc/self/task/${this.#tid}/wchan`, 'utf8') === IN_EVENT;
    } catch {
      return false;
    }
  }

  /** Waits for the madvise (or munmap) in progress to return; its result. */
  async finished(): Promise<number> {
    await until(() => this.#results.length > 0, 'madvise to return');
    return this.#results.shift()!;
  }

  async close(): Promise<void> {
    await this.#worker.terminate();
  }
}
