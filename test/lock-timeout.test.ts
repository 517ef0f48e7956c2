// A page-lock timeout leaves nothing locked, and teardown survives it (issue #22, item 2): a driver
// fault hook that is slow (not hung, with the stall deadline far away, as docs/DRIVERS.md advises
// for slow hooks) holds a page; every operation that needs that page times out with
// ERR_PAGE_LOCK_TIMEOUT, giving back the locks it took; once the hook returns, every page is
// served, the data is intact, and the close() that timed out finishes when called again. In a
// child process (test/fixtures/lock-timeout.mjs, with a shortened page-lock deadline), since a
// lock left behind would hang whoever touches that page.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { describeUffd, runNode } from './helpers.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const child = fileURLToPath(new URL('./fixtures/lock-timeout.mjs', import.meta.url));
const HOOK_MS = 5000;

describeUffd('a slow driver hook holding a page', () => {
  it('times out each operation over it with ERR_PAGE_LOCK_TIMEOUT, leaves nothing else locked, and everything recovers', async () => {
    const out = await runNode([child, String(HOOK_MS)], { cwd: repo, timeoutMs: HOOK_MS + 30_000 });
    expect(out.timedOut, `the child hung: ${out.out}`).toBe(false);
    expect(out.code, out.out).toBe(0);
    const report = JSON.parse(out.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
    expect(report.migrated, out.out).toBe(4);
    for (const op of ['discard', 'mprotect', 'migrateToRam', 'migrate', 'remap', 'fork', 'close']) {
      expect(report[op], `${op}: ${out.out}`).toBe('ERR_PAGE_LOCK_TIMEOUT');
      // Only the hook's own page: whatever the operation had locked before it, it gave back.
      expect(report[`${op} left locked`], `${op}: ${out.out}`).toEqual([2]);
    }
    expect(report.opsWithinHook, 'every operation ran while the hook held its page').toBe(true);
    expect(report, out.out).toMatchObject({
      write: 'ok',
      'left locked after the hook': [],
      served: [0, 1, 2, 3],
      bad: null,
      closedAgain: true,
      used: 0,
    });
  }, HOOK_MS + 40_000);
});
