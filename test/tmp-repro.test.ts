import { it } from 'vitest';
import { runScenario, warmWorkerServicer } from './model/runner.js';
it('repro', async () => {
  await warmWorkerServicer();
  const s = {"servicer":"native","pages":1,"capacities":[1,1],"ops":[{"op":"migrate","first":0,"count":1,"dev":1},{"op":"write","page":0,"offset":0,"value":0},{"op":"migrate","first":0,"count":1,"dev":1},{"op":"migrateToRamCut","first":0,"count":1,"cut":1},{"op":"migrate","first":0,"count":1,"dev":1},{"op":"deviceWrite","page":0,"offset":0,"value":0}]} as any;
  for (let i = 0; i < 5; i++) console.log(await runScenario(s).then(() => 'ok', (e) => String(e).split('\n')[0]));
});
