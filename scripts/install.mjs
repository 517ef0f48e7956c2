// npm's install step. A package from the registry carries a prebuilt addon for linux-x64 with
// glibc (prebuilds/, made by scripts/prebuild.mjs when the tarball is packed); when it loads here,
// nothing is compiled. Otherwise (another architecture, an older glibc, a source checkout, or
// UFFD_HMM_BUILD_FROM_SOURCE=1) node-gyp compiles the addon from native/, which needs python3,
// make and g++ 10 or newer. Nothing is downloaded.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const prebuilt = path.join(root, 'prebuilds', `${process.platform}-${process.arch}-glibc`, 'uffd_hmm.node');

// A source checkout always builds what its sources say, never a binary left over from packing.
const fromSource =
  existsSync(path.join(root, '.git')) ||
  process.env.npm_config_build_from_source === 'true' ||
  process.env.UFFD_HMM_BUILD_FROM_SOURCE === '1';

function prebuiltLoads() {
  if (fromSource || !existsSync(prebuilt)) return false;
  try {
    createRequire(import.meta.url)(prebuilt);
    return true;
  } catch (e) {
    console.warn(`uffd-hmm: the prebuilt addon does not load here (${String(e.message).split('\n')[0]}); compiling it instead`);
    return false;
  }
}

if (prebuiltLoads()) {
  console.log(`uffd-hmm: using the prebuilt addon for ${process.platform}-${process.arch} (glibc)`);
} else {
  // npm hands its own node-gyp to install scripts (npm_config_node_gyp, and on PATH).
  const gyp = process.env.npm_config_node_gyp;
  const [cmd, args] = gyp ? [process.execPath, [gyp, 'rebuild']] : ['node-gyp', ['rebuild']];
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(
      `uffd-hmm: compiling the native addon failed (${r.error ? r.error.message : `node-gyp exited with ${r.status ?? r.signal}`}). ` +
        'It needs python3, make and g++ 10 or newer (Debian/Ubuntu: `sudo apt-get install python3 make g++`).',
    );
    process.exit(1);
  }
}
