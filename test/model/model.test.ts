// Differential model test: fast-check generates sequences of map/migrate/access/device-write/
// discard/mprotect/migrateToRam/fork/close, kernel-mode accesses (refused on device 1 under the
// worker servicer), multi-page copies cut short (testCutCopy), and on THP regions collapse, huge
// entries, partial mprotect/discard and faults on them; after each step the real region must match
// model.ts. Stuck workers (stalls, takeovers, forks during them) are in stall.test.ts.
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SERVICERS, describeUffd } from '../helpers.js';
import { reached, runScenario, warmWorkerServicer, type Scenario } from './runner.js';
import { scenario, thpScenario } from './arbitraries.js';
import { Model } from './model.js';

// Bounded so the file stays under a minute on a shared 2-core machine; UFFD_HMM_MODEL_RUNS raises
// it for a longer hunt (a failure prints its seed and the shrunk scenario: keep it in
// regressions.test.ts).
const RUNS = Number(process.env.UFFD_HMM_MODEL_RUNS ?? 500);
// THP scenarios compare 512 pages after every step: fewer of them (UFFD_HMM_MODEL_THP_RUNS).
const THP_RUNS = Number(process.env.UFFD_HMM_MODEL_THP_RUNS ?? 12);
// UFFD_HMM_MODEL_SEED replays (or sweeps) a given seed; fast-check picks one per run otherwise.
const SEED = process.env.UFFD_HMM_MODEL_SEED === undefined ? {} : { seed: Number(process.env.UFFD_HMM_MODEL_SEED) };

beforeAll(async () => {
  await warmWorkerServicer();
});
afterAll(() => {
  console.log(`model paths reached: ${JSON.stringify(reached)}`);
});

describeUffd('differential model', () => {
  it.each(SERVICERS)('%s servicer: every step agrees with the model', async (servicer) => {
    await fc.assert(
      fc.asyncProperty(scenario(servicer), async (s) => {
        await runScenario(s);
      }),
      { numRuns: RUNS, interruptAfterTimeLimit: 40_000, ...SEED },
    );
  }, 120_000);

  it.each(SERVICERS)('%s servicer, THP regions (collapse, huge entries, splits, cut copies): every step agrees with the model', async (servicer) => {
    await fc.assert(
      fc.asyncProperty(thpScenario(servicer), async (s) => {
        await runScenario(s);
      }),
      { numRuns: THP_RUNS, interruptAfterTimeLimit: 40_000, ...SEED },
    );
  }, 120_000);

  it('the comparison bites: a model that disagrees by one byte is reported as a divergence', async () => {
    const s: Scenario = { servicer: 'native', pages: 2, capacities: [2, 2], ops: [{ op: 'write', page: 0, offset: 0, value: 7 }] };
    await expect(runScenario(s)).resolves.toEqual(['{"op":"write","page":0,"offset":0,"value":7}']);
    const original = Model.prototype.write;
    Model.prototype.write = function (p: number, o: number, v: number) {
      original.call(this, p, o, (v + 1) & 0xff);
    };
    try {
      await expect(runScenario(s)).rejects.toThrow(/page 0: bytes differ \(first at offset 0: real 7, model 8\)/);
    } finally {
      Model.prototype.write = original;
    }
  });
});
