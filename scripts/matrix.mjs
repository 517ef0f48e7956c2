// The support matrix, as CI runs it after `npm test` (.ci/run) and as `npm run matrix` runs it
// locally: the whole test suite on Node 26, and a package check on Node 20, 22, 24 and 26 (and
// once on vitest 3). A package check packs this tree, installs the tarball into an empty project
// (offline: npm's cache; the first run on a machine fills it once), and there, on that Node:
// imports it and serves a real fault, runs the CLI, type-checks a strict consumer with
// skipLibCheck false on TypeScript 5.9 and 7, and runs a vitest file on the uffd-hmm/vitest
// fixtures and matchers. Node binaries come from the npm registry (scripts/matrix-node.mjs).
//
//   node scripts/matrix.mjs [--no-suite] [--only NAME,...] [--json FILE]
//
// Exits 1 when any check fails. Prints a table and, last, "matrix: N passed, N failed".
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ensureNode, nodeCache } from './matrix-node.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));

// Exact versions, so that a run is reproducible and a second one fetches nothing. Raise them here.
const NODE = { 20: '20.20.2', 22: '22.23.5', 24: '24.22.3', 26: '26.12.1' };
const TYPES_NODE = { 20: '20.19.43', 22: '22.20.7', 24: '24.19.4', 25: '25.9.12', 26: '26.6.11' };
const TYPESCRIPT = { '5.9': '5.9.3', 7: '7.0.2' };
const VITEST = { 3: '3.2.7', 4: '4.1.12', 5: '5.1.2' };
/** The package checks: the newest vitest each Node runs (vitest 5 needs Node 22), and vitest 3 once. */
const CELLS = [
  { name: 'node20', node: 20, vitest: 4 },
  { name: 'node22', node: 22, vitest: 5 },
  { name: 'node24', node: 24, vitest: 5 },
  { name: 'node26', node: 26, vitest: 5, typesSweep: true },
  { name: 'node22-vitest3', node: 22, vitest: 3 },
];
// vitest 3's own declarations do not compile on TypeScript 7 (they redeclare chai's
// `containSubset`, which @types/chai 5.2 declares too): the only errors accepted, and only there.
const UPSTREAM = [{ vitest: 3, ts: 7, errors: /^node_modules\/(@types\/chai|vitest|@vitest\/[a-z-]+)\/.*error TS2300: Duplicate identifier 'containSubset'/ }];

const { values: opts } = parseArgs({
  options: { 'no-suite': { type: 'boolean' }, only: { type: 'string' }, json: { type: 'string' } },
});
const only = opts.only ? new Set(opts.only.split(',')) : undefined;

const npmCli = (() => {
  if (process.env.npm_execpath?.endsWith('.js')) return process.env.npm_execpath;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    try {
      const real = realpathSync(path.join(dir, 'npm'));
      if (real.endsWith('.js')) return real;
    } catch {}
  }
  return path.resolve(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js');
})();

/** Runs a command with a deadline; npm's variables from an enclosing `npm run` are left out. */
function run(cmd, args, { cwd = root, env = {}, timeoutMs = 300_000, echo = false } = {}) {
  const childEnv = { ...process.env };
  for (const k of Object.keys(childEnv)) if (/^npm_/i.test(k)) delete childEnv[k];
  Object.assign(childEnv, { NO_COLOR: '1', FORCE_COLOR: '0' }, env);
  for (const k of Object.keys(childEnv)) if (childEnv[k] === undefined) delete childEnv[k];
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let stdout = '';
    const take = (s, isOut) => {
      out += s;
      if (isOut) stdout += s;
      if (echo) process.stdout.write(s);
    };
    child.stdout.setEncoding('utf8').on('data', (s) => take(s, true));
    child.stderr.setEncoding('utf8').on('data', (s) => take(s, false));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, out: `${out}${e.message}`, stdout, timedOut, ms: Date.now() - started });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out, stdout, timedOut, ms: Date.now() - started });
    });
  });
}
const ok = (r) => r.code === 0 && !r.timedOut;
const tail = (s, n = 25) => s.trim().split('\n').slice(-n).join('\n');

const results = [];
function record(cell, check, pass, ms, detail = '') {
  results.push({ cell, check, pass, ms, detail });
  console.log(`  ${pass ? 'ok  ' : 'FAIL'} ${cell} · ${check} (${(ms / 1000).toFixed(1)} s)${detail && (!pass || detail.startsWith('upstream')) ? `\n${detail.replace(/^/gm, '       ')}` : ''}`);
}

/** npm install in `dir` with this Node, from npm's cache; online only for what the cache lacks. */
async function install(dir, nodeEnv, extra = []) {
  const base = [npmCli, 'install', '--no-audit', '--no-fund', '--foreground-scripts', ...extra];
  let r = await run(nodeEnv.node, [...base, '--offline'], { cwd: dir, env: nodeEnv.env });
  let fetched = false;
  if (!ok(r) && /ENOTCACHED|no cached|not in the cache/i.test(r.out)) {
    fetched = true;
    r = await run(nodeEnv.node, [...base, '--prefer-offline'], { cwd: dir, env: nodeEnv.env });
  }
  return { r, fetched };
}

const FAULT_SCRIPT = `import { Device, Region } from 'uffd-hmm';
const gpu = new Device({ name: 'gpu0', capacity: 4 });
const region = Region.map({ pages: 1 });
region.bytes[7] = 42;
region.migrate(0, 1, gpu);
const onDevice = region.entry(0).kind;
console.log(JSON.stringify({ onDevice, back: region.bytes[7], migratedBack: region.stats().migratedBack, node: process.version }));
await region.close();
await gpu.close();`;
const AUGMENT = (vitest) => `import { expect } from 'vitest';
import type { UffdMatchers } from 'uffd-hmm/vitest';
import { Region } from 'uffd-hmm';

declare module 'vitest' {
  ${vitest >= 5 ? 'interface Matchers<R, T> extends UffdMatchers<R> {}' : 'interface Matchers<T = any> extends UffdMatchers<T> {}'}
}
export function check(region: Region): void {
  expect(region).toHaveDeviceEntry(0, { write: true });
  expect(region).not.toBePresent(0);
}
`;
const TSCONFIG = { compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: false, types: ['node'] } };

async function packageCheck(cell, tarball) {
  const { node, fetched } = ensureNode(NODE[cell.node], npmCli);
  const nodeEnv = { node, env: { PATH: `${path.dirname(node)}:${process.env.PATH}` } };
  const dir = mkdtempSync(path.join(os.tmpdir(), `uffd-hmm-matrix-${cell.name}-`));
  try {
    const started = Date.now();
    const types = TYPES_NODE[cell.node];
    const consumer = {
      name: 'consumer',
      private: true,
      type: 'module',
      dependencies: { 'uffd-hmm': `file:${tarball}` },
      devDependencies: {
        typescript: TYPESCRIPT['5.9'],
        'typescript-latest': `npm:typescript@${TYPESCRIPT[7]}`,
        '@types/node': types,
        vitest: VITEST[cell.vitest],
      },
      // uffd-hmm's install script picks its prebuilt addon (approved); esbuild's (vite before 8)
      // only verifies its binary, which works without it (denied, so npm does not warn).
      allowScripts: { 'uffd-hmm': true, [`file:${tarball}`]: true, esbuild: false },
    };
    for (const d of ['types', 'test']) mkdirSync(path.join(dir, d));
    writeFileSync(path.join(dir, 'package.json'), JSON.stringify(consumer, null, 2));
    copyFileSync(path.join(root, 'test', 'fixtures', 'consumer', 'main.ts'), path.join(dir, 'types', 'main.ts'));
    copyFileSync(path.join(root, 'test', 'fixtures', 'consumer', 'consumer.spec.ts'), path.join(dir, 'test', 'consumer.spec.ts'));
    writeFileSync(path.join(dir, 'types', 'tsconfig.json'), JSON.stringify({ ...TSCONFIG, include: ['main.ts'] }));
    // vitest's own expect, given the matchers the way vitest documents for this major.
    writeFileSync(path.join(dir, 'test', 'augment.ts'), AUGMENT(cell.vitest));
    writeFileSync(path.join(dir, 'test', 'tsconfig.json'), JSON.stringify({ ...TSCONFIG, include: ['consumer.spec.ts', 'augment.ts'] }));

    const inst = await install(dir, nodeEnv);
    const prebuilt = /uffd-hmm: using the prebuilt addon for linux-x64 \(glibc\)/.test(inst.r.out);
    record(cell.name, `install (Node ${NODE[cell.node]}${fetched ? ', fetched' : ''}${inst.fetched ? ', npm cache filled' : ', offline'}), prebuilt addon loads`, ok(inst.r) && prebuilt, inst.r.ms, tail(inst.r.out));
    if (!ok(inst.r)) return;

    const fault = await run(node, ['--input-type=module', '-e', FAULT_SCRIPT], { cwd: dir, env: nodeEnv.env, timeoutMs: 30_000 });
    let faultOk = false;
    try {
      const o = JSON.parse(fault.stdout.trim().split('\n').pop());
      faultOk = o.onDevice === 'device' && o.back === 42 && o.migratedBack === 1 && o.node === `v${NODE[cell.node]}`;
    } catch {}
    record(cell.name, 'import and serve a real fault', ok(fault) && faultOk, fault.ms, tail(fault.out));

    const bin = path.join(dir, 'node_modules', '.bin', 'uffd-hmm');
    const version = await run(node, [bin, '--version'], { cwd: dir, env: nodeEnv.env, timeoutMs: 20_000 });
    const info = await run(node, [bin, 'info'], { cwd: dir, env: nodeEnv.env, timeoutMs: 20_000 });
    record(cell.name, 'CLI: uffd-hmm --version, info', ok(version) && version.stdout === `${pkg.version}\n` && ok(info) && /^userfaultfd\s+/m.test(info.stdout), version.ms + info.ms, tail(version.out + info.out));

    for (const [ts, bin] of [['5.9', 'typescript'], ['7', 'typescript-latest']]) {
      const tsc = path.join(dir, 'node_modules', bin, 'bin', 'tsc');
      for (const project of ['types', 'test']) {
        const r = await run(node, [tsc, '-p', project], { cwd: dir, env: nodeEnv.env, timeoutMs: 180_000 });
        const what = `tsc ${ts} strict, skipLibCheck false: ${project === 'types' ? "'uffd-hmm'" : "'uffd-hmm/vitest'"} (@types/node ${types}, vitest ${VITEST[cell.vitest]})`;
        const upstream = UPSTREAM.find((u) => u.vitest === cell.vitest && String(u.ts) === ts);
        const errors = r.stdout.split('\n').filter((l) => /error TS\d+/.test(l));
        if (!ok(r) && upstream && errors.length > 0 && errors.every((l) => upstream.errors.test(l))) {
          record(cell.name, what, true, r.ms, `upstream: ${errors.length} error(s) in vitest's own declarations, none in uffd-hmm's:\n${errors.slice(0, 2).join('\n')}`);
        } else {
          record(cell.name, what, ok(r), r.ms, tail(r.out));
        }
      }
    }

    const vt = await run(node, [path.join(dir, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--root', dir], { cwd: dir, env: nodeEnv.env, timeoutMs: 180_000 });
    record(cell.name, `vitest ${VITEST[cell.vitest]}: fixtures and matchers`, ok(vt) && /Tests\s+1 passed \(1\)/.test(vt.stdout), vt.ms, tail(vt.out));

    if (cell.typesSweep) {
      // The public types against every @types/node release line from the oldest supported Node's on.
      for (const [major, v] of Object.entries(TYPES_NODE)) {
        const i = await install(dir, nodeEnv, ['--no-save', `@types/node@${v}`]);
        for (const [ts, bin] of [['5.9', 'typescript'], ['7', 'typescript-latest']]) {
          const r = ok(i.r) ? await run(node, [path.join(dir, 'node_modules', bin, 'bin', 'tsc'), '-p', 'types'], { cwd: dir, env: nodeEnv.env, timeoutMs: 180_000 }) : i.r;
          record(cell.name, `tsc ${ts}: 'uffd-hmm' on @types/node ${v} (${major})`, ok(r), r.ms, tail(r.out));
        }
      }
    }
    console.log(`  ${cell.name}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function suiteOn(major) {
  const { node, dir, fetched } = ensureNode(NODE[major], npmCli);
  const report = path.join(mkdtempSync(path.join(os.tmpdir(), 'uffd-hmm-matrix-suite-')), 'vitest.json');
  console.log(`\nthe whole suite on Node ${NODE[major]}${fetched ? ' (fetched)' : ''}: npm ci && npm test`);
  // The README's commands on that Node: npm itself runs on it and puts it first on PATH for the
  // scripts it runs; node-gyp compiles the addon against its headers (from the same package).
  const env = { PATH: `${path.dirname(node)}:${process.env.PATH}`, npm_config_nodedir: dir };
  const ci = await run(node, [npmCli, 'ci'], { env, timeoutMs: 15 * 60_000 });
  const warned = /^npm warn/m.test(ci.out);
  record(`suite-node${major}`, `npm ci on Node ${NODE[major]} (compiles the addon), no warning`, ok(ci) && !warned, ci.ms, ok(ci) && !warned ? '' : tail(ci.out, 30));
  if (!ok(ci)) return;
  const r = await run(node, [npmCli, 'test', '--', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`], {
    env,
    timeoutMs: 45 * 60_000,
    echo: true,
  });
  let detail = '';
  try {
    const j = JSON.parse(readFileSync(report, 'utf8'));
    detail = `${j.numPassedTests} passed, ${j.numFailedTests} failed`;
  } catch {}
  record(`suite-node${major}`, `npm test on Node ${NODE[major]}${detail ? ` (${detail})` : ''}`, ok(r), r.ms, ok(r) ? '' : tail(r.out, 40));
  rmSync(path.dirname(report), { recursive: true, force: true });
}

async function main() {
  const t0 = Date.now();
  console.log(`matrix: Node binaries in ${nodeCache}; npm ${npmCli}`);
  const build = await run(process.execPath, [path.join(root, 'node_modules', 'typescript-latest', 'bin', 'tsc'), '-p', 'tsconfig.json']);
  if (!ok(build)) throw new Error(`tsc failed:\n${build.out}`);
  const cells = CELLS.filter((c) => !only || only.has(c.name));
  if (cells.length > 0) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'uffd-hmm-matrix-pack-'));
    try {
      // What `npm pack` runs: prepack (the prebuilt addon, built on this machine's Node: one
      // Node-API binary for every Node), the packing, postpack.
      let tarball;
      try {
        const pre = await run(process.execPath, [path.join(root, 'scripts', 'prebuild.mjs')]);
        if (!ok(pre)) throw new Error(`prebuild failed:\n${pre.out}`);
        const packed = await run(process.execPath, [npmCli, 'pack', '--ignore-scripts', '--pack-destination', dir, '--silent']);
        if (!ok(packed)) throw new Error(`npm pack failed:\n${packed.out}`);
        tarball = path.join(dir, packed.stdout.trim().split('\n').pop());
      } finally {
        await run(process.execPath, [path.join(root, 'scripts', 'prebuild.mjs'), '--clean']);
      }
      for (const cell of cells) {
        console.log(`\npackage check ${cell.name}: Node ${NODE[cell.node]}, vitest ${VITEST[cell.vitest]}, TypeScript ${TYPESCRIPT['5.9']} and ${TYPESCRIPT[7]}`);
        await packageCheck(cell, tarball);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  if (!opts['no-suite'] && (!only || only.has('suite-node26'))) await suiteOn(26);

  const failed = results.filter((r) => !r.pass);
  console.log('\n| cell | check | result | s |\n|---|---|---|---|');
  for (const r of results) console.log(`| ${r.cell} | ${r.check} | ${r.pass ? (r.detail.startsWith('upstream') ? 'pass (upstream errors only)' : 'pass') : 'FAIL'} | ${(r.ms / 1000).toFixed(1)} |`);
  console.log(`\nmatrix took ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  if (opts.json) writeFileSync(opts.json, JSON.stringify({ versions: { NODE, TYPES_NODE, TYPESCRIPT, VITEST }, results, seconds: (Date.now() - t0) / 1000 }, null, 2));
  console.log(`matrix: ${results.length - failed.length} passed, ${failed.length} failed`);
  return failed.length === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
