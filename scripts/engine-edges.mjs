#!/usr/bin/env node
// The fault engine's recovery and fallback paths (issue #21), for scripts/asan.sh (also runs on a
// normal build): a huge entry's one-page fallback, copies cut short (the test hook testCutCopy), a
// re-migrated neighbour (testPauseAt), refusals from a system call and from the CPU, a takeover
// that keeps the owner's lock, and forks while the worker servicer is stuck. Each scenario checks
// its bytes and books; exits 1 on any failure.
//
// Usage: node scripts/engine-edges.mjs [--rounds N]     (a child of itself: --child <name>)
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Device, NativeToucher, Region, configureServicers } from 'uffd-hmm';
import { native } from '../dist/native.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const self = fileURLToPath(import.meta.url);
const arg = (name) => (process.argv.indexOf(name) > 0 ? process.argv[process.argv.indexOf(name) + 1] : undefined);
const rounds = Number(arg('--rounds') ?? 3);
const failures = [];
const N = 512;

function expectEq(what, got, want) {
  if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

function fillBytes(r, seed) {
  for (let p = 0; p < r.pages; p++) r.bytes.fill((p * 13 + seed) & 0xff, p * r.pageSize, (p + 1) * r.pageSize);
}

function checkBytes(r, seed, what) {
  for (let p = 0; p < r.pages; p++) {
    const want = (p * 13 + seed) & 0xff;
    if (r.bytes[p * r.pageSize] !== want || r.bytes[(p + 1) * r.pageSize - 1] !== want) throw new Error(`${what}: page ${p} reads ${r.bytes[p * r.pageSize]}, not ${want}`);
  }
}

async function scenario(name, fn) {
  const started = Date.now();
  try {
    await fn();
    console.log(`${name}: done in ${Date.now() - started} ms`);
  } catch (e) {
    failures.push(`${name}: ${e.stack ?? e}`);
  }
}

function child(name, timeout = 60_000) {
  const res = spawnSync(process.execPath, [self, '--child', name], { encoding: 'utf8', timeout, killSignal: 'SIGKILL' });
  if (res.status !== 0) throw new Error(`child ${name}: status ${res.status} signal ${res.signal}\n${res.stdout}${res.stderr}`);
  return res.stdout;
}

// Children: each sets the process-wide stall deadline it needs.
const childName = arg('--child');
if (childName === 'takeover') {
  configureServicers({ stallDeadlineMs: 200 });
  const d = new Device({ capacity: 8, driver: new URL('../test/fixtures/busy-driver.mjs', import.meta.url) });
  const r = Region.map({ pages: 4 });
  r.on('error', () => {});
  for (let p = 0; p < 4; p++) r.bytes.fill(0xa0 + p, p * r.pageSize, (p + 1) * r.pageSize);
  r.migrate(2, 1, d);
  r.migrate(0, 2, d);
  const pfn2 = r.entry(2).pfn;
  const t = new NativeToucher(r, { threads: 1, iterations: 1, mode: 'read', pages: [0] });
  await new Promise((res) => setTimeout(res, 50));
  r.discard(1, 1); // holds page 1 through the takeover
  expectEq('refcount of page 2', d.refcount(pfn2), 1);
  r.migrate(3, 1, d);
  expectEq('page 2', r.bytes[2 * r.pageSize + 9], 0xa2);
  await t.finished(10_000);
  expectEq('page 3', r.bytes[3 * r.pageSize + 9], 0xa3);
  expectEq('used', d.used, 0);
  await r.close();
  await d.close();
  process.exit(0);
}
if (childName !== undefined) throw new Error(`unknown child ${childName}`);

await scenario('a huge read entry split by mprotect comes back one page (item 1)', async () => {
  for (let k = 0; k < rounds; k++) {
    for (const servicer of ['worker', 'native', 'inline']) {
      const r = Region.map({ pages: N, servicer, thp: true });
      fillBytes(r, k);
      r.collapse(0, N);
      const d = new Device({ capacity: N + 1 });
      r.migrate(0, N, d, { write: false });
      const pfn0 = r.entry(0).pfn;
      r.mprotect(256, 256, 'read');
      void r.bytes[300 * r.pageSize];
      expectEq(`${servicer} refcount of page 0`, d.refcount(pfn0), 1);
      checkBytes(r, k, `${servicer} split huge entry`);
      expectEq(`${servicer} used`, d.used, 0);
      await r.close();
      await d.close();
    }
  }
});

await scenario('multi-page copies cut short (item 4)', async () => {
  for (let k = 0; k < rounds; k++) {
    for (const servicer of ['worker', 'native', 'inline']) {
      const r = Region.map({ pages: 8, servicer, faultAround: 4 });
      const d = new Device({ capacity: 8 });
      fillBytes(r, k);
      r.migrate(0, 8, d, { write: false });
      native.testCutCopy(r.handle, 2);
      void r.bytes[0];
      native.testCutCopy(r.handle, 3, false);
      void r.bytes[4 * r.pageSize];
      r.bytes[r.pageSize + 5] = r.bytes[r.pageSize + 5]; // a write-protected page of an uncounted fill
      native.testCutCopy(r.handle, 1);
      r.migrateToRam(0, 8);
      checkBytes(r, k, `${servicer} cut copies`);
      expectEq(`${servicer} used`, d.used, 0);
      await r.close();
      await d.close();
    }
  }
});

await scenario('a fault-around neighbour re-migrated while the fault waits (item 5)', async () => {
  for (let k = 0; k < rounds; k++) {
    const r = Region.map({ pages: 4, servicer: 'native', faultAround: 2 });
    const a = new Device({ capacity: 4 });
    const b = new Device({ capacity: 4 });
    const other = Region.map({ pages: 1, servicer: 'native' });
    fillBytes(r, k);
    r.migrate(0, 2, a);
    other.bytes.fill(0xee);
    const held = native.testPauseAt(r.handle, 1, 5000);
    const t = new NativeToucher(r, { threads: 1, iterations: 1, mode: 'read', pages: [0] });
    const deadline = Date.now() + 5000;
    while (native.testHoldServicer(r.handle, 0, 0) === held && Date.now() < deadline) await new Promise((res) => setTimeout(res, 1));
    r.migrate(1, 1, b);
    other.migrate(0, 1, a);
    r.migrate(1, 1, a);
    native.testReleaseServicer(r.handle, native.testHoldServicer(r.handle, 0, 0));
    await t.finished(5000);
    checkBytes(r, k, 'ABA neighbour');
    expectEq('other region', other.bytes[9], 0xee);
    await other.close();
    await r.close();
    await a.close();
    await b.close();
  }
});

await scenario('a refusal inside write(2): EFAULT, entry intact (item 6)', async () => {
  const r = Region.map({ pages: 2 });
  const d = new Device({ capacity: 2, driver: new URL('../test/fixtures/semantics/drivers/refuse-twice.mjs', import.meta.url) });
  fillBytes(r, 5);
  r.migrate(0, 1, d);
  const entry = JSON.stringify({ ...r.entry(0), device: undefined });
  const dir = mkdtempSync(path.join(tmpdir(), 'uffd-hmm-edges-'));
  const fd = openSync(path.join(dir, 'out'), 'w');
  const got = [];
  for (let i = 0; i < 3; i++) {
    try {
      got.push(writeSync(fd, r.bytes.subarray(0, 16)));
    } catch (e) {
      got.push(e.code);
    }
    if (i < 2) expectEq('entry after a refusal', JSON.stringify({ ...r.entry(0), device: undefined }), entry);
  }
  closeSync(fd);
  rmSync(dir, { recursive: true, force: true });
  expectEq('write(2) results', got, ['EFAULT', 'EFAULT', 16]);
  checkBytes(r, 5, 'refused page');
  await r.close();
  await d.close();
});

await scenario('a refused CPU access: SIGBUS BUS_ADRERR, asked again (item 6)', async () => {
  const res = spawnSync(process.execPath, [path.join(root, 'test/fixtures/semantics/sigbus-child.mjs'), 'refuse-twice.mjs', 'cpu-record'], {
    encoding: 'utf8',
    timeout: 30_000,
    killSignal: 'SIGKILL',
  });
  if (res.status !== 0 || !res.stdout.includes('"count":2,"code":2')) throw new Error(`status ${res.status}: ${res.stdout}${res.stderr}`);
});

await scenario('a takeover keeps the owner lock of a discard waiting for its REMOVE (item 2)', async () => {
  child('takeover');
});

await scenario('forks while the worker servicer is stuck (item 3)', async () => {
  for (const mode of ['stalled', 'dead']) {
    const res = spawnSync(process.execPath, [path.join(root, 'test/fixtures/fork-during-stall.mjs'), mode], { encoding: 'utf8', timeout: 40_000, killSignal: 'SIGKILL' });
    if (res.status !== 0 || !res.stdout.includes('ok guarded=true byte=3 used=3')) throw new Error(`${mode}: status ${res.status} ${res.signal}: ${res.stdout}${res.stderr}`);
  }
});

if (failures.length > 0) {
  console.error(`engine-edges: ${failures.length} failure(s):\n${failures.join('\n')}`);
  process.exit(1);
}
console.log('engine-edges: all scenarios passed');
process.exit(0);
