// Errors that teach: docs/ERRORS.md lists every error a user can meet. Here each reachable row is
// triggered for real (real regions, devices, faults and drivers; a child process where the
// condition is another user, a seccomp filter, a resource limit, a hung servicer or a missing
// addon) and checked for its class, code, errno/syscall and documented wording, next step included.
// The catalog must also be complete: every ERR_ code and every system call the sources raise
// errors for is in it, and every row is either reached here or one of the few listed unreachable.
import { closeSync, ftruncateSync, openSync, readFileSync, readdirSync, unlinkSync } from 'node:fs';
import { constants } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { Device, NativeToucher, Region, hugePageSize, mirrorFlags, mirrorCheckExclusive, mirrorExclusive, mirrorMigrate, mirrorRead, mirrorWrite } from 'uffd-hmm';
import { native } from '../dist/native.js';
import { closeAfterEach, describeUffd, runNode, type NodeRunOptions } from './helpers.js';
import { freeHugePages, lockHugePagePool, reserveHugePages } from './hmm-tests/fixtures/hugepages.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const scenarioScript = fileURLToPath(new URL('./fixtures/errors/scenario.mjs', import.meta.url));
const seccompScript = fileURLToPath(new URL('./fixtures/errors/seccomp.py', import.meta.url));
const driver = (name: string) => new URL(`./fixtures/errors/drivers/${name}.mjs`, import.meta.url);

// ---------------------------------------------------------------------------------------------
// The catalog, as docs/ERRORS.md writes it.

interface Row {
  id: string;
  code: string;
  /** TypeError, RangeError, UffdHmmError, SystemError, Error or UsageError: the error's `name`. */
  className: string;
  syscalls: string[];
  /** The message with <placeholders>. */
  message: string;
  reached: string;
}

const COLUMNS = ['id', 'code', 'class', 'syscall', 'when', 'message', 'next step', 'reached'];
const cells = (line: string): string[] => line.trim().replace(/^\||\|$/g, '').split(/(?<!\\)\|/).map((c) => c.trim());
const unquote = (c: string): string => c.replace(/^``(.*)``$/s, '$1').replace(/^`(.*)`$/s, '$1').trim();

function parseCatalog(markdown: string): Row[] {
  const rows: Row[] = [];
  let header: string[] | undefined;
  for (const line of markdown.split('\n')) {
    if (!line.startsWith('|')) {
      header = undefined;
      continue;
    }
    const c = cells(line);
    if (header === undefined) {
      header = c;
      if (header.join('|') !== COLUMNS.join('|')) throw new Error(`docs/ERRORS.md: a table with columns ${header.join(', ')}, not ${COLUMNS.join(', ')}`);
      continue;
    }
    if (c.every((x) => /^-+$/.test(x))) continue;
    if (c.length !== COLUMNS.length) throw new Error(`docs/ERRORS.md: a row with ${c.length} cells, not ${COLUMNS.length}: ${line}`);
    rows.push({
      id: unquote(c[0]),
      code: unquote(c[1]),
      className: /^\w+/.exec(c[2])?.[0] ?? '',
      syscalls: [...c[3].matchAll(/`([^`]+)`/g)].map((m) => m[1]),
      message: unquote(c[5]),
      reached: c[7],
    });
  }
  return rows;
}

/** A message template as a regex: <placeholders> match anything, `\n` is a newline, the rest is literal. */
function templateRegex(template: string): RegExp {
  const literal = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^${template.replace(/\\n/g, '\n').split(/<[^<>]+>/).map(literal).join('[\\s\\S]+?')}$`);
}

const catalog = parseCatalog(readFileSync(path.join(root, 'docs/ERRORS.md'), 'utf8'));
const rowById = new Map(catalog.map((r) => [r.id, r]));

// ---------------------------------------------------------------------------------------------
// What the sources raise: ERR_ codes, and the system calls named in SystemErrors.

function sourceFiles(dir: string, ext: RegExp): string[] {
  return readdirSync(path.join(root, dir), { recursive: true, encoding: 'utf8' })
    .filter((f) => ext.test(f))
    .map((f) => path.join(root, dir, f));
}
const tsSources = sourceFiles('lib', /\.ts$/);
const nativeSources = sourceFiles('native', /\.(cc|h)$/);

function sourceCodes(): Set<string> {
  const codes = new Set<string>();
  for (const f of [...tsSources, ...nativeSources]) {
    for (const m of readFileSync(f, 'utf8').matchAll(/['"`](ERR_[A-Z0-9_]+)['"`]/g)) codes.add(m[1]);
  }
  return codes;
}

/** The top-level arguments of the call whose '(' is at `open`, as source text. */
function callArgs(text: string, open: number): string[] {
  const args: string[] = [];
  let depth = 0;
  let start = open + 1;
  for (let i = open; i < text.length; i++) {
    const ch = text[i];
    if (ch === "'" || ch === '"' || ch === '`') {
      // Skip a string; template literals may nest ${ … } with strings of their own.
      let braces = 0;
      for (i++; i < text.length; i++) {
        if (text[i] === '\\') i++;
        else if (ch === '`' && text[i] === '$' && text[i + 1] === '{') (braces++, i++);
        else if (braces > 0 && text[i] === '}') braces--;
        else if (braces === 0 && text[i] === ch) break;
      }
    } else if ('([{'.includes(ch)) depth++;
    else if (')]}'.includes(ch)) {
      if (--depth === 0) {
        args.push(text.slice(start, i).trim());
        return args;
      }
    } else if (ch === ',' && depth === 1) {
      args.push(text.slice(start, i).trim());
      start = i + 1;
    }
  }
  throw new Error('unbalanced call');
}

/**
 * Every call that builds a SystemError names its system call: as a string literal, or through a
 * parameter of a function that does (`syscall`, a mirror `op`), whose own callers are scanned too.
 */
function sourceSyscalls(): Set<string> {
  const found = new Set<string>();
  const sites: Array<{ files: string[]; call: RegExp; arg: number; name: (literal: string) => string }> = [
    { files: tsSources, call: /(?<![\w.])check\(/g, arg: 1, name: (s) => s },
    { files: tsSources, call: /(?<![\w.])retry\(/g, arg: 2, name: (s) => s },
    { files: tsSources, call: /new UffdSystemError\(/g, arg: 1, name: (s) => s },
    { files: tsSources, call: /(?<![\w.])mirrorError\(/g, arg: 1, name: (op) => `ioctl(HMM_DMIRROR_${op})` },
    { files: tsSources, call: /(?<![\w.])bounce\(/g, arg: 4, name: (op) => `ioctl(HMM_DMIRROR_${op})` },
    { files: tsSources, call: /(?<![\w.])systemRuns\(/g, arg: 3, name: (op) => `ioctl(HMM_DMIRROR_${op})` },
    { files: nativeSources, call: /(?<![\w:])systemError\(/g, arg: 2, name: (s) => s },
  ];
  const passThrough = new Set(['syscall', 'op', '`ioctl(HMM_DMIRROR_${op})`']);
  for (const site of sites) {
    for (const file of site.files) {
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(site.call)) {
        const before = text.slice(Math.max(0, m.index - 40), m.index);
        if (/(function|Napi::Error)\s*$/.test(before)) continue; // the definition itself
        const args = callArgs(text, m.index + m[0].length - 1);
        const a = args[site.arg];
        const where = `${path.relative(root, file)}:${text.slice(0, m.index).split('\n').length}`;
        expect(a, `${where}: a system call name as argument ${site.arg}`).toBeDefined();
        if (passThrough.has(a)) continue;
        const lit = /^(['"])(.*)\1$/s.exec(a);
        expect(lit, `${where}: cannot tell which system call ${a} names; name it with a string literal`).not.toBeNull();
        found.add(site.name(lit![2]));
      }
    }
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// Triggering errors.

interface Seen {
  name?: string;
  code?: string;
  errno?: number;
  syscall?: string;
  message: string;
  cause?: string;
}

const seen = (e: unknown): Seen => {
  const x = e as Error & { code?: string; errno?: number; syscall?: string };
  return { name: x.name, code: x.code, errno: x.errno, syscall: x.syscall, message: x.message, cause: (x.cause as Error | undefined)?.message };
};

/** The error `fn` throws or rejects with; failing when there is none. */
async function caught(fn: () => unknown): Promise<Seen> {
  try {
    await fn();
  } catch (e) {
    return seen(e);
  }
  throw new Error('expected an error, got none');
}

/** The next 'error' event `emitter` emits after `trigger()`, within a deadline. */
async function nextError(emitter: Device | Region, trigger: () => void, ms = 5000): Promise<Seen> {
  let timer: NodeJS.Timeout | undefined;
  const event = new Promise<Seen>((resolve, reject) => {
    emitter.once('error', (e: unknown) => resolve(seen(e)));
    timer = setTimeout(() => reject(new Error(`no 'error' event within ${ms} ms`)), ms);
  });
  try {
    trigger();
    return await event;
  } finally {
    clearTimeout(timer);
    emitter.on('error', () => {}); // later reports of the same bug: heard, not printed as warnings
  }
}

// Wrappers for children: who runs them, and under which filter or limit.
const SYS_USERFAULTFD = 323; // x86-64
const SYS_IOCTL = 16;
const UFFD_USER_MODE_ONLY = 1;
const UFFDIO_REGISTER = 0xc020aa00;
const EPERM = 1;
const EINVAL = 22;
const ENOSYS = 38;
const seccomp = (rules: object[]) => ['python3', seccompScript, JSON.stringify(rules)];
const nobody = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups'];
// A mount namespace whose /dev has no userfaultfd, as in a container; nothing outside changes.
const noDevUserfaultfd = [
  'unshare', '--mount', '--propagation', 'private', 'sh', '-c',
  'set -e; mount -t tmpfs -o mode=755 uffd-hmm-dev /dev; mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5; ' +
    'mknod -m 666 /dev/random c 1 8; mknod -m 666 /dev/urandom c 1 9; exec "$@"',
  'sh',
];
const dataLimit1GiB = ['prlimit', `--data=${2 ** 30}:${2 ** 30}`];

/** Runs fixtures/errors/scenario.mjs <name> and returns the errors it saw. */
async function scenario(name: string, wrapper: string[] = [], opts: NodeRunOptions = {}): Promise<Seen[]> {
  const o = await runNode([scenarioScript, name], { timeoutMs: 15_000, wrapper, ...opts });
  const line = o.stdout.split('\n').find((l) => l.startsWith('{'));
  if (o.timedOut || o.code !== 0 || line === undefined) {
    throw new Error(`scenario ${name}: code=${o.code} signal=${o.signal} timedOut=${o.timedOut} (${o.ms} ms)\n${o.out}`);
  }
  return (JSON.parse(line) as { errors: Seen[] }).errors;
}

const track = closeAfterEach();

/** Runs fn with an unlinked-at-the-end tmpfs file of `pages` pages (its fd and path). */
async function withTmpfsFile<T>(pages: number, fn: (fd: number, file: string) => Promise<T>): Promise<T> {
  const file = `/dev/shm/uffd-hmm-errors-${process.pid}-${Date.now()}`;
  const fd = openSync(file, 'w+', 0o600);
  try {
    ftruncateSync(fd, pages * 4096);
    return await fn(fd, file);
  } finally {
    closeSync(fd);
    unlinkSync(file);
  }
}

/** A two-page region (native servicer: it serves the mirror's kernel-side faults) with page 0 on gpu0. */
function regionWithDevicePage(): { region: Region; device: Device } {
  const region = track(Region.map({ pages: 2, servicer: 'native' }));
  const device = track(new Device({ name: 'gpu0', capacity: 2 }));
  region.bytes[0] = 1;
  region.migrate(0, 1, device);
  return { region, device };
}

/** One function per catalog row: it makes that error happen and returns what the user got. */
const inProcess: Record<string, () => Promise<Seen>> = {
  'arg-type': () => caught(() => Region.map({ pages: '4' as never })),
  'arg-range': () => caught(() => Region.map({ pages: 0 })),
  'arg-value': () => caught(() => Region.map({ pages: 1, servicer: 'gpu' as never })),

  'region-closed': async () => {
    const region = Region.map({ pages: 1, servicer: 'native' });
    await region.close();
    return caught(() => region.entry(0));
  },
  'device-closed': async () => {
    const device = new Device({ name: 'gone', capacity: 1 });
    await device.close();
    return caught(() => device.read(0));
  },
  'device-page-free': () => caught(() => track(new Device({ name: 'gpu0', capacity: 2 })).read(1)),
  'too-many-devices': async () => {
    const devices: Device[] = [];
    try {
      return await caught(() => {
        for (let i = 0; i < 40_000; i++) devices.push(new Device({ capacity: 1 }));
      });
    } finally {
      await Promise.all(devices.map((d) => d.close()));
    }
  },
  'too-many-inline': async () => {
    const regions: Region[] = [];
    try {
      return await caught(() => {
        for (let i = 0; i < 100; i++) regions.push(Region.map({ pages: 1, servicer: 'inline' }));
      });
    } finally {
      await Promise.all(regions.map((r) => r.close()));
    }
  },
  'region-busy': async () => {
    const region = track(Region.map({ pages: 4, servicer: 'native' }));
    const toucher = new NativeToucher(region, { iterations: 0 });
    try {
      return await caught(() => region.remap(8));
    } finally {
      toucher.stop();
      await toucher.finished(5000);
    }
  },
  'toucher-running': async () => {
    const toucher = new NativeToucher(track(Region.map({ pages: 2, servicer: 'native' })), { iterations: 0 });
    try {
      return await caught(() => toucher.counts());
    } finally {
      toucher.stop();
      await toucher.finished(5000);
    }
  },
  'toucher-timeout': async () => {
    const toucher = new NativeToucher(track(Region.map({ pages: 2, servicer: 'native' })), { iterations: 0 });
    try {
      return await caught(() => toucher.finished(20));
    } finally {
      toucher.stop();
      await toucher.finished(5000);
    }
  },
  'smaps-unmapped': async () => {
    const region = track(Region.map({ pages: 2, servicer: 'native' }));
    expect(native.regionUnmap(region.handle, 0, 1)).toBe(0); // other native code unmapping it
    return caught(() => region.smaps());
  },

  'inline-fork': () => caught(() => track(Region.map({ pages: 1, servicer: 'inline' })).fork([])),
  'inline-remap': () => caught(() => track(Region.map({ pages: 1, servicer: 'inline' })).remap(2)),
  'inline-lock': () => caught(() => new NativeToucher(track(Region.map({ pages: 1, servicer: 'inline' })), { iterations: 1, mode: 'lock' })),
  'inline-kernel-access': async () => {
    const region = track(Region.map({ pages: 1, servicer: 'inline' }));
    return caught(() => mirrorRead(region, 0, 1, track(new Device({ capacity: 1 }))));
  },

  'hook-fault': async () => {
    const device = track(new Device({ name: 'buggy', capacity: 2, driver: driver('buggy') }));
    const region = track(Region.map({ pages: 2 }));
    region.bytes[0] = 7;
    region.migrate(0, 1, device);
    // The fault frees the device page, whose pageFree hook (on this thread) throws too: both are
    // reported, in either order (the fault hook's comes from the worker). Heard here: once the
    // device is closed they would be process warnings.
    const reports = new Map<string, Seen>();
    const both = new Promise<void>((resolve) =>
      device.on('error', (x: Error) => {
        reports.set(x.message.includes('pageFree hook') ? 'pageFree' : 'fault', seen(x));
        if (reports.size === 2) resolve();
      }),
    );
    expect(region.bytes[0]).toBe(7); // a real fault, served despite the hook
    const deadline = new Promise<void>((resolve) => setTimeout(resolve, 5000).unref());
    await Promise.race([both, deadline]);
    expect(reports.get('pageFree')?.cause).toMatch(/^pageFree hook bug at pfn \d+$/);
    const e = reports.get('fault');
    expect(e?.cause).toMatch(/^fault hook bug at pfn \d+$/);
    return e!;
  },
  'hook-pagefree': async () => {
    const device = track(new Device({ name: 'buggy', capacity: 2, driver: driver('buggy') }));
    const region = track(Region.map({ pages: 2 }));
    region.migrate(0, 1, device);
    const e = await nextError(device, () => region.discard(0, 1)); // freed on the main thread
    expect(e.cause).toMatch(/^pageFree hook bug at pfn \d+$/);
    expect(device.used).toBe(0);
    return e;
  },
  'driver-load': async () => {
    const device = track(new Device({ name: 'lost', capacity: 2, driver: new URL('./fixtures/broken-at-load-driver.mjs', import.meta.url) }));
    const region = track(Region.map({ pages: 2 }));
    const e = await nextError(device, () => region.migrate(0, 1, device)); // the worker servicer imports it
    expect(e.message).toContain('broken-at-load-driver.mjs of lost');
    return e;
  },
  'driver-missing': async () => {
    const e = await caught(() => new Device({ name: 'nowhere', driver: '/nonexistent/uffd-hmm-driver.mjs' }));
    expect(e.message).toContain('/nonexistent/uffd-hmm-driver.mjs');
    return e;
  },

  'mirror-unreadable': async () => {
    const { region, device } = regionWithDevicePage();
    region.mprotect(1, 1, 'none');
    return caught(() => mirrorRead(region, 0, 2, device));
  },
  'mirror-unfaultable': async () => {
    // Page 0 sits on a device whose driver refuses it; the mirror (another device) must fault it in.
    const refuser = track(new Device({ name: 'refuser', capacity: 1, driver: new URL('./fixtures/refusing-driver.mjs', import.meta.url) }));
    const region = track(Region.map({ pages: 2 }));
    region.bytes[0] = 1;
    region.migrate(0, 1, refuser);
    const e = await caught(() => mirrorRead(region, 0, 1, track(new Device({ name: 'mirror', capacity: 1 }))));
    expect(region.entry(0)).toMatchObject({ kind: 'device', device: refuser }); // a refusal changes nothing
    return e;
  },
  'mirror-unwritable': async () => {
    const { region, device } = regionWithDevicePage();
    region.mprotect(1, 1, 'read');
    return caught(() => mirrorWrite(region, 0, 2, device, new Uint8Array(2 * region.pageSize)));
  },
  'mirror-no-vma': async () => {
    const { region, device } = regionWithDevicePage();
    region.mprotect(1, 1, 'none');
    return caught(() => mirrorMigrate(region, 0, 2, device));
  },
  'mirror-not-on-device': async () => {
    const { region } = regionWithDevicePage(); // page 0 is on gpu0, which MIGRATE_TO_DEV leaves alone
    return caught(() => mirrorMigrate(region, 0, 2, track(new Device({ name: 'gpu1', capacity: 2 }))));
  },
  'mirror-exclusive-access': async () => {
    const { region, device } = regionWithDevicePage();
    region.mprotect(0, 1, 'read');
    return caught(() => mirrorExclusive(region, 0, 1, device));
  },
  'mirror-exclusive-full': async () => {
    const region = track(Region.map({ pages: 2, servicer: 'native' }));
    return caught(() => mirrorExclusive(region, 0, 2, track(new Device({ name: 'small', capacity: 1 }))));
  },
  'mirror-still-exclusive': async () => {
    const { region, device } = regionWithDevicePage();
    mirrorExclusive(region, 0, 1, device);
    return caught(() => mirrorCheckExclusive(region, 0, 1, device));
  },

  'bench-cpu': () => caught(() => native.benchSetAffinity(Int32Array.of(1000))),

  'backing-not-shmem': () => {
    const file = path.join(root, `.errors-catalog-${process.pid}`);
    const fd = openSync(file, 'w+');
    unlinkSync(file);
    ftruncateSync(fd, 4096);
    return caught(() => Region.map({ pages: 1, file: fd })).finally(() => closeSync(fd));
  },
  'backing-not-regular': () => {
    const fd = openSync('/dev/shm', 'r');
    return caught(() => Region.map({ pages: 1, file: fd })).finally(() => closeSync(fd));
  },
  'backing-no-grow': () => withTmpfsFile(2, (fd) => caught(() => track(Region.map({ pages: 2, file: fd })).remap(3))),
  'hugetlb-no-events': async () => {
    const restore = await reserveHugePages(1);
    if (restore === null) throw new Error('no huge page for this case (UFFD_HMM_ALLOW_NO_HUGEPAGES=1 does not skip the catalog)');
    try {
      const r = Region.map({ pages: hugePageSize() / 4096, hugetlb: true });
      try {
        return await caught(() => r.fork([]));
      } finally {
        await r.close();
      }
    } finally {
      restore();
    }
  },
  'no-huge-pages': async () => {
    const unlock = await lockHugePagePool();
    try {
      return await caught(() => Region.map({ pages: (freeHugePages() + 1) * (hugePageSize() / 4096), hugetlb: true }));
    } finally {
      unlock();
    }
  },
  'mirror-flags': () => caught(() => mirrorFlags(track(new Device({ capacity: 1 })), 2)),
  'mirror-hugetlb': async () => {
    const restore = await reserveHugePages(1);
    if (restore === null) throw new Error('no huge page for this case (UFFD_HMM_ALLOW_NO_HUGEPAGES=1 does not skip the catalog)');
    try {
      const pages = hugePageSize() / 4096;
      const r = Region.map({ pages, hugetlb: true });
      try {
        return await caught(() => mirrorMigrate(r, 0, pages, track(new Device({ capacity: pages }))));
      } finally {
        await r.close();
      }
    } finally {
      restore();
    }
  },
  'inline-backing': () => caught(() => Region.map({ pages: 1, servicer: 'inline', shared: true })),
  'file-eacces': () =>
    withTmpfsFile(1, (_, file) => {
      const ro = openSync(file, 'r');
      return caught(() => Region.map({ pages: 1, shared: true, file: ro })).finally(() => closeSync(ro));
    }),
  'remap-split': () => {
    const region = track(Region.map({ pages: 2 }));
    region.mprotect(1, 1, 'read');
    return caught(() => region.remap(4));
  },
  'madv-free': () => caught(() => track(Region.map({ pages: 1, shared: true })).discard(0, 1, { free: true })),
  collapse: () => caught(() => track(Region.map({ pages: 1 })).collapse(0, 1)),
  usage: async () => {
    const { parse } = await import('../dist/bench/args.js');
    const error = await caught(() => parse(['--frobnicate'], {}, 0));
    const cli = await runNode([path.join(root, 'dist/cli.js'), 'bench', '--frobnicate'], { timeoutMs: 10_000 });
    expect({ code: cli.code, timedOut: cli.timedOut }, cli.out).toEqual({ code: 2, timedOut: false });
    expect(cli.stderr).toContain(error.message);
    return { ...error, message: cli.stderr.trimEnd() }; // what the user reads is what the CLI prints
  },
};

/** Rows that need a child process: started together (the slowest first), awaited by their tests. */
const inChild: Record<string, () => Promise<Seen[]>> = {
  'backing-hugetlbfs-file': () =>
    scenario('hugetlbfs-file', [
      'unshare', '--mount', '--propagation', 'private', 'sh', '-c',
      'set -e; mkdir -p /tmp/uffd-hmm-hugetlbfs; mount -t hugetlbfs uffd-hmm-huge /tmp/uffd-hmm-hugetlbfs; exec "$@"',
      'sh',
    ]),
  'page-lock-timeout': () => scenario('page-lock-timeout', [], { timeoutMs: 25_000 }),
  'uffd-not-permitted': () => scenario('map', [...seccomp([{ nr: SYS_USERFAULTFD, errno: EPERM }]), ...nobody]),
  'uffd-confined': () => scenario('map', [...noDevUserfaultfd, ...seccomp([{ nr: SYS_USERFAULTFD, errno: EPERM }])]),
  'uffd-no-kernel': () => scenario('map', [...noDevUserfaultfd, ...seccomp([{ nr: SYS_USERFAULTFD, errno: ENOSYS }])]),
  'user-mode-only': () =>
    scenario('mirror-read', [...seccomp([{ nr: SYS_USERFAULTFD, errno: EPERM, arg: 0, mask: UFFD_USER_MODE_ONLY, eq: 0 }]), ...nobody]),
  'lock-user-mode-only': () =>
    scenario('lock-user-mode-only', [...seccomp([{ nr: SYS_USERFAULTFD, errno: EPERM, arg: 0, mask: UFFD_USER_MODE_ONLY, eq: 0 }]), ...nobody]),
  'fork-no-ptrace': () => scenario('fork', ['setpriv', '--inh-caps=-sys_ptrace', '--bounding-set=-sys_ptrace']),
  'no-wp': () => scenario('map', seccomp([{ nr: SYS_IOCTL, errno: EINVAL, arg: 1, eq: UFFDIO_REGISTER }])),
  'map-enomem': () => scenario('map-enomem', dataLimit1GiB),
  'device-enomem': () => scenario('device-enomem', dataLimit1GiB),
  'mprotect-enomem': () => scenario('mprotect-enomem', dataLimit1GiB),
  emfile: () => scenario('emfile', ['prlimit', '--nofile=64:64']),
  // Not root (root ignores process limits) but with CAP_SYS_PTRACE, which region.fork needs.
  'fork-eagain': () => scenario('fork-eagain', [...nobody, '--inh-caps=+sys_ptrace', '--ambient-caps=+sys_ptrace']),
  'servicer-stalled': () => scenario('servicer-stalled'),
  'servicer-exited': () => scenario('servicer-exited'),
  'servicer-crashed': () => scenario('servicer-crashed'),
  'servicer-start-failed': () => scenario('servicer-start-failed', ['prlimit', '--nofile=120:120']),
  'servicer-start-stalled': () => scenario('servicer-start-stalled', [], { timeoutMs: 25_000 }),
  platform: () => scenario('platform'),
  'addon-load': () => scenario('addon-load'),
};

/** The rows no test can reach on this machine, each with its reason in the catalog. */
const UNREACHABLE = [
  'zap-stalled',
  'shmem-features',
  'backing-fstat',
  'no-sigbus',
  'no-event-remap',
  'heap-timeout',
  'mirror-scratch',
  'uffd-ops',
  'uffd-api',
  'internal-syscalls',
  'bench-syscalls',
  'bench-check',
  'fork-event',
  'fork-gone',
  'toucher-gone',
  'poller-closed',
  'guard-no-thread',
];

// ---------------------------------------------------------------------------------------------

describe('docs/ERRORS.md is complete', () => {
  it('has unique ids, and every row says how it is reached', () => {
    expect(catalog.length).toBeGreaterThan(40);
    expect(new Set(catalog.map((r) => r.id)).size).toBe(catalog.length);
    for (const r of catalog) {
      expect(r.reached, r.id).toMatch(/^(in-process|child: .+|unreachable: .+)/);
      expect(r.code, r.id).not.toBe('');
      expect(r.message, r.id).not.toBe('');
    }
  });

  it('lists every ERR_ code the sources raise, and none they do not', () => {
    const documented = new Set(catalog.map((r) => r.code).filter((c) => c.startsWith('ERR_')));
    expect([...sourceCodes()].sort()).toEqual([...documented].sort());
  });

  it('lists every system call the sources raise SystemErrors for, and none they do not', () => {
    const found = sourceSyscalls();
    expect(found.size).toBeGreaterThan(15); // the scanner still finds the call sites
    const documented = new Set(catalog.flatMap((r) => r.syscalls));
    expect([...found].sort()).toEqual([...documented].sort());
  });

  it('reaches every row here except the few that no test can reach, each with its reason', () => {
    const unreachable = catalog.filter((r) => r.reached.startsWith('unreachable')).map((r) => r.id);
    expect(unreachable.sort()).toEqual([...UNREACHABLE].sort());
    const reachable = catalog.filter((r) => !r.reached.startsWith('unreachable')).map((r) => r.id);
    expect(reachable.sort()).toEqual([...Object.keys(inProcess), ...Object.keys(inChild)].sort());
    for (const id of reachable) expect(rowById.get(id)!.reached.startsWith('child'), id).toBe(id in inChild);
  });
});

function expectAsDocumented(row: Row, e: Seen): void {
  const what = `${row.id}: ${JSON.stringify(e)}`;
  expect(e.name, what).toBe(row.className);
  expect(e.code, what).toBe(row.code);
  if (row.syscalls.length > 0) {
    expect(row.syscalls, what).toContain(e.syscall);
    expect(e.errno, what).toBe(-(constants.errno as Record<string, number>)[row.code]);
  } else {
    expect(e.syscall, what).toBeUndefined();
  }
  expect(e.message, what).toMatch(templateRegex(row.message));
}

describeUffd('every catalogued error is reachable and says what went wrong and the next step', () => {
  const children = new Map<string, Promise<Seen[]>>();
  beforeAll(() => {
    // At most three children at a time on this 2-core machine; the two 10-second ones go first.
    const queue = Object.keys(inChild);
    const next = (): Promise<void> | undefined => {
      const id = queue.shift();
      if (id === undefined) return undefined;
      const run = inChild[id]();
      children.set(id, run);
      run.catch(() => {}); // awaited (and reported) by its test
      return run.then(next, next) as Promise<void>;
    };
    for (let i = 0; i < 3; i++) void next();
  });

  describe.each(Object.keys(inProcess))('%s', (id) => {
    it('is raised as documented', async () => {
      expectAsDocumented(rowById.get(id)!, await inProcess[id]());
    });
  });

  describe.each(Object.keys(inChild))('%s (child process)', (id) => {
    it('is raised as documented', async () => {
      const deadline = Date.now() + 40_000;
      while (!children.has(id)) {
        if (Date.now() > deadline) throw new Error(`the child for ${id} never started`);
        await new Promise((r) => setTimeout(r, 20));
      }
      const errors = await children.get(id)!;
      expect(errors.length, id).toBeGreaterThan(0);
      for (const e of errors) expectAsDocumented(rowById.get(id)!, e);
    });
  });
});

describe('the wording checks themselves', () => {
  it('a template matches only its own message', () => {
    const re = templateRegex('device <name> is closed; create a new Device');
    expect('device gpu0 is closed; create a new Device').toMatch(re);
    expect('device gpu0 is closed').not.toMatch(re); // the next step is required
    expect(templateRegex('a\\nb <x>')).toEqual(/^a\nb [\s\S]+?$/);
  });
});
