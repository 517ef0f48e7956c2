// No lost write under churn (uffd-stress's bounce): native threads increment per-page counters
// while the main thread migrates between two devices and back, discards and mprotects, ~10^5 ops.
import { expect, it } from 'vitest';
import { SERVICERS, describeUffd } from './helpers.js';
// The engine is shared with scripts/soak.mjs, which runs the same churn for 10^7 operations.
import { runChurn } from '../scripts/soak.mjs';

describeUffd('churn', () => {
  it.each(SERVICERS)('%s servicer: 10^5 operations, every counter equals its touches, every byte as written', async (servicer) => {
    const res = await runChurn({ servicer, ops: 100_000, seed: 42, deadlineMs: 50_000 });
    expect(res.errors).toEqual([]);
    expect(res.mismatches).toEqual([]);
    expect(res.ops).toBe(100_000);
    // The churn really raced: the threads made many touches and many faults were served mid-run;
    // capacity-limited migrations, discards and both kinds of mprotect all happened.
    expect(res.touches).toBeGreaterThan(100_000);
    expect(res.faults).toBeGreaterThan(10_000);
    for (const k of ['migrate', 'migrateToRam', 'discard', 'mprotect', 'write', 'check'] as const) {
      expect(res.counts[k]).toBeGreaterThan(1000);
    }
  }, 60_000);

  it('the check bites: a churn that zaps counter pages behind the touchers reports mismatches', async () => {
    const res = await runChurn({ servicer: 'native', ops: 3000, seed: 7, sabotage: true, deadlineMs: 30_000 });
    expect(res.errors).toEqual([]);
    expect(res.mismatches.length).toBeGreaterThan(0);
    expect(res.mismatches.join('\n')).toMatch(/thread \d: counters sum to \d+, it made \d+ increments/);
  });
});
