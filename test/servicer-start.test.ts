// The worker servicer starts whatever the process's flags, and a start that fails (no file
// descriptors left) leaves either a clear error at map time or a region a native guard serves:
// never one whose first touch hangs. Each case runs in a child (flags, a descriptor limit), with a
// deadline that turns a hang into a failure.
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { describeUffd, runNode, type NodeOutcome } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/servicer-start.mjs', import.meta.url));
const lowNofile = ['prlimit', '--nofile=120:120'];

function result(o: NodeOutcome): unknown {
  const line = o.stdout.split('\n').find((l) => l.startsWith('{') || l.startsWith('['));
  if (o.timedOut || o.code !== 0 || line === undefined) {
    throw new Error(`code=${o.code} signal=${o.signal} timedOut=${o.timedOut} (${o.ms} ms)\n${o.out}`);
  }
  return JSON.parse(line);
}

// Test runners and memory tests start node with these; a worker given them explicitly refuses to start.
const FLAGS = [
  ['--expose-gc'],
  ['--max-old-space-size=512'],
  ['--stack-size=2000'],
  ['--abort-on-uncaught-exception'],
  ['--title=uffd-hmm-test'],
  ['--jitless'],
  ['--expose-gc', '--max-old-space-size=512', '--no-warnings', '--enable-source-maps'],
];

describeUffd('the worker servicer starts under common node flags', () => {
  it.each(FLAGS.map((f) => [f.join(' '), f]))('node %s', async (_, flags) => {
    const out = result(await runNode([...(flags as string[]), fixture, 'flags'], { timeoutMs: 30_000 }));
    expect(out).toEqual({ moved: 8, bad: [], faults: 8, guarded: false, execArgv: flags });
  });

  it('node --input-type=module -e (a worker that inherits --input-type refuses a module file as its entry)', async () => {
    const script = `process.argv[2] = 'flags'; await import(${JSON.stringify(new URL(fixture, 'file:').href)});`;
    const out = result(await runNode(['--input-type=module', '-e', script], { timeoutMs: 30_000 }));
    expect(out).toMatchObject({ moved: 8, bad: [], faults: 8, guarded: false });
  });
});

describeUffd('the worker servicer out of file descriptors (ulimit -n 120)', () => {
  it('a map that fails for want of descriptors gives back every one it took', async () => {
    const out = result(await runNode([fixture, 'emfile-no-leak'], { wrapper: lowNofile, timeoutMs: 30_000 }));
    // One free descriptor: the userfaultfd opens, the worker's epoll fd does not. Two: its eventfd
    // does not. Either way, five failed maps later exactly as many descriptors are free.
    expect(out).toEqual([
      { free: 1, errors: Array(5).fill('EMFILE epoll_create1'), freeAfter: 1 },
      { free: 2, errors: Array(5).fill('EMFILE eventfd'), freeAfter: 2 },
    ]);
  });

  it('a worker that cannot start is reported, and a guard without an eventfd of its own serves the region', async () => {
    const out = result(await runNode([fixture, 'emfile-after-map'], { wrapper: lowNofile, timeoutMs: 30_000 }));
    expect(out).toMatchObject({
      error: { code: 'ERR_SERVICER_FAILED', cause: 'ERR_WORKER_INIT_FAILED' },
      guarded: true,
      moved: 8,
      bad: [],
      faults: 8,
      again: { moved: 8, bad: [], faults: 8, guarded: false },
    });
    expect((out as { error: { message: string } }).error.message).toMatch(/^the worker servicer could not start .*ulimit -n\)$/);
  });

  // The main thread blocks in the fault, so it cannot hear of the worker's death; the native
  // watchdog sees that the worker's thread ended without attaching and hands the region to a guard
  // (it used to wait out a 10 s start deadline: blockedMs 10,016 to 10,022).
  it('a touch that blocks the main thread before the worker died is served within 1 s', async () => {
    const out = result(await runNode([fixture, 'emfile-blocked'], { wrapper: lowNofile, timeoutMs: 40_000 }));
    expect(out).toMatchObject({ error: { code: 'ERR_SERVICER_FAILED', cause: 'ERR_WORKER_INIT_FAILED' }, guarded: true, moved: 8, bad: [], faults: 8 });
    expect((out as { blockedMs: number }).blockedMs).toBeLessThan(1_000);
  }, 60_000);

  it('regions mapped until EMFILE while the worker starts: a touch of the last one is served within 1 s', async () => {
    const out = result(await runNode([fixture, 'emfile-map-until'], { wrapper: lowNofile, timeoutMs: 40_000 }));
    expect(out).toMatchObject({ mapError: 'EMFILE userfaultfd', error: { code: 'ERR_SERVICER_FAILED' }, guarded: true, moved: 8, bad: [], faults: 8 });
    expect((out as { mapped: number }).mapped).toBeGreaterThan(50);
    expect((out as { blockedMs: number }).blockedMs).toBeLessThan(1_000);
  }, 60_000);

  it('a worker that is only slow to start keeps its region: the blocked touch waits for it, no guard takes over', async () => {
    const out = result(await runNode([fixture, 'slow-start'], { timeoutMs: 40_000 }));
    expect(out).toMatchObject({ errors: [], guarded: false, moved: 8, bad: [], faults: 8 });
    expect((out as { blockedMs: number }).blockedMs).toBeGreaterThanOrEqual(1_400);
  }, 60_000);
});
