// The differential model with a worker servicer that gets stuck: device 1's driver stalls every CPU
// fault past a short stall deadline, so the watchdog takes the region over (and reads the FORK
// event of a spawnSync made during the stall), and its refusals of system calls end with the
// takeover. Its own file: the stall deadline is process-wide. A failure prints its seed and the
// shrunk scenario; UFFD_HMM_MODEL_STALL_RUNS raises the run count (each stall costs ~0.6 s).
import fc from 'fast-check';
import { afterAll, beforeAll, it } from 'vitest';
import { configureServicers } from 'uffd-hmm';
import { describeUffd } from '../helpers.js';
import { reached, runScenario, warmWorkerServicer } from './runner.js';
import { stallScenario } from './arbitraries.js';

configureServicers({ stallDeadlineMs: 300 });
const RUNS = Number(process.env.UFFD_HMM_MODEL_STALL_RUNS ?? 4);
const SEED = process.env.UFFD_HMM_MODEL_SEED === undefined ? {} : { seed: Number(process.env.UFFD_HMM_MODEL_SEED) };

beforeAll(async () => {
  await warmWorkerServicer();
});
afterAll(() => {
  console.log(`model paths reached: ${JSON.stringify(reached)}`);
});

describeUffd('differential model, stuck worker servicer', () => {
  it('every step agrees with the model through stalls, takeovers and forks during them', async () => {
    await fc.assert(
      fc.asyncProperty(stallScenario, async (s) => {
        await runScenario(s);
      }),
      { numRuns: RUNS, interruptAfterTimeLimit: 60_000, ...SEED },
    );
  }, 120_000);
});
