// Where a results file came from: the package version and, in a source checkout, the git commit,
// so that two results files (two hosts, two kernels, two commits) can be told apart and compared.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import type { HostFacts, HostKind, Provenance } from './types.js';

/** The package root: dist/bench/ is two levels below it. */
const root = fileURLToPath(new URL('../../', import.meta.url));

let cached: Provenance | undefined;

export function provenance(): Provenance {
  if (cached) return cached;
  const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  let commit: string | null = null;
  // Only a checkout has one (a worktree's .git is a file); an installed package never asks git.
  if (existsSync(`${root}.git`)) {
    try {
      const out = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 });
      commit = /^[0-9a-f]{40}$/.test(out.trim()) ? out.trim() : null;
    } catch {
      commit = null; // no git on this machine: the version alone
    }
  }
  return (cached = { version, commit });
}

/** Under this a null system call is cheap enough that user-space work per fault shows (a KVM-like host). */
export const FAST_SYSCALL_NS = 200;

/** The host's kind from its own costs; see HostFacts.kind and charges_first_read. */
export function hostKindOf(syscallNs: number, copyFreshUs: number, copyUs: number): Pick<HostFacts, 'kind' | 'first_read_charge_us' | 'charges_first_read'> {
  const kind: HostKind = syscallNs < FAST_SYSCALL_NS ? 'fast' : 'slow';
  const charge = copyFreshUs - copyUs;
  return { kind, first_read_charge_us: charge, charges_first_read: charge > 1 && charge > copyUs / 2 };
}

/** The host's kind in words, for tables and notes. */
export function describeHost(h: Pick<HostFacts, 'kind' | 'syscall_ns' | 'charges_first_read' | 'first_read_charge_us'>): string {
  const calls =
    h.kind === 'fast'
      ? `fast host (a null system call ${h.syscall_ns.toFixed(0)} ns < ${FAST_SYSCALL_NS} ns: user-space work per fault shows)`
      : `slow host (a null system call ${h.syscall_ns.toFixed(0)} ns ≥ ${FAST_SYSCALL_NS} ns: each system call hides user-space work of about its cost)`;
  return h.charges_first_read ? `${calls}, charging ${h.first_read_charge_us.toFixed(2)} µs for the kernel's first read of a page` : calls;
}
