// Review question 3: "What does device_entry_fault() actually do here?" — it hands the CPU fault
// to the device that owns the page (page->pgmap->fault); its driver migrates the page back.
//
// Evidence printed: a CPU touch of a device-resident page is a real fault; the servicer calls
// the owning device's driver `fault` hook with the page, pfn and access; the default (migrate)
// copies the device page — including what the device itself wrote — into a new CPU page,
// drops the device page's reference and frees it (`pageFree`). A read entry comes back
// write-protected, so its first write is a second fault. A driver that refuses makes the
// faulting thread die of SIGBUS, as the seed's stub `return VM_FAULT_SIGBUS` does.
//
//   node examples/review/device-entry-fault.mjs
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { inspect } from 'node:util';
import { Device, Region } from 'uffd-hmm';

// The driver is an ES module; a data: URL keeps this example in one file. It reports each hook
// call on a BroadcastChannel (it runs in the servicer's worker thread, not here).
const driver = (decision) =>
  'data:text/javascript,' +
  encodeURIComponent(`
    const ch = new BroadcastChannel('review-device-entry-fault'); ch.unref();
    export function fault(ctx) {
      ch.postMessage({ hook: 'fault', deviceName: ctx.deviceName, pfn: ctx.pfn, page: ctx.page, address: ctx.address, write: ctx.write });
      return ${JSON.stringify(decision)};
    }
    export function pageFree(ctx) { ch.postMessage({ hook: 'pageFree', deviceName: ctx.deviceName, pfn: ctx.pfn }); }
  `);

if (process.argv[2] === '--refusing-child') {
  // The child: a driver that refuses. Its main thread touches a device page and must die.
  const region = Region.map({ pages: 1 });
  const gpu = new Device({ name: 'gpu-refusing', capacity: 1, driver: driver('sigbus') });
  region.bytes[0] = 1;
  region.migrate(0, 1, gpu);
  console.log('child: touching a device page whose driver refuses...');
  void region.bytes[0];
  console.log('child: still alive (this must not print)');
  process.exit(0);
}

const j = (x) => inspect(x, { breakLength: Infinity });
const calls = [];
const channel = new BroadcastChannel('review-device-entry-fault');
channel.onmessage = (e) => calls.push(e.data);
async function waitCalls(n) {
  const deadline = Date.now() + 5000;
  while (calls.length < n) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${n} hook calls (got ${calls.length})`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const region = Region.map({ pages: 2 }); // default servicer: 'worker', which runs driver hooks
const gpu = new Device({ name: 'gpu0', capacity: 4, driver: driver('migrate') });
const ps = region.pageSize;
region.bytes.fill(0x11, 0, ps);
region.bytes.fill(0x22, ps, 2 * ps);
region.migrate(0, 1, gpu); // page 0: a write entry
region.migrate(1, 1, gpu, { write: false }); // page 1: a read entry
const { pfn } = region.entry(0);
gpu.write(pfn, new Uint8Array([0xd0, 0xd1]), 100); // the device computes on its copy of page 0

console.log('before the touch:');
console.log(`  entry(0) = device pfn ${pfn}; gpu0.used = ${gpu.used}; refcount(${pfn}) = ${gpu.refcount(pfn)}`);
console.log('  region.stats() =', j(region.stats()));
console.log('  gpu0.stats()   =', j(gpu.stats()));

const s0 = region.stats();
const value = region.bytes[100]; // the CPU reads page 0: a real userfaultfd fault
await waitCalls(2);
console.log(`\nthe CPU read byte 100 of page 0 -> 0x${value.toString(16)} (what the device wrote)`);
console.log('driver hooks called, in order:');
for (const c of calls) console.log('   ', j(c));
const s1 = region.stats();
console.log(`  entry(0) = ${JSON.stringify(region.entry(0))}; gpu0.used = ${gpu.used}`);
console.log('  region.stats() =', j(s1));
console.log('  gpu0.stats()   =', j(gpu.stats()));

assert.equal(value, 0xd0);
assert.equal(region.bytes[101], 0xd1);
assert.equal(region.bytes[102], 0x11);
assert.deepEqual(calls, [
  { hook: 'fault', deviceName: 'gpu0', pfn, page: 0, address: region.address, write: false },
  { hook: 'pageFree', deviceName: 'gpu0', pfn },
]);
assert.deepEqual(region.entry(0), { kind: 'present', write: true });
assert.equal(s1.faults - s0.faults, 1);
assert.equal(s1.migratedBack - s0.migratedBack, 1);
assert.equal(gpu.used, 1);
assert.deepEqual(gpu.stats(), { faults: 1, migratedToDevice: 2, migratedToRam: 1, freed: 1 });

// A read entry migrates back write-protected: the first write is a second, write-protect fault.
const s2 = region.stats();
region.bytes[ps] = 0x33;
const s3 = region.stats();
console.log(`\nwriting page 1 (a read entry): ${s3.faults - s2.faults} faults, ${s3.wpFaults - s2.wpFaults} of them write-protect`);
assert.equal(s3.faults - s2.faults, 2);
assert.equal(s3.wpFaults - s2.wpFaults, 1);
assert.deepEqual(region.entry(1), { kind: 'present', write: true });

// A refusing driver: the faulting thread gets SIGBUS.
const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--refusing-child'], { encoding: 'utf8', timeout: 15_000 });
console.log(`\n${child.stdout.trim()}`);
console.log(`child ended by signal ${child.signal}`);
assert.equal(child.signal, 'SIGBUS');
assert.ok(!child.stdout.includes('still alive'));

console.log('\nAnswer: device_entry_fault() forwards the fault to the dev_pagemap of the page the entry names;');
console.log('its driver migrates the page back to system memory (or refuses, and the thread gets SIGBUS).');

channel.close();
await region.close();
await gpu.close();
