#!/usr/bin/env node
// Exit stress: many children, a few at a time, each ending its script while native threads fault on
// device pages and the servicer migrates them back. Every child must exit 0: an abort here is
// memory freed at exit while a native thread still used it.
//
// Usage: node scripts/exit-stress.mjs [--runs N] [--parallel N] [--servicer worker,native,inline] [--ms N]
// Build first (npm run build). Prints one line per servicer; exits 1 on any child that did not exit 0.
// test/exit-stress.test.ts runs the same engine (stressExit, exported below) with fewer runs.
// Under AddressSanitizer: scripts/asan.sh runs this script against an instrumented build.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The child: the script of the resources test, with the exit it ends in chosen by `how`. */
export function childScript(servicer, ms, how) {
  return `
    import { Device, NativeToucher, Region } from 'uffd-hmm';
    const r = Region.map({ pages: 256, servicer: '${servicer}' });
    const d = new Device({ capacity: 256 });
    r.bytes.fill(7);
    r.migrate(0, 256, d);
    new NativeToucher(r, { threads: 4, iterations: 0, mode: 'increment' });
    const m = setInterval(() => r.migrate(0, 256, d), 1);
    setTimeout(() => {
      clearInterval(m);
      const on = r.migrate(0, 256, d);
      console.log('faults', r.stats().faults, 'on device', on);
      ${how === 'exit' ? 'process.exit(0);' : ''}
    }, ${ms});
  `;
}

function runChild(code, cwd, timeoutMs, env) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b) => (out += b));
    child.stderr.on('data', (b) => (out += b));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, timedOut, out });
    });
  });
}

/**
 * Runs `runs` children of `servicer`, `parallel` at a time, half ending with process.exit() and
 * half by an empty event loop. Resolves to { runs, ok, failures: [{ code, signal, timedOut, out }] }.
 */
export async function stressExit({ servicer, runs, parallel = 4, ms = 200, cwd = here, timeoutMs = 20_000, env = process.env }) {
  const failures = [];
  let next = 0;
  let ok = 0;
  const lane = async () => {
    for (let i = next++; i < runs; i = next++) {
      const res = await runChild(childScript(servicer, ms, i % 2 ? 'exit' : 'end'), cwd, timeoutMs, env);
      if (res.code === 0 && res.signal === null && !res.timedOut && /faults \d+ on device \d+/.test(res.out)) ok++;
      else failures.push(res);
    }
  };
  await Promise.all(Array.from({ length: parallel }, lane));
  return { runs, ok, failures };
}

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const runs = Number(arg('runs', 200));
  const parallel = Number(arg('parallel', 4));
  const ms = Number(arg('ms', 200));
  let bad = 0;
  for (const servicer of arg('servicer', 'worker,native,inline').split(',')) {
    const started = Date.now();
    const res = await stressExit({ servicer, runs, parallel, ms });
    bad += res.failures.length;
    const kinds = {};
    for (const f of res.failures) {
      const k = f.timedOut ? 'timeout' : f.signal ?? `exit ${f.code}`;
      kinds[k] = (kinds[k] ?? 0) + 1;
    }
    console.log(`${servicer}: ${res.ok}/${runs} exited 0 in ${((Date.now() - started) / 1000).toFixed(1)} s; failures ${JSON.stringify(kinds)}`);
    for (const f of res.failures.slice(0, 3)) console.log('  ' + f.out.trim().split('\n').slice(-12).join('\n  '));
  }
  process.exit(bad === 0 ? 0 : 1);
}
