// A migration never touches region memory while it holds that memory's lock (issue #22, item 1):
// a zap by another thread between the migration's look at the page table and its copy must not
// make the copy fault on a page the migrating thread itself holds locked (no servicer would ever
// serve it: a permanent hang). Each servicer runs in a child process with a deadline, so a hang
// fails the test instead of hanging the runner.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, expect, it } from 'vitest';
import { SERVICERS, describeUffd, runNode, type NodeOutcome } from './helpers.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const child = fileURLToPath(new URL('./fixtures/migrate-zap-race.mjs', import.meta.url));
const LOOP_MS = 3000;

const runs = new Map<string, Promise<NodeOutcome>>();
beforeAll(() => {
  for (const s of SERVICERS) runs.set(s, runNode([child, s, String(LOOP_MS)], { cwd: repo, timeoutMs: LOOP_MS + 20_000 }));
});

describeUffd('a raw MADV_DONTNEED racing migrate / migrateToRam loops', () => {
  it.each(SERVICERS)('%s servicer: the main thread never hangs, and no byte is lost', async (servicer) => {
    const out = await runs.get(servicer)!;
    expect(out.timedOut, `the child hung (killed after ${out.ms} ms): ${out.out}`).toBe(false);
    expect(out.code, out.out).toBe(0);
    const res = JSON.parse(out.stdout.trim().split('\n').pop()!) as { rounds: number; zaps: number; bad: string | null; lastOk: boolean; used: number };
    expect(res.rounds, out.out).toBeGreaterThan(20);
    expect(res.zaps, out.out).toBeGreaterThan(20);
    expect(res).toMatchObject({ bad: null, lastOk: true, used: 0 });
  }, LOOP_MS + 30_000);
});
