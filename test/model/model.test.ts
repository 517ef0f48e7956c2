// Differential model test: fast-check generates sequences of map/migrate/access/device-write/
// discard/mprotect/migrateToRam/fork/close; after each step the real region must match model.ts.
import fc from 'fast-check';
import { beforeAll, expect, it } from 'vitest';
import { SERVICERS, describeUffd } from '../helpers.js';
import { runScenario, warmWorkerServicer, type Scenario } from './runner.js';
import { scenario } from './arbitraries.js';
import { Model } from './model.js';

// Bounded so the file stays under a minute on a shared 2-core machine; UFFD_HMM_MODEL_RUNS raises
// it for a longer hunt (a failure prints its seed and the shrunk scenario: keep it in
// regressions.test.ts).
const RUNS = Number(process.env.UFFD_HMM_MODEL_RUNS ?? 500);

beforeAll(async () => {
  await warmWorkerServicer();
});

describeUffd('differential model', () => {
  it.each(SERVICERS)('%s servicer: every step agrees with the model', async (servicer) => {
    await fc.assert(
      fc.asyncProperty(scenario(servicer), async (s) => {
        await runScenario(s);
      }),
      { numRuns: RUNS, interruptAfterTimeLimit: 40_000 },
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
