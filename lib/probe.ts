// probe(): what this process can do with userfaultfd, and when it cannot, what is missing and
// the command or setting that fixes it. Never throws.
import { readFileSync } from 'node:fs';

import { native, type NativeProbe } from './native.js';

/**
 * A userfaultfd feature that {@link probe} reports, named after its `UFFD_FEATURE_*` bit:
 * `wp` (write-protect faults on anonymous memory, Linux 5.7+: read device entries need it),
 * `wpAsync` and `move` (UFFD_FEATURE_WP_ASYNC, UFFDIO_MOVE: reported for information only),
 * `poison` (UFFDIO_POISON, 6.6+: a driver's `'sigbus'` needs it),
 * `zeropage` (UFFDIO_ZEROPAGE), `eventFork` (`region.fork` needs it, and the kernel grants it only
 * with CAP_SYS_PTRACE), `eventRemove` / `eventUnmap` (madvise and munmap behind the library's
 * back), `eventRemap` (`region.remap`), `threadId` (the faulting thread's id in traces) and
 * `sigbus` (UFFD_FEATURE_SIGBUS, 4.14+: the `'inline'` servicer needs it).
 */
export type FeatureName =
  | 'wp'
  | 'wpAsync'
  | 'move'
  | 'poison'
  | 'zeropage'
  | 'eventFork'
  | 'eventRemove'
  | 'eventUnmap'
  | 'eventRemap'
  | 'threadId'
  | 'sigbus';

/** What {@link probe} found: whether this process can use userfaultfd, how, and with which features. */
export interface Probe {
  /** Can this process register userfaultfd ranges? When false, {@link Region.map} throws `ERR_UFFD_UNAVAILABLE`. */
  available: boolean;
  /**
   * How the userfaultfd was obtained: by opening `/dev/userfaultfd` (Linux 6.1+, governed by the
   * device node's permissions), by the `userfaultfd(2)` system call (governed by
   * `vm.unprivileged_userfaultfd` and CAP_SYS_PTRACE), or `null` when neither worked.
   */
  via: 'dev-userfaultfd' | 'syscall' | null;
  /** Only UFFD_USER_MODE_ONLY worked: faults from inside system calls cannot be served. */
  userModeOnly: boolean;
  /** uname release. */
  kernel: string;
  /** Which userfaultfd features the kernel grants this process (all false when not available). */
  features: Record<FeatureName, boolean>;
  /**
   * What is missing, when anything the library uses is: userfaultfd itself, kernel-mode faults
   * (user-mode only), or `region.fork` (`features.eventFork` is false without CAP_SYS_PTRACE).
   */
  problem?: string;
  /** The command or setting that fixes each thing `problem` names. */
  fix?: string;
}

// UFFD_FEATURE_* bits (include/uapi/linux/userfaultfd.h).
const FEATURE_BITS: Record<Exclude<FeatureName, 'zeropage'>, number> = {
  wp: 1 << 0,
  eventFork: 1 << 1,
  eventRemap: 1 << 2,
  eventRemove: 1 << 3,
  eventUnmap: 1 << 6,
  sigbus: 1 << 7,
  threadId: 1 << 8,
  poison: 1 << 14,
  wpAsync: 1 << 15,
  move: 1 << 16,
};

const EPERM = 1;
const ENOENT = 2;
const EACCES = 13;
const ENOSYS = 38;

function sysctl(name: string): string | undefined {
  try {
    return readFileSync(`/proc/sys/${name.replace(/\./g, '/')}`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

// Read/write access to /dev/userfaultfd, with commands a stock Debian or Ubuntu has (setfacl
// comes with the acl package, which minimal images lack).
const DEV_ACCESS_HOW =
  '`sudo chmod 666 /dev/userfaultfd` for every user until reboot, or for this user only ' +
  '`sudo setfacl -m u:$(id -un):rw /dev/userfaultfd`, after `sudo apt-get install acl`';

/** How to get full userfaultfd where the kernel's privilege rules grant only user-mode-only (or none). */
export const FIX_PRIVILEGE =
  'run as root (or with CAP_SYS_PTRACE), or allow unprivileged use with `sudo sysctl vm.unprivileged_userfaultfd=1`, ' +
  `or give this user read/write access to /dev/userfaultfd (${DEV_ACCESS_HOW})`;

// The kernel grants UFFD_FEATURE_EVENT_FORK only with CAP_SYS_PTRACE; neither the sysctl nor the
// device node helps.
const FORK_PROBLEM = 'region.fork is unavailable: the kernel grants UFFD_FEATURE_EVENT_FORK only to a process with CAP_SYS_PTRACE';
const FORK_FIX =
  'for region.fork, run as root or give the process CAP_SYS_PTRACE (e.g. `sudo setcap cap_sys_ptrace+ep "$(readlink -f "$(command -v node)")"`, ' +
  'which grants it to every program that node binary runs); everything else works without it';

const FIX_SECCOMP =
  'allow userfaultfd(2) in the seccomp profile that confines this process (`docker run --security-opt seccomp=unconfined`, ' +
  'or a profile that permits it)';
// Root is refused only by a filter or a user namespace, not by a missing privilege: the usual
// fix would not help. The sysctl lets a user namespace in, unless it is 1 already.
const fixConfined = (unpriv: string | undefined): string =>
  `${FIX_SECCOMP}, or pass the device in (\`docker run --device /dev/userfaultfd\`)` +
  (unpriv === '1' ? '' : '; in a user namespace, `sudo sysctl vm.unprivileged_userfaultfd=1` on the host also works');
// A user refused even user-mode-only userfaultfd, which the kernel allows everyone: a filter, which
// neither the sysctl nor root would get past; the device node is not a system call it covers.
const FIX_FILTERED =
  `${FIX_SECCOMP}, or open /dev/userfaultfd instead, which such a filter does not cover: pass it in ` +
  `(\`docker run --device /dev/userfaultfd\`) and give this user read/write access to it (${DEV_ACCESS_HOW})`;

function diagnose(n: NativeProbe): { problem?: string; fix?: string } {
  const forkRefused = n.available && (n.features & FEATURE_BITS.eventFork) === 0;
  if (n.available && !n.userModeOnly) return forkRefused ? { problem: FORK_PROBLEM, fix: FORK_FIX } : {};
  const dev =
    n.devErrno === ENOENT
      ? '/dev/userfaultfd does not exist'
      : n.devErrno === EACCES || n.devErrno === EPERM
        ? '/dev/userfaultfd is not accessible to this user'
        : n.devErrno !== 0
          ? `/dev/userfaultfd failed (${native.errnoName(n.devErrno)})`
          : '';
  if (n.syscallErrno === ENOSYS && n.devErrno === ENOENT) {
    return {
      problem: 'this kernel has no userfaultfd (built without CONFIG_USERFAULTFD)',
      fix: 'use a kernel built with CONFIG_USERFAULTFD=y (Linux 5.7 or newer for write-protect faults)',
    };
  }
  const unpriv = sysctl('vm.unprivileged_userfaultfd');
  const sysctlIs = unpriv !== undefined ? `; vm.unprivileged_userfaultfd is ${unpriv}` : '';
  const confined = n.syscallErrno === EPERM && process.geteuid?.() === 0;
  // The kernel allows UFFD_USER_MODE_ONLY to every user (5.11+): refused too, it was a filter.
  const filtered = !confined && !n.available && n.syscallErrno === EPERM && n.errno === EPERM;
  const sys = confined
    ? 'the userfaultfd(2) system call was refused (EPERM) although this process runs as root: a seccomp filter or a ' +
      'security module blocks it, as container runtimes do, or this is a user namespace without CAP_SYS_PTRACE'
    : filtered
      ? `the userfaultfd(2) system call was refused (EPERM${sysctlIs}), even in the user-mode-only mode the kernel allows ` +
        'every user: a seccomp filter or a security module blocks it, as container runtimes do'
      : n.syscallErrno === EPERM
        ? `the userfaultfd(2) system call was refused (EPERM${sysctlIs})`
        : n.syscallErrno !== 0
          ? `the userfaultfd(2) system call failed (${native.errnoName(n.syscallErrno)})`
          : '';
  const why = [dev, sys].filter(Boolean).join(', and ');
  const fix = confined ? fixConfined(unpriv) : filtered ? FIX_FILTERED : FIX_PRIVILEGE;
  if (n.available && n.userModeOnly) {
    return {
      problem:
        `only user-mode-only userfaultfd is permitted (${why}): faults from inside system calls (read(2)/write(2) through device pages) fail with EFAULT` +
        (forkRefused ? `; and ${FORK_PROBLEM}` : ''),
      fix: forkRefused && fix === FIX_PRIVILEGE ? `${fix}; ${FORK_FIX}` : fix,
    };
  }
  return { problem: `userfaultfd is not permitted for this process: ${why || 'unknown reason'}`, fix };
}

/**
 * What this kernel and process allow: whether userfaultfd can be used at all, through which door,
 * whether only user-mode faults can be served, and which features are there. When something is
 * missing, `problem` says what and `fix` gives the command or setting that fixes it (the same text
 * `uffd-hmm info` prints). Never throws: a failure of the probe itself is reported as
 * `available: false` with its reason.
 *
 * @returns a fresh {@link Probe}; each call asks the kernel again.
 * @example
 * ```ts
 * import { probe } from 'uffd-hmm';
 *
 * const p = probe();
 * if (!p.available) console.error(`${p.problem}\nfix: ${p.fix}`);
 * else if (!p.features.eventFork) console.warn('region.fork() needs CAP_SYS_PTRACE here');
 * ```
 */
export function probe(): Probe {
  let n: NativeProbe;
  try {
    n = native.probe();
  } catch (e) {
    return {
      available: false,
      via: null,
      userModeOnly: false,
      kernel: 'unknown',
      features: Object.fromEntries([...Object.keys(FEATURE_BITS), 'zeropage'].map((k) => [k, false])) as Probe['features'],
      problem: `the native probe failed: ${(e as Error).message}`,
      fix: 'rebuild the addon with `UFFD_HMM_BUILD_FROM_SOURCE=1 npm rebuild uffd-hmm`',
    };
  }
  const features = {} as Record<FeatureName, boolean>;
  for (const [name, bit] of Object.entries(FEATURE_BITS)) features[name as FeatureName] = n.available && (n.features & bit) !== 0;
  // UFFDIO_ZEROPAGE on anonymous memory has no feature bit: it exists wherever userfaultfd does.
  features.zeropage = n.available;
  return { available: n.available, via: n.via, userModeOnly: n.userModeOnly, kernel: n.kernel, features, ...diagnose(n) };
}
