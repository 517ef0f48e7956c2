// Review question 4: "Does it make sense to call mprotect() on device memory ranges?" — yes: a
// device-resident page is still ordinary process memory under the vma's protection.
//
// Evidence printed: mprotect over device pages keeps them on the device but turns write entries
// into read entries (pagemap type SWP_DEVICE_WRITE 30 -> SWP_DEVICE 31), as change_pte_range does;
// reads under 'read' are served; after 'read' -> 'readwrite' the page comes back write-protected,
// so its first write costs exactly one extra (write-protect) fault; a write under 'read' and
// any access under 'none' raise SIGSEGV as for any page (in child processes).
//
//   node examples/review/mprotect.mjs
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Device, HMM_DMIRROR_PROT_ERROR, Region, SWP_DEVICE, SWP_DEVICE_WRITE } from 'uffd-hmm';

const [mode, prot, access] = process.argv.slice(2);
if (mode === '--child') {
  // One forbidden access to a device page under `prot`; the process must die of SIGSEGV.
  const region = Region.map({ pages: 1 });
  const gpu = new Device({ capacity: 1 });
  region.bytes[0] = 1;
  region.migrate(0, 1, gpu);
  region.mprotect(0, 1, prot);
  console.log(`child: snapshot under '${prot}' = 0x${region.snapshot(0, 1)[0].toString(16)}; now a ${access}...`);
  if (access === 'write') region.bytes[0] = 2;
  else void region.bytes[0];
  console.log('child: still alive (this must not print)');
  process.exit(0);
}

const region = Region.map({ pages: 3 });
const gpu = new Device({ name: 'gpu0', capacity: 4 });
const ps = region.pageSize;
for (let p = 0; p < 3; p++) region.bytes.fill(0x10 + p, p * ps, (p + 1) * ps);
region.migrate(0, 3, gpu);
const type = (p) => Number(region.pagemap(p, 1)[0] & 31n);
const show = (p) => {
  const e = region.entry(p);
  return e.kind === 'device' ? `device ${e.write ? 'write' : 'read'} entry, pfn ${e.pfn}, pagemap type ${type(p)}` : `${e.kind} (write: ${e.write})`;
};
console.log('pages 0-2 on gpu0:');
for (let p = 0; p < 3; p++) console.log(`  page ${p}: ${show(p)}`);
assert.equal(type(1), SWP_DEVICE_WRITE);

// Downgrade pages 1-2: nothing moves, nothing faults; the entries become read entries.
const s0 = region.stats();
region.mprotect(1, 2, 'read');
console.log("\nmprotect(1, 2, 'read'):");
for (let p = 0; p < 3; p++) console.log(`  page ${p}: ${show(p)}`);
console.log(`  faults caused: ${region.stats().faults - s0.faults}; gpu0.used = ${gpu.used}`);
assert.equal(type(1), SWP_DEVICE);
assert.equal(type(0), SWP_DEVICE_WRITE);
assert.equal(region.stats().faults, s0.faults);
assert.equal(gpu.used, 3);

// Reads are allowed under 'read': page 2 comes back, write-protected.
assert.equal(region.bytes[2 * ps], 0x12);
console.log(`  a read of page 2 under 'read' is served: ${show(2)}`);
assert.deepEqual(region.entry(2), { kind: 'present', write: false });

region.mprotect(1, 2, 'readwrite');
console.log("\nmprotect(1, 2, 'readwrite'): page 1 stays a read entry:", show(1));
const cost = (p) => {
  const a = region.stats();
  region.bytes[p * ps] = 0xee;
  const b = region.stats();
  return { faults: b.faults - a.faults, wpFaults: b.wpFaults - a.wpFaults };
};
const control = cost(0);
const downgraded = cost(1);
const readBack = cost(2);
console.log('  cost of the first write to each page:');
console.log(`    page 0 (write entry, never mprotected):      ${JSON.stringify(control)}`);
console.log(`    page 1 (downgraded entry, still on device):  ${JSON.stringify(downgraded)}`);
console.log(`    page 2 (read back under 'read'):             ${JSON.stringify(readBack)}`);
assert.deepEqual(control, { faults: 1, wpFaults: 0 });
assert.deepEqual(downgraded, { faults: 2, wpFaults: 1 }); // exactly one extra, write-protect fault
assert.deepEqual(readBack, { faults: 1, wpFaults: 1 });
for (let p = 0; p < 3; p++) assert.equal(region.bytes[p * ps + 1], 0x10 + p); // data intact

// Forbidden accesses fault as for any page: SIGSEGV (each in a child, which dies of it).
const self = fileURLToPath(import.meta.url);
console.log('');
for (const [p, a] of [['read', 'write'], ['none', 'read'], ['none', 'write']]) {
  const child = spawnSync(process.execPath, [self, '--child', p, a], { encoding: 'utf8', timeout: 15_000 });
  console.log(`${child.stdout.trim()} -> ended by ${child.signal}`);
  assert.equal(child.signal, 'SIGSEGV');
  assert.ok(child.stdout.includes(`0x${HMM_DMIRROR_PROT_ERROR.toString(16)}`) === (p === 'none'));
  assert.ok(!child.stdout.includes('still alive'));
}

console.log("\nAnswer: yes. The device page is the process's memory under the vma's protection: reads and");
console.log('writes are allowed or refused (SIGSEGV) as for any page. Downgrading write entries to read entries');
console.log('is what makes a later write fault again, so the new protection (or COW) is honoured when the page returns.');

await region.close();
await gpu.close();
