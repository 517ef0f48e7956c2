// Review question 1: "is [the device entry there] in the middle of migration, or is it always [how]
// unaddressable memory belonging to a GPU device is tracked in the page table?" — it is persistent.
//
// Evidence printed: pages migrated to a device keep their device entry (same pfn, no CPU page in
// the kernel's own pagemap) for several seconds while the process does unrelated work — other
// pages migrating back and forth, faults, allocations — until the CPU touches one of them; only
// that touch migrates it back, and only that page.
//
//   node examples/review/persistent-entry.mjs [seconds]      (default 3)
import assert from 'node:assert/strict';
import { closeSync, openSync, readSync } from 'node:fs';
import { Device, PM_PRESENT, PM_SWAP, Region, SWP_DEVICE_WRITE } from 'uffd-hmm';

const seconds = Number(process.argv[2] ?? 3);
const region = Region.map({ pages: 64 });
const gpu = new Device({ name: 'gpu0', capacity: 64 });
const ps = region.pageSize;
for (let i = 0; i < 16 * ps; i++) region.bytes[i] = (i * 7 + 3) & 0xff;

/** The kernel's own pagemap word for a page (not the library's merged view). */
const pagemapFd = openSync('/proc/self/pagemap', 'r');
function kernelPagemap(page) {
  const buf = new BigUint64Array(1);
  readSync(pagemapFd, new Uint8Array(buf.buffer), 0, 8, Number(region.address / BigInt(ps) + BigInt(page)) * 8);
  return buf[0];
}

assert.equal(region.migrate(0, 16, gpu), 16);
const pfns = Array.from({ length: 16 }, (_, p) => region.entry(p).pfn);
console.log('migrated pages 0-15 to gpu0; page 3 is now', fmt(region.entry(3)));
console.log(`  region.pagemap(3) = 0x${region.pagemap(3, 1)[0].toString(16)}  (PM_SWAP | PM_MMAP_EXCLUSIVE | SWP_DEVICE_WRITE=${SWP_DEVICE_WRITE} | pfn << 5)`);
console.log(`  kernel pagemap(3) = 0x${kernelPagemap(3).toString(16)}  (no CPU page behind the entry)`);

// Unrelated activity for `seconds`: pages 16-63 fault, migrate out and back; garbage churns.
const start = Date.now();
let rounds = 0;
let operations = 0;
let garbage = [];
while (Date.now() - start < seconds * 1000) {
  for (let p = 16; p < 64; p++) region.bytes[p * ps + (rounds % ps)] = rounds & 0xff; // faults or plain writes
  operations += region.migrate(16, 48, gpu); // 48 pages to the device...
  operations += region.migrateToRam(16, 24); // ...half back by the main thread
  for (let p = 40; p < 64; p++, operations++) void region.bytes[p * ps]; // ...half by faults
  garbage.push(new Uint8Array(1 << 16));
  if (garbage.length > 64) garbage = [];
  await new Promise((r) => setTimeout(r, 50));
  // Through all of it, the 16 entries stay exactly as they were.
  for (let p = 0; p < 16; p++) {
    const e = region.entry(p);
    assert.equal(e.kind, 'device', `page ${p} left the device without being touched`);
    assert.equal(e.pfn, pfns[p]);
    assert.equal(gpu.refcount(e.pfn), 1);
    assert.equal(kernelPagemap(p) & PM_PRESENT, 0n);
    assert.equal(region.pagemap(p, 1)[0] & PM_SWAP, PM_SWAP);
  }
  rounds++;
}
const s = region.stats();
console.log(
  `\nafter ${((Date.now() - start) / 1000).toFixed(1)} s, ${rounds} rounds, ${operations} page operations and ${s.faults} faults elsewhere,`,
);
console.log('  pages 0-15 are still device entries with the same pfns:', pfns.join(','));

// Only a touch brings a page back, and only that page.
const before = region.stats();
const value = region.bytes[3 * ps + 10];
assert.equal(value, ((3 * ps + 10) * 7 + 3) & 0xff);
const after = region.stats();
assert.equal(after.faults - before.faults, 1);
assert.equal(after.migratedBack - before.migratedBack, 1);
assert.deepEqual(region.entry(3), { kind: 'present', write: true });
assert.ok(kernelPagemap(3) & PM_PRESENT);
for (const p of [0, 1, 2, 4, 15]) assert.equal(region.entry(p).kind, 'device');
console.log(`\ntouching page 3: 1 fault, 1 page migrated back, byte = ${value}; page 3 is now`, fmt(region.entry(3)));
console.log('  pages 0-2 and 4-15 are still on the device');
console.log('\nAnswer: the device entry is the persistent page-table state of a device-resident page,');
console.log('not a transient migration state: it stays until the CPU touches the page (or the range is unmapped).');

closeSync(pagemapFd);
await region.close();
await gpu.close();

function fmt(e) {
  return e.kind === 'device' ? `{ kind: 'device', write: ${e.write}, device: ${e.device.name}, pfn: ${e.pfn} }` : JSON.stringify(e);
}
