// The faulting work of examples/flaky-device, run in a child process by main.mjs: it puts job
// pages [first, first + count) on a device, then digests them one by one, each read a real fault.
//
// Output, one line per event, each written before the next access: a refusal kills this process
// with SIGBUS, and the supervisor learns how far it got from these lines alone.
//   READY <first> <count> <device>
//   TOUCH <job page>               about to touch the page (a fault, through the driver)
//   DONE <job page> <digest>       the page came back; its digest
//   STATS {json}                   at the end, if the process survives
//
//   node examples/flaky-device/job.mjs <first> <count> flaky|good
import { writeSync } from 'node:fs';
import { Device, Region } from 'uffd-hmm';
import { digest, fillInput } from './data.mjs';

const [first, count] = process.argv.slice(2, 4).map(Number);
const kind = process.argv[4];
if (!Number.isInteger(first) || !Number.isInteger(count) || count < 1 || (kind !== 'flaky' && kind !== 'good')) {
  console.error('usage: job.mjs <first> <count> flaky|good');
  process.exit(2);
}
// writeSync, not console.log: nothing may sit in a buffer when SIGBUS ends the process.
const say = (line) => writeSync(1, `${line}\n`);

// The 'worker' servicer (the default) is the one that runs driver hooks.
const region = Region.map({ pages: count });
// The flaky device refuses every 10th fault; the good one has no driver: the default policy
// migrates every page back, as a well-behaved device does.
const device =
  kind === 'flaky'
    ? new Device({ name: 'flaky0', capacity: count, driver: new URL('./flaky-driver.mjs?every=10', import.meta.url) })
    : new Device({ name: 'good0', capacity: count });

const ps = region.pageSize;
for (let i = 0; i < count; i++) fillInput(region.bytes.subarray(i * ps, (i + 1) * ps), first + i);
if (region.migrate(0, count, device) !== count) throw new Error(`only part of the job fit on ${device.name}`);
say(`READY ${first} ${count} ${kind}`);

for (let i = 0; i < count; i++) {
  say(`TOUCH ${first + i}`);
  // digest() reads the whole page; its first byte read is the fault that asks the driver.
  say(`DONE ${first + i} ${digest(region.bytes.subarray(i * ps, (i + 1) * ps))}`);
}

say(`STATS ${JSON.stringify({ region: region.stats(), device: device.stats(), used: device.used })}`);
await region.close();
await device.close();
