// LRU eviction against refusal, on a device with a quarter of the working set's memory: the CPU
// and the device take turns, the device wanting back every page the CPU touched (driver.mjs).
//
//   node examples/bench-lru/bench.mjs [--quick]
//
// The counts are exact (one touching thread, seeded patterns) and checked; the latencies are
// this machine's, printed, not checked.
import assert from 'node:assert/strict';
import { bench } from 'uffd-hmm/bench';

const quick = process.argv.includes('--quick');
const pages = quick ? 4096 : 65536;
const capacity = pages / 4;
const driver = (policy) => new URL(`./driver.mjs?policy=${policy}`, import.meta.url);

const fmt = (x) => (x >= 100 ? x.toFixed(0) : x.toFixed(2));
console.log(`${pages} pages, a device of ${capacity}, batches of 256 CPU touches`);
console.log('pattern  policy   faults  evicted  admitted  not admitted  p50 µs  p99 µs  p50/c  turns s');
const results = {};
for (const pattern of ['hot:10', 'random']) {
  for (const policy of ['lru', 'refuse']) {
    const r = await bench({ driver: driver(policy), pattern, pages, deviceCapacity: capacity });
    const [run] = r.runs;
    const d = r.decisions;
    results[`${pattern}/${policy}`] = r;
    console.log(
      `${pattern.padEnd(8)} ${policy.padEnd(7)} ${String(run.faults_served).padStart(7)}  ${String(d.to_ram).padStart(7)}  ` +
        `${String(d.to_device).padStart(8)}  ${String(d.not_admitted).padStart(12)}  ${fmt(run.p50_us).padStart(6)}  ` +
        `${fmt(run.p99_us).padStart(6)}  ${r.ratios.p50.toFixed(2).padStart(5)}  ${r.device.device_turns_s.toFixed(3).padStart(7)}`,
    );
  }
}

for (const pattern of ['hot:10', 'random']) {
  const lru = results[`${pattern}/lru`];
  const refuse = results[`${pattern}/refuse`];
  // LRU makes room for every page the device wants; refusal evicts nothing and leaves pages out.
  assert.equal(lru.decisions.not_admitted, 0, pattern);
  assert.ok(lru.decisions.to_ram > 0, `${pattern}: LRU evicted`);
  assert.equal(refuse.decisions.to_ram, 0, pattern);
  assert.ok(refuse.decisions.not_admitted > 0, `${pattern}: refusal left pages out`);
  for (const r of [lru, refuse]) {
    // The device never holds more than its memory, and every fault went through the hook.
    assert.ok(r.device.resident_at_end <= capacity);
    assert.equal(r.hooks.fault.calls, r.runs[0].faults_served);
    assert.equal(r.runs[0].faults_served, r.runs[0].device_touches);
  }
}
// The hot pages keep coming back to the device under LRU, so the CPU faults on them again and
// again: more faults than when the full device refuses them.
assert.ok(results['hot:10/lru'].runs[0].faults_served > results['hot:10/refuse'].runs[0].faults_served);
console.log('OK: LRU admitted every page the device wanted, by evicting; refusal evicted nothing and left pages in RAM');
