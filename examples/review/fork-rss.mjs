// Review question 2: "Why does rss count go up?" (copy_one_pte, on a device entry) — because the
// child now maps the page too: it is the child's anonymous memory, merely resident on the device.
//
// Evidence printed: Rss and Anonymous of a region count device-resident pages (the kernel's own
// smaps shows none of them: the CPU pages are gone), exactly like CPU-resident pages and unlike
// swap. While a forked child lives, each device page has two references (one per mapping, each
// counted in that process's RSS), is no longer exclusively mapped, and write entries have become
// read entries in the parent (COW). The child reads the same device page; when it exits its
// mapping is zapped and the count drops back to one.
//
// Uses region.fork(steps) from the public API, plus the { op: 'sleep' } step extension so the parent can
// look at shared state while the child is alive.
//
//   node examples/review/fork-rss.mjs
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Device, PM_MMAP_EXCLUSIVE, Region } from 'uffd-hmm';

const region = Region.map({ pages: 4 });
const gpu = new Device({ name: 'gpu0', capacity: 4 });
const ps = region.pageSize;
for (let i = 0; i < 4 * ps; i++) region.bytes[i] = (i * 5 + 1) & 0xff;

/** Rss/Anonymous/Swap in kB of the region's vma, straight from the kernel. */
function kernelSmaps() {
  const text = readFileSync('/proc/self/smaps', 'utf8');
  const at = text.indexOf(`\n${region.address.toString(16)}-`);
  const block = text.slice(at + 1).split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)[0];
  const kb = (f) => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(block)[1]);
  return { Rss: kb('Rss'), Anonymous: kb('Anonymous'), Swap: kb('Swap') };
}
const kB = (o) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, `${v / 1024} kB`]));

console.log('4 pages written by the CPU:');
console.log('  kernel smaps:  ', kernelSmaps());
region.migrate(0, 4, gpu);
console.log('migrated all 4 to gpu0:');
console.log('  kernel smaps:  ', kernelSmaps(), '(no CPU pages left)');
console.log('  region.smaps():', kB(region.smaps()), '(device pages are resident, not swap)');
assert.deepEqual(region.smaps(), { rss: 4 * ps, anonymous: 4 * ps, swap: 0, device: 4 * ps });

const pfns = [0, 1, 2, 3].map((p) => region.entry(p).pfn); // kept: page 0 will leave the device
const refcounts = () => pfns.map((pfn) => gpu.refcount(pfn));
console.log(`  refcounts ${JSON.stringify(refcounts())}, write entries: ${[0, 1, 2, 3].map((p) => region.entry(p).write)}`);

// The child sleeps first, so we can look while it maps the pages; then it reads page 0.
const child = region.fork(
  [
    { op: 'sleep', ms: 500 },
    { op: 'read', page: 0, offset: 5 },
  ],
  { timeoutMs: 10_000 }, // the child is killed after this; every wait has a deadline
);
const deadline = Date.now() + 10_000;
while (gpu.refcount(pfns[1]) !== 2) {
  assert.ok(Date.now() < deadline, 'the fork never shared the device pages');
  await new Promise((r) => setTimeout(r, 2));
}
console.log('\nwhile the forked child lives:');
console.log(`  refcounts ${JSON.stringify(refcounts())}  (each mapping holds one; each counts it in its own RSS)`);
console.log(`  parent entries now read entries: ${[0, 1, 2, 3].map((p) => !region.entry(p).write)}  (COW: whoever writes first copies)`);
const exclusive = (region.pagemap(1, 1)[0] & PM_MMAP_EXCLUSIVE) !== 0n;
console.log(`  pagemap PM_MMAP_EXCLUSIVE on page 1: ${exclusive}  (mapped twice)`);
console.log('  parent region.smaps():', kB(region.smaps()), '(unchanged: the child adds its own, not ours)');
assert.deepEqual(refcounts(), [2, 2, 2, 2]);
assert.equal(exclusive, false);
assert.ok([0, 1, 2, 3].every((p) => region.entry(p).write === false));

const res = await child;
console.log('\nchild finished:', { results: res.results, exitCode: res.exitCode, signal: res.signal });
assert.equal(res.exitCode, 0);
assert.equal(res.results[1], (5 * 5 + 1) & 0xff); // the child read the device page's bytes
// Page 0 came back for both processes when the child touched it; pages 1-3 lost the child's
// reference when its mapping went away at exit.
console.log(`  refcounts ${JSON.stringify(refcounts())}; gpu0.used = ${gpu.used}; page 0 is now ${JSON.stringify(region.entry(0))}`);
console.log(`  pagemap PM_MMAP_EXCLUSIVE on page 1: ${(region.pagemap(1, 1)[0] & PM_MMAP_EXCLUSIVE) !== 0n}`);
assert.deepEqual(refcounts(), [0, 1, 1, 1]); // page 0's device page was freed with its last reference
assert.deepEqual(region.entry(0), { kind: 'present', write: false }); // back read-only: the next write copies
assert.equal(gpu.used, 3);

console.log('\nAnswer: copy_one_pte gives the child a second mapping of the same device page (get_page,');
console.log("page_dup_rmap), and RSS counts mapped anonymous pages of the process: the device page is the");
console.log("child's memory as much as the parent's, just not in system RAM. It is resident, never swap; the");
console.log('count goes back down when a mapping is zapped (munmap, exit) and the page is freed with the last one.');

await region.close();
await gpu.close();
