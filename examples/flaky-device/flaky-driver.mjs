// The driver module of examples/flaky-device: a device whose `fault` hook refuses every 10th fault
// ('sigbus'), so the faulting thread dies of SIGBUS and the user's recovery path gets exercised.
import { writeSync } from 'node:fs';

// Configuration travels in the module's URL (flaky-driver.mjs?every=10): a hook runs in the
// servicer's worker thread and cannot see the program's variables. A bad value throws here, at
// load, which uffd-hmm reports as ERR_DRIVER_LOAD on the Device.
const every = Number(new URL(import.meta.url).searchParams.get('every') ?? 10);
if (!Number.isInteger(every) || every < 1) throw new RangeError(`flaky-driver: ?every= must be a positive integer, got ${every}`);

// Module state lives in the worker's copy of this module, one per process: the count restarts in
// every child process the example starts.
let faults = 0;

export function fault(ctx) {
  faults++;
  if (faults % every !== 0) return 'migrate';
  // Written with writeSync before returning: the refusal kills the process, and nothing buffered
  // would survive it. Kept to the refusals, since a hook must stay fast.
  writeSync(1, `driver: refusing fault #${faults} (region page ${ctx.page}, pfn ${ctx.pfn}) -> SIGBUS\n`);
  return 'sigbus';
}
