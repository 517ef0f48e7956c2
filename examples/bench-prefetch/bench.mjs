// Does prefetching pay? The prefetch driver against the same driver with prefetch off
// (?ahead=0), on a streaming pattern and a random one, each beside the C baseline of its own run.
//
//   node examples/bench-prefetch/bench.mjs [--quick]
//
// The counts are exact (one touching thread, seeded patterns) and checked; the latencies are
// this machine's, printed, not checked.
import assert from 'node:assert/strict';
import { bench } from 'uffd-hmm/bench';

const quick = process.argv.includes('--quick');
const pages = quick ? 4096 : 65536;
const batch = 256;
const driver = (ahead) => new URL(`./driver.mjs?ahead=${ahead}`, import.meta.url);

const fmt = (x) => (x >= 100 ? x.toFixed(0) : x.toFixed(2));
console.log(`${pages} pages on the device, batches of ${batch} CPU touches`);
console.log('pattern     policy         faults  to RAM by turns  p50 µs  p99 µs  p50/c  touching s  turns s');
const results = {};
for (const pattern of ['sequential', 'random']) {
  for (const [policy, ahead] of [['prefetch 256', 256], ['none', 0]]) {
    const r = await bench({ driver: driver(ahead), pattern, pages, batch });
    const [run] = r.runs;
    results[`${pattern}/${policy}`] = r;
    console.log(
      `${pattern.padEnd(11)} ${policy.padEnd(13)} ${String(run.faults_served).padStart(7)}  ${String(r.decisions.to_ram).padStart(15)}  ` +
        `${fmt(run.p50_us).padStart(6)}  ${fmt(run.p99_us).padStart(6)}  ${r.ratios.p50.toFixed(2).padStart(5)}  ` +
        `${r.device.touching_s.toFixed(3).padStart(10)}  ${r.device.device_turns_s.toFixed(3).padStart(7)}`,
    );
  }
}

// Streaming: only the first batch faults; every later page was back in RAM before its touch.
const seq = results['sequential/prefetch 256'];
assert.equal(seq.runs[0].faults_served, batch);
assert.equal(seq.decisions.to_ram, pages - batch);
// Without prefetch, and on a random pattern (no stream to follow), every page faults once.
for (const key of ['sequential/none', 'random/prefetch 256', 'random/none']) {
  assert.equal(results[key].runs[0].faults_served, pages, key);
  assert.equal(results[key].decisions.to_ram, 0, key);
}
// The fault hook answered every fault, and the baseline served as many.
for (const r of Object.values(results)) {
  assert.equal(r.hooks.fault.calls, r.runs[0].faults_served);
  assert.equal(r.runs[1].faults_served, r.runs[0].device_touches);
}
console.log(`OK: prefetch turned ${pages} faults into ${batch} on the stream, and left the random pattern alone`);
