// Privileges: as user nobody, with vm.unprivileged_userfaultfd 0/1, /dev/userfaultfd 0600/0666/absent
// and userfaultfd(2) refused: probe() and Region.map name what is missing and the fix.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeUffd } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/priv-probe.mjs', import.meta.url));
const SYSCTL = '/proc/sys/vm/unprivileged_userfaultfd';

// Each child runs in its own mount namespace, where a fresh scratch directory is a private tmpfs
// (its TMPDIR: the child writes only there, never into the repository; a tmpfs over all of /tmp
// would hide a checkout that lives under /tmp) and /dev/userfaultfd is replaced by a fresh device
// node of the wanted mode, or /dev by a minimal tmpfs without it. That changes nothing outside the child: a
// chmod of the real node would also change what every other test process on the machine sees.
// Only the sysctl is global; it is set just around the child that needs it and always restored.
const NAMESPACE_SETUP = `
set -e
mount -t tmpfs -o mode=1777 uffd-hmm-priv "$SCRATCH"
if [ "$DEV_MODE" = absent ]; then
  mount -t tmpfs -o mode=755 uffd-hmm-dev /dev
  mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5
  mknod -m 666 /dev/random c 1 8; mknod -m 666 /dev/urandom c 1 9
else
  mknod -m "$DEV_MODE" "$SCRATCH/.userfaultfd" c "$DEV_MAJOR" "$DEV_MINOR"
  mount --bind "$SCRATCH/.userfaultfd" /dev/userfaultfd
fi
exec "$@"
`;

// What container runtimes do (Docker's default seccomp profile refuses userfaultfd(2)): a seccomp
// filter that fails syscall 323 (x86-64 userfaultfd) with the given errno, then exec. There is no
// setting short of this: the kernel always allows UFFD_USER_MODE_ONLY to unprivileged users.
const SECCOMP = `
import ctypes, os, struct, sys
err = int(sys.argv[1])
filt = [(0x20, 0, 0, 4), (0x15, 0, 3, 0xC000003E), (0x20, 0, 0, 0), (0x15, 0, 1, 323),
        (0x06, 0, 0, 0x00050000 | err), (0x06, 0, 0, 0x7FFF0000)]
code = ctypes.create_string_buffer(b''.join(struct.pack('HBBI', *f) for f in filt))
prog = ctypes.create_string_buffer(struct.pack('HxxxxxxQ', len(filt), ctypes.addressof(code)))
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.addressof(prog), 0, 0) != 0:
    sys.exit('seccomp: ' + os.strerror(ctypes.get_errno()))
os.execvp(sys.argv[2], sys.argv[2:])
`;

interface Report {
  uid: number;
  probe: { available: boolean; via: string | null; userModeOnly: boolean; features: { eventFork: boolean }; problem?: string; fix?: string };
  map: { ok: boolean; userModeOnly?: boolean; name?: string; code?: string; message?: string };
  kernelWrite?: { ok: boolean; code?: string; bytes?: number; landed?: boolean };
  afterKernelWrite?: { page0: string; used: number };
  userRead?: number;
  userWrite?: number;
  afterUser?: { page0: string; page1: string; used: number };
  fork?: { ok: boolean; code?: string; exitCode?: number | null };
}

interface Setting {
  sysctl: 0 | 1;
  dev: '600' | '666' | 'absent';
  /** errno for a seccomp filter on userfaultfd(2): 1 EPERM, 38 ENOSYS. */
  seccomp?: number;
}

let original = '';
const setSysctl = (v: string) => writeFileSync(SYSCTL, `${v}\n`);

interface Outcome {
  code: number | null;
  signal: string | null;
  out: string;
  err: string;
  timedOut: boolean;
}

// Runs `command` (by default the probe fixture) as nobody under the setting.
async function runAsNobodyRaw(s: Setting, command: string[] = [fixture, 'native']): Promise<Outcome> {
  // new_encode_dev(): minor 257 (userfaultfd's) does not fit the old 8-bit field.
  const rdev = statSync('/dev/userfaultfd').rdev;
  const major = (rdev >> 8) & 0xfff;
  const minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
  const scratch = mkdtempSync(join(tmpdir(), 'uffd-hmm-priv-'));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DEV_MODE: s.dev,
    DEV_MAJOR: String(major),
    DEV_MINOR: String(minor),
    SCRATCH: scratch,
    TMPDIR: scratch,
  };
  delete env.NODE_OPTIONS;
  const argv = [
    'unshare', '--mount', '--propagation', 'private', 'sh', '-c', NAMESPACE_SETUP, 'setup',
    ...(s.seccomp ? ['python3', '-c', SECCOMP, String(s.seccomp)] : []),
    'setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, ...command,
  ];
  setSysctl(String(s.sysctl));
  try {
    return await new Promise<Outcome>((resolve, reject) => {
      const c = spawn(argv[0], argv.slice(1), { env, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      let timedOut = false;
      c.stdout.setEncoding('utf8').on('data', (x: string) => (out += x));
      c.stderr.setEncoding('utf8').on('data', (x: string) => (err += x));
      const timer = setTimeout(() => {
        timedOut = true;
        c.kill('SIGKILL');
      }, 20_000);
      c.on('error', reject);
      c.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, out, err, timedOut });
      });
    });
  } finally {
    setSysctl(original);
    rmSync(scratch, { recursive: true, force: true });
  }
}

async function runAsNobody(s: Setting): Promise<Report> {
  const o = await runAsNobodyRaw(s);
  const what = `${JSON.stringify(s)}: code=${o.code} signal=${o.signal} timedOut=${o.timedOut}\n${o.out}\n${o.err}`;
  expect({ code: o.code, signal: o.signal, timedOut: o.timedOut }, what).toEqual({ code: 0, signal: null, timedOut: false });
  const r = JSON.parse(o.out.trim().split('\n').pop()!) as Report;
  fixFitsProblem(r.probe);
  // probe() reports what this process can use: region.fork works exactly when it says eventFork.
  if (r.fork) expect(r.fork.ok, JSON.stringify(r.fork)).toBe(r.probe.features.eventFork);
  return r;
}

// Every fix answers the problem above it, and never proposes what is already so.
function fixFitsProblem(p: Report['probe']): void {
  expect(p.problem === undefined, 'a problem comes with a fix').toBe(p.fix === undefined);
  if (p.problem === undefined || p.fix === undefined) return;
  if (p.problem.includes('region.fork')) expect(p.fix).toContain('CAP_SYS_PTRACE');
  if (p.problem.includes('vm.unprivileged_userfaultfd is 1')) expect(p.fix).not.toContain('unprivileged_userfaultfd=1');
  if (!/EFAULT|not permitted|no userfaultfd/.test(p.problem)) {
    expect(p.fix).not.toContain('unprivileged_userfaultfd');
    expect(p.fix).not.toContain('/dev/userfaultfd');
  }
  // The ACL tool is not installed everywhere: a fix that uses it says where it comes from.
  if (p.fix.includes('setfacl')) expect(p.fix).toContain('apt-get install acl');
}

const FORK_REFUSED = 'region.fork is unavailable: the kernel grants UFFD_FEATURE_EVENT_FORK only to a process with CAP_SYS_PTRACE';

// Served as the kernel serves it: CPU touches always work; write(2) from a device-resident page
// works only with a full userfaultfd.
const userAccessWorks = {
  userRead: 0xa5,
  userWrite: 0x11,
  afterUser: { page0: 'present', page1: 'present', used: 0 },
};

describeUffd.sequential('privileges (as user nobody)', () => {
  beforeAll(() => {
    original = readFileSync(SYSCTL, 'utf8').trim();
  });
  afterAll(() => {
    setSysctl(original);
    expect(readFileSync(SYSCTL, 'utf8').trim()).toBe(original);
  });

  it('sysctl 0, /dev/userfaultfd root-only: user-mode-only; the problem and the fix are named; write(2) fails with EFAULT', async () => {
    const r = await runAsNobody({ sysctl: 0, dev: '600' });
    expect(r.uid).toBe(65534);
    expect(r.probe).toMatchObject({ available: true, via: 'syscall', userModeOnly: true });
    expect(r.probe.problem).toContain('only user-mode-only userfaultfd is permitted');
    expect(r.probe.problem).toContain('/dev/userfaultfd is not accessible to this user');
    expect(r.probe.problem).toContain('vm.unprivileged_userfaultfd is 0');
    expect(r.probe.problem).toContain('EFAULT');
    expect(r.probe.fix).toContain('sysctl vm.unprivileged_userfaultfd=1');
    expect(r.probe.fix).toContain('/dev/userfaultfd');
    expect(r.probe.features.eventFork).toBe(false);
    expect(r.probe.problem).toContain(FORK_REFUSED);
    expect(r.fork).toEqual({ ok: false, code: 'ERR_UFFD_FEATURE_MISSING' });
    expect(r.map).toEqual({ ok: true, userModeOnly: true });
    expect(r.kernelWrite).toEqual({ ok: false, code: 'EFAULT' });
    // The refused kernel access never reached a servicer: the page is still on the device.
    expect(r.afterKernelWrite).toEqual({ page0: 'device', used: 2 });
    expect(r).toMatchObject(userAccessWorks);
  });

  it('sysctl 1: the full userfaultfd(2); write(2) from a device page is served; region.fork is not, and probe() says so', async () => {
    const r = await runAsNobody({ sysctl: 1, dev: '600' });
    expect(r.probe).toMatchObject({ available: true, via: 'syscall', userModeOnly: false, features: { eventFork: false } });
    expect(r.probe.problem).toBe(FORK_REFUSED);
    expect(r.probe.fix).toMatch(/^for region\.fork, run as root or give the process CAP_SYS_PTRACE/);
    expect(r.fork).toEqual({ ok: false, code: 'ERR_UFFD_FEATURE_MISSING' });
    expect(r.map).toEqual({ ok: true, userModeOnly: false });
    expect(r.kernelWrite).toEqual({ ok: true, bytes: 64, landed: true });
    expect(r.afterKernelWrite).toEqual({ page0: 'present', used: 1 });
    expect(r).toMatchObject(userAccessWorks);
  });

  it.each([0, 1] as const)('sysctl %i, /dev/userfaultfd 0666: opened through the device node; write(2) is served', async (sysctl) => {
    const r = await runAsNobody({ sysctl, dev: '666' });
    expect(r.probe).toMatchObject({ available: true, via: 'dev-userfaultfd', userModeOnly: false, features: { eventFork: false } });
    expect(r.probe.problem).toBe(FORK_REFUSED);
    expect(r.fork).toEqual({ ok: false, code: 'ERR_UFFD_FEATURE_MISSING' });
    expect(r.map).toEqual({ ok: true, userModeOnly: false });
    expect(r.kernelWrite).toEqual({ ok: true, bytes: 64, landed: true });
    expect(r).toMatchObject(userAccessWorks);
  });

  it.each([0, 1] as const)(
    'userfaultfd(2) refused outright by a filter (seccomp EPERM, as in a container), sysctl %i: unavailable; the fix loosens the filter or opens the device, never the sysctl',
    async (sysctl) => {
      const r = await runAsNobody({ sysctl, dev: '600', seccomp: 1 });
      expect(r.probe).toMatchObject({ available: false, via: null, userModeOnly: false });
      expect(r.probe.problem).toBe(
        'userfaultfd is not permitted for this process: /dev/userfaultfd is not accessible to this user, and the userfaultfd(2) ' +
          `system call was refused (EPERM; vm.unprivileged_userfaultfd is ${sysctl}), even in the user-mode-only mode the kernel ` +
          'allows every user: a seccomp filter or a security module blocks it, as container runtimes do',
      );
      expect(r.probe.fix).toMatch(/^allow userfaultfd\(2\) in the seccomp profile/);
      expect(r.probe.fix).toContain('sudo chmod 666 /dev/userfaultfd');
      expect(r.probe.fix).not.toContain('sysctl');
      expect(r.map).toMatchObject({ ok: false, name: 'UffdHmmError', code: 'ERR_UFFD_UNAVAILABLE' });
      // The problem already names userfaultfd: the message says it once.
      expect(r.map.message).toBe(`${r.probe.problem}. Fix: ${r.probe.fix}.`);
    },
  );

  it('`uffd-hmm info` as nobody: problem and fix lines under each, exit 1 only when userfaultfd is not available', async () => {
    const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
    const refused = await runAsNobodyRaw({ sysctl: 1, dev: '600', seccomp: 1 }, [cli, 'info']);
    expect({ code: refused.code, timedOut: refused.timedOut }, refused.err).toEqual({ code: 1, timedOut: false });
    expect(refused.out).toMatch(/^userfaultfd\s+NOT available$/m);
    expect(refused.out).toMatch(/^problem\s+userfaultfd is not permitted for this process: .*vm\.unprivileged_userfaultfd is 1\), even in the user-mode-only mode/m);
    expect(refused.out).toMatch(/^fix\s+allow userfaultfd\(2\) in the seccomp profile/m);
    const noFork = await runAsNobodyRaw({ sysctl: 1, dev: '600' }, [cli, 'info']);
    expect({ code: noFork.code, timedOut: noFork.timedOut }, noFork.err).toEqual({ code: 0, timedOut: false });
    expect(noFork.out).toMatch(/^\s+eventFork\s+no$/m);
    expect(noFork.out).toContain(`problem        ${FORK_REFUSED}\n`);
    expect(noFork.out).toMatch(/^fix\s+for region\.fork, run as root or give the process CAP_SYS_PTRACE/m);
  });

  it('no userfaultfd at all (no /dev/userfaultfd, userfaultfd(2) is ENOSYS): names the missing kernel option', async () => {
    const r = await runAsNobody({ sysctl: 0, dev: 'absent', seccomp: 38 });
    expect(r.probe).toMatchObject({ available: false, via: null });
    expect(r.probe.problem).toBe('this kernel has no userfaultfd (built without CONFIG_USERFAULTFD)');
    expect(r.probe.fix).toContain('CONFIG_USERFAULTFD=y');
    expect(r.map).toMatchObject({ ok: false, code: 'ERR_UFFD_UNAVAILABLE' });
    expect(r.map.message).toContain('CONFIG_USERFAULTFD=y');
  });
});
