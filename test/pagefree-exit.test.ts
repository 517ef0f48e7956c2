// pageFree at process exit (lib/pagefree.ts flushAtExit) while the driver module's import() is
// still in flight: a require() of an ES module that import() is loading fails ("not yet fully
// loaded"), which dropped the pageFree and reported a driver that could not be loaded.
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { describeUffd, runNode } from './helpers.js';

const child = fileURLToPath(new URL('./fixtures/pagefree-exit/child.mjs', import.meta.url));

describeUffd('process.exit() right after a free, the driver still loading', () => {
  it.concurrent.each(['now', 'microtask', 'tick'])('exit %s: the page gets its pageFree, and nothing is reported', async (when) => {
    const o = await runNode([child, when], { timeoutMs: 20_000 });
    expect(o.timedOut, o.out).toBe(false);
    expect({ code: o.code, stdout: o.stdout, stderr: o.stderr }).toEqual({ code: 0, stdout: 'freed 1\nPAGEFREE exiting 0\n', stderr: '' });
  });
});
