// Worked example for docs/DRIVERS.md: a "GPU" that adds 1 to every byte of the pages it holds
// before they come back to the CPU, on real userfaultfd faults. Exits non-zero on any wrong byte.
//
// What it shows, and checks with node:assert:
//   1. migrate N pages to the GPU: the CPU pages are freed, device entries are left behind;
//   2. the GPU kernel: device.read/device.write on each pfn the GPU holds add 1 to every byte,
//      with no CPU fault (the device works on its own memory);
//   3. the CPU reads every byte: one real fault per page, each through the driver's `fault` hook
//      in the servicer's worker thread, each device page then freed through `pageFree`, which
//      runs on the main thread (the Device's), as every pageFree does;
//      every byte reads as its old value + 1 (255 wraps to 0);
//   4. device removal: migrate again, increment again, then gpu.close() brings every page back
//      without a fault (dmirror_device_evict_chunk); the CPU reads + 2, and the frees run
//      `pageFree` on the main thread again.
//
//   node examples/gpu-increment/main.mjs [pages]      (default 64)
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { Device, Region } from 'uffd-hmm';
import { CHANNEL } from './gpu-driver.mjs';

const PAGES = Number(process.argv[2] ?? 64);
assert.ok(Number.isInteger(PAGES) && PAGES >= 1 && PAGES <= 4096, `pages must be an integer from 1 to 4096, got ${process.argv[2]}`);
const show = (x) => inspect(x, { breakLength: Infinity });

// Hook calls arrive from the worker (fault) and from this thread's copy of the driver (pageFree).
const calls = [];
const channel = new BroadcastChannel(CHANNEL);
channel.onmessage = (e) => calls.push(e.data);

/** Waits for `n` hook calls matching `pred`; every wait has a deadline. */
async function hookCalls(pred, n, what) {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const got = calls.filter(pred);
    if (got.length >= n) return got;
    assert.ok(Date.now() < deadline, `timed out after 5 s waiting for ${n} ${what} (got ${got.length})`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * The "GPU kernel": for every page of the region that `gpu` holds, read the device page, add 1 to
 * each byte, write it back. It goes through device.read/device.write only, never through
 * region.bytes, so it never faults: this is the device computing on its own memory.
 */
function gpuIncrementKernel(region, gpu) {
  let pages = 0;
  for (let p = 0; p < region.pages; p++) {
    const e = region.entry(p);
    if (e.kind !== 'device' || e.device !== gpu) continue;
    const data = gpu.read(e.pfn); // a copy of the device page
    for (let i = 0; i < data.length; i++) data[i] += 1; // a Uint8Array wraps 255 + 1 to 0
    gpu.write(e.pfn, data);
    pages++;
  }
  return pages;
}

/** Compares every byte of the region with before[i] + delta (mod 256); returns the first mismatch. */
function checkEveryByte(region, before, delta) {
  const bytes = region.bytes; // touching a device-resident page here is a real fault
  for (let i = 0; i < bytes.length; i++) {
    const want = (before[i] + delta) & 0xff;
    if (bytes[i] !== want) return `byte ${i} (page ${Math.floor(i / region.pageSize)}): ${bytes[i]} != ${want}`;
  }
  return null;
}

const region = Region.map({ pages: PAGES }); // the default 'worker' servicer: the one that runs driver hooks
const gpu = new Device({ name: 'gpu0', capacity: PAGES, driver: new URL('./gpu-driver.mjs', import.meta.url) });
// A hook that throws is reported here (ERR_DRIVER_HOOK); this example must see none.
const driverErrors = [];
gpu.on('error', (e) => driverErrors.push(e));

// Input: every byte value 0..255 occurs on every page, so the wrap from 255 to 0 is exercised.
const ps = region.pageSize;
for (let i = 0; i < region.length; i++) region.bytes[i] = (i * 7 + Math.floor(i / ps) * 13) & 0xff;
const before = region.bytes.slice();
// Writing the input took one zero-fill fault per page (first touch of a hole): count from here on.
const base = region.stats();
const since = (s) => Object.fromEntries(Object.entries(s).map(([k, v]) => [k, v - base[k]]));

// 1. Migrate to the GPU.
const moved = region.migrate(0, PAGES, gpu);
assert.equal(moved, PAGES, 'every page fits on the GPU');
for (let p = 0; p < PAGES; p++) assert.deepEqual(region.entry(p), { kind: 'device', write: true, device: gpu, pfn: region.entry(p).pfn });
assert.equal(gpu.used, PAGES);
console.log(`migrated ${moved} pages to ${gpu.name}: every entry is a write device entry; ${gpu.name}.used = ${gpu.used}`);

// 2. The GPU computes on the pages it holds.
const s0 = region.stats();
const computed = gpuIncrementKernel(region, gpu);
assert.equal(computed, PAGES);
assert.deepEqual(region.stats(), s0, 'the device working on its own memory takes no CPU fault');
console.log(`gpu kernel: +1 on every byte of ${computed} device pages (${computed * ps} bytes), CPU faults meanwhile: ${region.stats().faults - s0.faults}`);

// 3. The CPU reads every byte: each page faults once and comes back with the GPU's result.
const mismatch = checkEveryByte(region, before, 1);
assert.equal(mismatch, null, `CPU view after the GPU kernel: ${mismatch}`);
const s1 = region.stats();
console.log(`cpu read every byte: all ${region.length} bytes are old + 1`);
console.log('region.stats() =', show(s1), '(since the input was written:', show(since(s1)) + ')');
console.log(`${gpu.name}.stats()  =`, show(gpu.stats()), `used = ${gpu.used}`);
assert.deepEqual(since(s1), { faults: PAGES, writeFaults: 0, wpFaults: 0, kernelFaults: 0, migratedBack: PAGES });
assert.deepEqual(gpu.stats(), { faults: PAGES, migratedToDevice: PAGES, migratedToRam: PAGES, freed: PAGES });
assert.equal(gpu.used, 0);
for (let p = 0; p < PAGES; p++) assert.deepEqual(region.entry(p), { kind: 'present', write: true });

// The driver saw each fault, in the order the CPU touched the pages, in the worker thread.
const faults = await hookCalls((c) => c.hook === 'fault', PAGES, 'fault hook calls');
assert.deepEqual(
  faults.map((c) => [c.page, c.write, c.thread, c.device]),
  Array.from({ length: PAGES }, (_, p) => [p, false, 'worker', 'gpu0']),
);
const frees1 = await hookCalls((c) => c.hook === 'pageFree', PAGES, 'pageFree hook calls');
assert.ok(frees1.every((c) => c.thread === 'main'), 'pageFree runs on the thread that created the Device');
assert.deepEqual(frees1.map((c) => c.pfn).sort((a, b) => a - b), faults.map((c) => c.pfn).sort((a, b) => a - b));
console.log(`driver hooks: ${faults.length} fault calls (pages 0..${PAGES - 1} in order, thread: worker), ${frees1.length} pageFree calls (thread: main)`);

// 4. Device removal: migrate, compute, then close the GPU. Its pages come back without a fault.
calls.length = 0;
assert.equal(region.migrate(0, PAGES, gpu), PAGES);
assert.equal(gpuIncrementKernel(region, gpu), PAGES);
await gpu.close(); // evicts every page it holds back to the region first: nothing lost
const s2 = region.stats();
assert.equal(s2.faults, s1.faults, 'eviction brings pages back without faults');
assert.equal(since(s2).migratedBack, 2 * PAGES);
assert.equal(checkEveryByte(region, before, 2), null);
assert.equal(region.stats().faults, s1.faults, 'the evicted pages are CPU pages again: reading them takes no fault');
const frees2 = await hookCalls((c) => c.hook === 'pageFree', PAGES, 'pageFree hook calls after gpu.close()');
assert.ok(frees2.every((c) => c.thread === 'main'), 'pages freed by device removal are freed on the main thread');
assert.equal(calls.filter((c) => c.hook === 'fault').length, 0);
console.log(`device removal: gpu.close() evicted ${PAGES} pages with 0 faults; every byte is old + 2; ${frees2.length} pageFree calls (thread: main)`);
console.log('region.stats() =', show(s2), '(since the input was written:', show(since(s2)) + ')');
console.log(`${gpu.name}.stats()  =`, show(gpu.stats()), `used = ${gpu.used}`);
assert.deepEqual(gpu.stats(), { faults: PAGES, migratedToDevice: 2 * PAGES, migratedToRam: 2 * PAGES, freed: 2 * PAGES });

assert.deepEqual(driverErrors, [], 'the driver reported no error');
channel.close();
await region.close();
console.log(`OK: the GPU incremented every byte of the ${PAGES} pages it held before they came back`);
