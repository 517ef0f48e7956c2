// npm pack's prepack step: puts the addon built in this checkout into prebuilds/linux-x64-glibc/,
// which the tarball ships and scripts/install.mjs loads instead of compiling; `--clean` (postpack)
// takes it out again, so the checkout never loads a packed copy. The addon is brought up to date
// first (an incremental node-gyp build: nothing is recompiled when nothing changed).
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const prebuilds = path.join(root, 'prebuilds');

if (process.argv.includes('--clean')) {
  rmSync(prebuilds, { recursive: true, force: true });
  process.exit(0);
}

const glibc = Boolean(process.report?.getReport().header.glibcVersionRuntime);
if (process.platform !== 'linux' || process.arch !== 'x64' || !glibc) {
  console.warn(`uffd-hmm: packing without a prebuilt addon: this is ${process.platform}-${process.arch}, not linux-x64 with glibc`);
  process.exit(0);
}

const require = createRequire(import.meta.url);
const gyp = process.env.npm_config_node_gyp ?? require.resolve('node-gyp/bin/node-gyp.js');
const step = existsSync(path.join(root, 'build', 'Makefile')) ? 'build' : 'rebuild';
const r = spawnSync(process.execPath, [gyp, step], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
if (r.status !== 0) {
  process.stderr.write(r.stdout ?? '');
  process.stderr.write(r.stderr ?? '');
  console.error(`uffd-hmm: node-gyp ${step} failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`}); not packing`);
  process.exit(1);
}

const out = path.join(prebuilds, 'linux-x64-glibc', 'uffd_hmm.node');
rmSync(prebuilds, { recursive: true, force: true });
mkdirSync(path.dirname(out), { recursive: true });
copyFileSync(path.join(root, 'build', 'Release', 'uffd_hmm.node'), out);
// Symbols are for debugging this checkout's build; the shipped copy does not need them.
spawnSync('strip', ['--strip-unneeded', out], { stdio: 'ignore' });
require(out); // a prebuilt that does not load here must not ship
console.log(`uffd-hmm: packed the prebuilt addon ${path.relative(root, out)}`);
