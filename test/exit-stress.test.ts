// Exit stress: children that end their script (or call process.exit) while native threads fault on
// device pages and the servicer migrates them, a few at a time. Each must exit 0: an abort is a
// native thread writing memory V8 freed at exit. scripts/exit-stress.mjs runs 200+ per servicer.
import { expect, it } from 'vitest';
import { stressExit } from '../scripts/exit-stress.mjs';
import { SERVICERS, describeUffd } from './helpers.js';

describeUffd('exit stress', () => {
  it.each(SERVICERS)(
    '16 children, 4 at a time, exit 0 with faults in flight (%s servicer)',
    async (servicer) => {
      // The runner's NODE_OPTIONS (loaders, inspector flags) must not reach the children.
      const env = { ...process.env };
      delete env.NODE_OPTIONS;
      const res = await stressExit({ servicer, runs: 16, parallel: 4, ms: 100, env });
      const report = res.failures.map((f) => `${f.timedOut ? 'timed out' : (f.signal ?? `exit ${f.code}`)}: ${f.out.slice(-400)}`);
      expect(report).toEqual([]);
      expect(res.ok).toBe(16);
    },
    120_000,
  );
});
