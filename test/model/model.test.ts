// Differential model test: fast-check generates sequences of map/migrate/access/device-write/
// discard/mprotect/migrateToRam/fork/remap/close, some of them racing a zap by another thread or
// meeting a refused madvise, kernel-mode accesses (refused on device 1 under the worker servicer),
// multi-page copies cut short (testCutCopy), and, for the worker servicer, a slow driver hook holding
// a page past the page-lock deadline; and on THP regions collapse, huge entries, partial
// mprotect/discard and faults on them. After each step the real region must match model.ts
// (races.ts says which outcomes of a race it accepts). Stuck workers (stalls, takeovers, forks
// during them) are in stall.test.ts.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SERVICERS, describeUffd } from '../helpers.js';
import { Zapper } from '../zapper.js';
import { reached, runScenario, warmWorkerServicer, type RunEnv, type Scenario } from './runner.js';
import { scenario, slowHookScenario, thpScenario } from './arbitraries.js';
import { Model } from './model.js';

// Bounded so the file stays under a minute on a shared 2-core machine; UFFD_HMM_MODEL_RUNS (and
// UFFD_HMM_MODEL_SLOW_RUNS for the slow hooks, UFFD_HMM_MODEL_TIME_MS for the time each property
// may take) raise it for a longer hunt (a failure prints its seed and the shrunk scenario: keep it
// in regressions.test.ts).
const RUNS = Number(process.env.UFFD_HMM_MODEL_RUNS ?? 500);
const SLOW_RUNS = Number(process.env.UFFD_HMM_MODEL_SLOW_RUNS ?? 6);
// THP scenarios compare 512 pages after every step: fewer of them (UFFD_HMM_MODEL_THP_RUNS).
const THP_RUNS = Number(process.env.UFFD_HMM_MODEL_THP_RUNS ?? 12);
/** Each property stops after this long, passing with the runs it made; UFFD_HMM_MODEL_TIME_MS for a hunt. */
const TIME_MS = Number(process.env.UFFD_HMM_MODEL_TIME_MS ?? 40_000);
/** UFFD_HMM_MODEL_SEED replays (or fixes, for a hunt) the seed fast-check uses; random otherwise. */
const SEED = process.env.UFFD_HMM_MODEL_SEED === undefined ? {} : { seed: Number(process.env.UFFD_HMM_MODEL_SEED) };

const env: RunEnv = {};
/** Steps run, by operation: the racing ones must actually have run, or the properties prove nothing. */
const ran = new Map<string, number>();
async function run(s: Scenario, with_: RunEnv): Promise<void> {
  for (const step of await runScenario(s, with_)) {
    const op = (JSON.parse(step) as { op: string }).op;
    ran.set(op, (ran.get(op) ?? 0) + 1);
  }
}
let dir = '';
beforeAll(async () => {
  await warmWorkerServicer();
  env.zapper = new Zapper();
  await env.zapper.ready();
  dir = mkdtempSync(path.join(tmpdir(), 'uffd-hmm-model-'));
  const flag = path.join(dir, 'slow');
  env.slowDriver = { flag, url: new URL(`../fixtures/slow-driver.mjs?ms=500&flag=${encodeURIComponent(flag)}`, import.meta.url) };
});
afterAll(async () => {
  await env.zapper?.close();
  rmSync(dir, { recursive: true, force: true });
});
afterAll(() => {
  console.log(`model paths reached: ${JSON.stringify(reached)}`);
});

describeUffd('differential model', () => {
  it.each(SERVICERS)('%s servicer: every step agrees with the model', async (servicer) => {
    ran.clear();
    await fc.assert(
      fc.asyncProperty(scenario(servicer), async (s) => {
        await run(s, { zapper: env.zapper });
      }),
      { numRuns: RUNS, interruptAfterTimeLimit: TIME_MS, ...SEED },
    );
    for (const op of servicer === 'inline' ? ['remap', 'refuseZap'] : ['remap', 'race', 'refuseZap']) expect(ran.get(op), op).toBeGreaterThan(RUNS / 50);
  }, TIME_MS + 80_000);

  it.each(SERVICERS)('%s servicer, THP regions (collapse, huge entries, splits, cut copies): every step agrees with the model', async (servicer) => {
    await fc.assert(
      fc.asyncProperty(thpScenario(servicer), async (s) => {
        await runScenario(s);
      }),
      { numRuns: THP_RUNS, interruptAfterTimeLimit: TIME_MS, ...SEED },
    );
  }, TIME_MS + 80_000);

  it('worker servicer, a slow driver hook holding a page: steps over it time out and change nothing, the rest goes on', async () => {
    ran.clear();
    await fc.assert(
      fc.asyncProperty(slowHookScenario, async (s) => {
        await run(s, env);
      }),
      { numRuns: SLOW_RUNS, interruptAfterTimeLimit: TIME_MS, ...SEED },
    );
    expect(ran.get('slowHook'), 'slow-hook steps run').toBeGreaterThanOrEqual(SLOW_RUNS);
  }, TIME_MS + 80_000);

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
