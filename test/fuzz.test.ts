// Bad input: a child makes >= 10^5 random calls to every public function and method with wrong,
// edge and valid arguments; each must succeed or throw a coded error, never crash or hang.
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { expect, it } from 'vitest';
import { NativeToucher, Region } from 'uffd-hmm';
import { describeUffd, runNode, type NodeOutcome } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/fuzz-child.mjs', import.meta.url));
const CALLS = 100_000;
// A new seed each run explores new sequences; UFFD_HMM_FUZZ_SEED replays a failing one.
const SEED = Number(process.env.UFFD_HMM_FUZZ_SEED ?? (Date.now() % 0x7fffffff) + 1);

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function run(args: string[], timeoutMs: number, inline?: string): Promise<NodeOutcome> {
  const argv = inline === undefined ? [fixture, ...args] : ['--input-type=module', '-e', inline];
  // The test always runs the whole fuzz: no FUZZ_AVOID from the environment.
  return runNode(argv, { cwd: repo, timeoutMs, env: { FUZZ_AVOID: undefined } });
}

describeUffd('bad-input fuzz', () => {
  it(`${CALLS} random calls with bad arguments: only results and coded errors, exit 0 (seed ${SEED})`, async () => {
    const o = await run([String(CALLS), String(SEED)], 45_000);
    const report = `seed ${SEED} (replay: UFFD_HMM_FUZZ_SEED=${SEED}, FUZZ_TRACE=<file> node test/fixtures/fuzz-child.mjs ${CALLS} ${SEED})\n` +
      `code=${o.code} signal=${o.signal} timedOut=${o.timedOut}\n--- stdout\n${o.stdout.slice(-6000)}\n--- stderr\n${o.stderr.slice(-3000)}`;
    expect(o.timedOut, report).toBe(false);
    expect(o.signal, report).toBeNull();
    const line = o.stdout.trim().split('\n').pop() ?? '';
    const res = JSON.parse(line.startsWith('{') ? line : '{}') as { calls?: number; failures?: string[]; byCode?: Record<string, number>; byTarget?: Record<string, number> };
    expect(res.failures, report).toEqual([]);
    expect(o.code, report).toBe(0);
    expect(res.calls).toBe(CALLS);
    // Every public function was really exercised, and both outcomes occurred in bulk.
    expect(Object.keys(res.byTarget ?? {}).length).toBeGreaterThanOrEqual(30);
    expect(res.byCode?.ok).toBeGreaterThan(10_000);
    expect(res.byCode?.ERR_OUT_OF_RANGE).toBeGreaterThan(10_000);
    expect(res.byCode?.ERR_INVALID_ARG_TYPE).toBeGreaterThan(10_000);
  }, 60_000);

  // Minimal reproductions of what the fuzz found, so each failure mode has its own name.
  it('NativeToucher with options.pages null: a coded TypeError, not a property read of null', async () => {
    const r = Region.map({ pages: 2, servicer: 'native' });
    try {
      expect(() => new NativeToucher(r, { iterations: 1, pages: null as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    } finally {
      await r.close();
    }
  });

  it('fork steps whose op is not a string (no primitive value, a detached view): a coded error', async () => {
    const r = Region.map({ pages: 2, servicer: 'native' });
    try {
      const detached = new Uint8Array(8);
      structuredClone(detached.buffer, { transfer: [detached.buffer] });
      for (const op of [Object.create(null), detached]) {
        await expect(r.fork([{ op } as never])).rejects.toMatchObject({ code: expect.stringMatching(/^ERR_INVALID_ARG_(TYPE|VALUE)$/) });
      }
    } finally {
      await r.close();
    }
  });

  it('Region.map of more pages than a bytes view can hold fails cleanly: nothing left registered, a fork after it does not hang', async () => {
    const code = `
      import { readdirSync } from 'node:fs';
      import { spawnSync } from 'node:child_process';
      import { Region } from 'uffd-hmm';
      const fds = () => readdirSync('/proc/self/fd').length;
      const warm = Region.map({ pages: 1 }); warm.bytes[0] = 1; await warm.close();
      const before = fds();
      let code = 'none';
      try { Region.map({ pages: 1 << 21 }); } catch (e) { code = e.code; }
      console.log(JSON.stringify({ code, leakedFds: fds() - before }));
      // A leaked, still-registered region no servicer reads would make this fork wait for ever.
      const res = spawnSync('true', { timeout: 5000 });
      console.log(JSON.stringify({ spawn: res.status }));
    `;
    const o = await run([], 15_000, code);
    const report = `code=${o.code} signal=${o.signal} timedOut=${o.timedOut}\n${o.stdout}\n${o.stderr}`;
    expect({ timedOut: o.timedOut, code: o.code, signal: o.signal }, report).toEqual({ timedOut: false, code: 0, signal: null });
    const [first, second] = o.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(typeof first.code).toBe('string');
    expect(first.leakedFds, report).toBe(0);
    expect(second).toEqual({ spawn: 0 });
  }, 20_000);

  it.each(['none', 'read'])('remap() growing a region under mprotect(%s): new pages get that protection, and migrating them never crashes', async (prot) => {
    const code = `
      import { Device, Region } from 'uffd-hmm';
      const r = Region.map({ pages: 2, servicer: 'native' });
      const d = new Device({ capacity: 4 });
      r.mprotect(0, 2, '${prot}');
      r.remap(4);
      // mremap extends the last vma: the kernel maps the new pages '${prot}' too.
      const snap = [...r.snapshot()];
      r.migrate(2, 2, d);
      r.migrateToRam(2, 2); // CPU pages now, in a vma the CPU may not read
      r.migrate(2, 2, d); // copies them out
      console.log(JSON.stringify({ snap }));
    `;
    const o = await run([], 15_000, code);
    const report = `code=${o.code} signal=${o.signal}\n${o.stdout}\n${o.stderr}`;
    expect({ code: o.code, signal: o.signal }, report).toEqual({ code: 0, signal: null });
    const { snap } = JSON.parse(o.stdout.trim().split('\n').pop()!) as { snap: number[] };
    // HMM_DMIRROR_PROT_ERROR (0xff) for PROT_NONE pages, NONE (0) for readable holes.
    expect(snap, report).toEqual(prot === 'none' ? [0xff, 0xff, 0xff, 0xff] : [0, 0, 0, 0]);
  }, 20_000);
});
