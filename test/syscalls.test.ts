// System calls per served fault, counted by the kernel's own tracer rather than timed: a host that
// charges more per system call (page-table isolation, a slow hypervisor) shows every extra call as
// latency, so none may creep back in. strace counts every call of the child over two runs that
// differ only in how many device faults they serve; the difference divided by the extra faults is
// the per-fault cost, free of start-up and teardown.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { describeUffd, runNode } from './helpers.js';

const child = new URL('./fixtures/fault-syscalls.mjs', import.meta.url).pathname;
const straceFound = spawnSync('strace', ['-V'], { stdio: 'ignore' }).status === 0;
const allowNoStrace = process.env.UFFD_HMM_ALLOW_NO_STRACE === '1';

/**
 * The most system calls a served device fault may cost, per servicer. inline: the fill and the
 * return from the SIGBUS handler. native: poll, read and the fill, which wakes the thread itself
 * (the books are done before it). worker: epoll_wait, read and that fill.
 */
const CEILING = { inline: 2, native: 3, worker: 3 } as const;
// Background threads (V8's platform workers, the GC) add a few futex calls between the two runs.
const NOISE = 0.25;

const dir = mkdtempSync(path.join(tmpdir(), 'uffd-hmm-syscalls-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** strace -c's table: calls per system call name. */
function parseSummary(text: string): Map<string, number> {
  const calls = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$/.exec(line);
    if (m && m[2] !== 'total') calls.set(m[2], Number(m[1]));
  }
  return calls;
}

async function countCalls(servicer: string, pages: number, touch: number): Promise<Map<string, number>> {
  const out = path.join(dir, `${servicer}-${touch}.txt`);
  const r = await runNode([child, servicer, String(pages), String(touch)], {
    wrapper: ['strace', '-f', '-c', '-o', out],
    timeoutMs: 60_000,
  });
  expect(r.timedOut, r.out).toBe(false);
  expect(r.code, r.out).toBe(0);
  expect(JSON.parse(r.stdout.trim().split('\n').at(-1)!).migratedBack, r.out).toBe(touch);
  return parseSummary(readFileSync(out, 'utf8'));
}

describeUffd('system calls per served device fault (strace)', () => {
  if (!straceFound && !allowNoStrace) {
    it('needs strace', () => {
      throw new Error('strace is not installed: apt-get install strace (or set UFFD_HMM_ALLOW_NO_STRACE=1 to skip these counts)');
    });
    return;
  }
  const N = 1000;
  for (const servicer of ['inline', 'native', 'worker'] as const) {
    it.skipIf(!straceFound)(`${servicer}: at most ${CEILING[servicer]}`, async () => {
      const once = await countCalls(servicer, 2 * N, N);
      const twice = await countCalls(servicer, 2 * N, 2 * N);
      const perFault = new Map<string, number>();
      for (const name of new Set([...once.keys(), ...twice.keys()])) {
        const d = ((twice.get(name) ?? 0) - (once.get(name) ?? 0)) / N;
        if (Math.abs(d) >= 0.01) perFault.set(name, Math.round(d * 100) / 100);
      }
      const total = [...perFault.values()].reduce((a, b) => a + b, 0);
      const breakdown = JSON.stringify(Object.fromEntries(perFault));
      expect(total, `per fault: ${breakdown}`).toBeLessThanOrEqual(CEILING[servicer] + NOISE);
      // Every fault is served by exactly one fill: fewer would mean the count missed the faults.
      expect(perFault.get('ioctl') ?? 0, breakdown).toBeGreaterThanOrEqual(1);
    }, 120_000);
  }
});
