// A driver hook that throws, with nobody listening for 'error': the process warning names what the
// hook threw and its first stack frame, and reaches the user even when the script ends (or calls
// process.exit()) right after the fault, before the worker's report had a turn of the event loop.
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { describeUffd, runNode } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/errors/hook-warning.mjs', import.meta.url));
// drivers/buggy.mjs throws `new Error(\`fault hook bug at pfn ${ctx.pfn}\`)` at line 4, column 9.
const WARNING =
  /\(node:\d+\) \[ERR_DRIVER_HOOK\] UffdHmmError: driver fault hook of buggy failed with Error: fault hook bug at pfn 0, at fault \(file:\/\/\/\S+\/fixtures\/errors\/drivers\/buggy\.mjs:4:9\) \(err\.cause is the whole error\); the fault was served by the default policy \(migrated back\); fix the hook\n/;

describeUffd('a throwing driver hook without an error listener', () => {
  it.each(['end', 'exit'])('prints the hook error and its frame when the script %ss right after the fault', async (how) => {
    const o = await runNode([fixture, how], { timeoutMs: 20_000 });
    expect({ code: o.code, timedOut: o.timedOut }, o.out).toEqual({ code: 0, timedOut: false });
    expect(o.stdout).toContain('read 7');
    expect(o.stderr).toMatch(WARNING);
  });

  it('reports it while the process runs, not at exit', async () => {
    const o = await runNode([fixture, 'lives'], { timeoutMs: 20_000 });
    expect({ code: o.code, timedOut: o.timedOut }, o.out).toEqual({ code: 0, timedOut: false });
    expect(o.stdout).toMatch(/read 7\nwarning seen: ERR_DRIVER_HOOK\n(warning seen: ERR_DRIVER_HOOK\n)*still running\n/);
    expect(o.stderr).toMatch(WARNING);
  });

  it('is silent under --no-warnings, as every process warning is', async () => {
    const o = await runNode(['--no-warnings', fixture, 'exit'], { timeoutMs: 20_000 });
    expect({ code: o.code, timedOut: o.timedOut }, o.out).toEqual({ code: 0, timedOut: false });
    expect(o.stdout).toContain('read 7');
    expect(o.stderr).not.toContain('ERR_DRIVER_HOOK');
  });
});

const pageFreeFixture = fileURLToPath(new URL('./fixtures/errors/pagefree-warning.mjs', import.meta.url));
const PAGEFREE_WARNING =
  /\(node:\d+\) \[ERR_DRIVER_HOOK\] UffdHmmError: driver pageFree hook of buggy threw Error: pageFree hook bug at pfn \d+, at (?:Module\.)?pageFree \(file:\/\/\/\S+\/fixtures\/errors\/drivers\/buggy\.mjs:8:9\) \(err\.cause is the whole error\); the page was freed anyway; fix the hook\n/g;

describeUffd('a throwing pageFree hook without an error listener, for a page a fault freed', () => {
  // The servicer frees the page in native code and leaves the hook to the main thread; a script
  // that ended (or called process.exit()) right after the fault used to exit before it ran.
  it.each(['worker', 'native', 'inline'].flatMap((s) => ['end', 'exit'].flatMap((how) => ['unloaded', 'loaded'].map((l) => [s, how, l]))))(
    '%s: prints it once when the script %ss right after the fault (driver %s on the main thread)',
    async (servicer, how, loaded) => {
      const o = await runNode([pageFreeFixture, servicer, how, loaded], { timeoutMs: 20_000 });
      expect({ code: o.code, timedOut: o.timedOut }, o.out).toEqual({ code: 0, timedOut: false });
      expect(o.stdout).toContain('read 7');
      if (loaded === 'loaded') expect(o.stdout).toContain('first free reported: ERR_DRIVER_HOOK'); // heard by a listener
      expect(o.stderr.match(PAGEFREE_WARNING)?.length ?? 0, o.out).toBe(1);
    },
  );

  it('a driver that cannot be loaded synchronously at exit (top-level await) is reported, and its pageFree does not run', async () => {
    const o = await runNode([pageFreeFixture, 'native', 'exit', 'unloaded', 'tla.mjs'], { timeoutMs: 20_000 });
    expect({ code: o.code, timedOut: o.timedOut }, o.out).toEqual({ code: 0, timedOut: false });
    expect(o.stdout).toContain('read 7');
    const load = o.stderr.match(/\[ERR_DRIVER_LOAD\] UffdHmmError: could not load driver file:\/\/\/\S+\/tla\.mjs of buggy: .*; its pageFree hook did not run;/g);
    expect(load?.length ?? 0, o.out).toBe(1);
    expect(o.stderr).not.toContain('pageFree hook bug');
  });
});
