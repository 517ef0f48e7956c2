// Worked example for docs/DRIVERS.md: a device that refuses every 10th fault (SIGBUS), and a
// supervisor that observes the SIGBUS, recovers, and accounts for every page. Exits non-zero if not.
//
// The faulting work runs in child processes (job.mjs): a SIGBUS kills the whole process, and no
// JS handler can catch a real one. This supervisor runs the job, reads how far the child got from
// its output, and retries the remaining pages: twice on the flaky device, then on a well-behaved
// one. With 30 pages and a refusal at every 10th fault:
//   attempt 1, flaky: pages 0-8 done, SIGBUS on page 9  (the device's 10th fault)
//   attempt 2, flaky: pages 9-17 done, SIGBUS on page 18
//   attempt 3, good:  pages 18-29 done, exit 0
// Then every page must have been digested exactly once, with the digest its input gives.
//
//   node examples/flaky-device/main.mjs
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { PAGE_SIZE, probe } from 'uffd-hmm';
import { JOB_PAGES, expectedDigest } from './data.mjs';

const job = fileURLToPath(new URL('./job.mjs', import.meta.url));
const CHILD_DEADLINE_MS = 20_000;
// The recovery policy under test: which device each attempt uses.
const PLAN = ['flaky', 'flaky', 'good'];

const p = probe();
assert.ok(p.available, `userfaultfd is unavailable: ${p.problem}. Fix: ${p.fix}`);

/** Runs job.mjs with a hard deadline; resolves with its exit status and output. */
function runJob(first, count, device) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [job, String(first), String(count), device], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (s) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s) => (stderr += s));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, CHILD_DEADLINE_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

const done = new Map(); // job page -> digest, from whichever attempt finished it
const attempts = [];
let next = 0; // the first job page not done yet
for (let a = 0; next < JOB_PAGES; a++) {
  assert.ok(a < PLAN.length, `out of attempts with pages ${next}..${JOB_PAGES - 1} still to do`);
  const device = PLAN[a];
  const first = next;
  const o = await runJob(first, JOB_PAGES - first, device);
  assert.equal(o.timedOut, false, `attempt ${a + 1} hung past ${CHILD_DEADLINE_MS} ms:\n${o.stdout}${o.stderr}`);

  // What the child finished, and the page it was touching when it ended.
  const finished = [];
  let touching = null;
  const refusals = [];
  for (const line of o.stdout.split('\n')) {
    const [word, a1, a2] = line.split(' ');
    if (word === 'TOUCH') touching = Number(a1);
    if (word === 'DONE') {
      const page = Number(a1);
      assert.equal(page, touching, `DONE ${page} without its TOUCH`);
      assert.ok(!done.has(page), `page ${page} was digested twice`);
      done.set(page, a2);
      finished.push(page);
      touching = null;
    }
    if (line.startsWith('driver: ')) refusals.push(line);
  }

  const range = finished.length > 0 ? `pages ${finished[0]}-${finished.at(-1)} done` : 'no page done';
  if (o.signal === 'SIGBUS') {
    // The device refused the fault on the page the child was touching: it is not done, and
    // everything from it on must be retried. Its data died with the child; the input is
    // re-created from the page number by the next attempt.
    assert.notEqual(touching, null, `attempt ${a + 1} died of SIGBUS outside any touch:\n${o.stdout}${o.stderr}`);
    assert.equal(refusals.length, 1, `one refusal per death, from the driver itself:\n${o.stdout}`);
    // The driver names the region page it refused; the child's region starts at job page `first`.
    const refused = /region page (\d+)/.exec(refusals[0]);
    assert.equal(first + Number(refused?.[1]), touching, `the driver refused a page the child was not touching: ${refusals[0]}`);
    console.log(`attempt ${a + 1} on the ${device} device: ${range}, SIGBUS on page ${touching}`);
    console.log(`  ${refusals[0]}`);
    attempts.push({ device, finished, signal: o.signal, refusedPage: touching });
    next = touching;
  } else {
    assert.deepEqual({ code: o.code, signal: o.signal, stderr: o.stderr }, { code: 0, signal: null, stderr: '' }, `attempt ${a + 1} failed:\n${o.stdout}${o.stderr}`);
    const stats = JSON.parse(o.stdout.split('\n').find((l) => l.startsWith('STATS ')).slice(6));
    console.log(`attempt ${a + 1} on the ${device} device: ${range}, exit 0`);
    console.log(`  child's region.stats().migratedBack = ${stats.region.migratedBack}; ${device}0.stats() = ${JSON.stringify(stats.device)}; used = ${stats.used}`);
    // The well-behaved device served every fault: each page came back and its device page was freed.
    const n = JOB_PAGES - first;
    assert.deepEqual(stats.device, { faults: n, migratedToDevice: n, migratedToRam: n, freed: n });
    assert.equal(stats.used, 0);
    attempts.push({ device, finished, signal: null, refusedPage: null });
    next = JOB_PAGES;
  }
}

// The scenario is deterministic: every 10th fault of each flaky process is refused.
assert.deepEqual(
  attempts.map((t) => [t.device, t.finished[0], t.finished.at(-1), t.signal, t.refusedPage]),
  [
    ['flaky', 0, 8, 'SIGBUS', 9],
    ['flaky', 9, 17, 'SIGBUS', 18],
    ['good', 18, 29, null, null],
  ],
);

// All data accounted for: each page exactly once, each digest what its input gives.
assert.equal(done.size, JOB_PAGES);
for (let page = 0; page < JOB_PAGES; page++) {
  assert.equal(done.get(page), expectedDigest(page, PAGE_SIZE), `page ${page}: wrong digest`);
}
console.log(`recovered: all ${JOB_PAGES} pages accounted for, each digested exactly once, every digest matches its input`);
