// Resources: every fd is O_CLOEXEC (an exec'd child holds no userfaultfd), 1,000 map/migrate/close
// cycles leave fds, mappings, threads, RSS and device.used as they were, and exit stays prompt.
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import { expect, it } from 'vitest';
import { Device, Region } from 'uffd-hmm';
import { childScript } from '../scripts/exit-stress.mjs';
import { SERVICERS, checkPages, describeUffd, fillPages, runNode } from './helpers.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const O_CLOEXEC = 0o2000000;

/** The process's fds that point at anonymous inodes (userfaultfd, eventfd, epoll) and their flags. */
function anonFds(): { fd: string; target: string; flags: number }[] {
  const out = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue; // the fd of the directory listing itself, already closed
    }
    if (!target.startsWith('anon_inode:')) continue;
    const m = /^flags:\s+([0-7]+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    out.push({ fd, target, flags: m ? parseInt(m[1], 8) : -1 });
  }
  return out;
}

const fdCount = () => readdirSync('/proc/self/fd').length;
const threadCount = () => readdirSync('/proc/self/task').length;
const mappingCount = () => readFileSync('/proc/self/maps', 'utf8').split('\n').length;
const rssBytes = () => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]) * 1024;

// A full collection before each RSS reading, so only memory that is really held counts.
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

async function settle(): Promise<void> {
  // Closing is asynchronous in places (worker messages, native threads joining): let it finish.
  for (let i = 0; i < 5; i++) {
    await new Promise((r) => setTimeout(r, 20));
    gc();
  }
}

describeUffd('resources', () => {
  it('every userfaultfd, eventfd and epoll fd is O_CLOEXEC; an exec\'d child holds none of them', async () => {
    const regions = SERVICERS.map((servicer) => Region.map({ pages: 8, servicer }));
    const d = new Device({ capacity: 32 });
    try {
      for (const r of regions) {
        fillPages(r, 0, 8, 1);
        r.migrate(0, 8, d);
      }
      const fds = anonFds();
      // One userfaultfd per region at least: the check below can see one when it leaks.
      expect(fds.filter((f) => f.target === 'anon_inode:[userfaultfd]').length).toBeGreaterThanOrEqual(3);
      for (const f of fds) expect(f.flags & O_CLOEXEC, `fd ${f.fd} -> ${f.target}`).toBe(O_CLOEXEC);
      // And as an exec'd child sees it: its own fd table, listed by the shell it became.
      const child = spawnSync('sh', ['-c', 'ls -l /proc/$$/fd'], { encoding: 'utf8', timeout: 10_000 });
      expect(child.status).toBe(0);
      expect(child.stdout).not.toMatch(/anon_inode/);
      expect(child.stdout).not.toMatch(/userfaultfd/);
      for (const r of regions) expect(checkPages(r, 0, 8, 1)).toBeNull();
    } finally {
      for (const r of regions) await r.close();
      await d.close();
    }
  });

  it('1,000 map/migrate/fault/close cycles leave fds, threads, mappings, RSS and device.used where they started', async () => {
    const d = new Device({ capacity: 64 });
    const cycle = async (i: number) => {
      const r = Region.map({ pages: 16, servicer: SERVICERS[i % 3] });
      r.bytes.fill(i & 0xff);
      expect(r.migrate(0, 16, d)).toBe(16);
      // Half come back by faults, half stay on the device until close() frees them.
      for (let p = 0; p < 8; p++) expect(r.bytes[p * r.pageSize + 1]).toBe(i & 0xff);
      await r.close();
    };
    // Warm up first: the worker servicer, code caches and allocator pools are not leaks.
    for (let i = 0; i < 100; i++) await cycle(i);
    await settle();
    const before = { fds: fdCount(), threads: threadCount(), mappings: mappingCount(), rss: rssBytes(), used: d.used };
    for (let i = 0; i < 1000; i++) await cycle(i);
    await settle();
    const after = { fds: fdCount(), threads: threadCount(), mappings: mappingCount(), rss: rssBytes(), used: d.used };
    expect(after.fds).toBe(before.fds);
    expect(after.threads).toBe(before.threads);
    expect(after.used).toBe(0);
    expect(before.used).toBe(0);
    // V8 may add or drop a few heap segments; a leaked region would add 1,000 mappings.
    expect(Math.abs(after.mappings - before.mappings)).toBeLessThan(50);
    // 1,000 cycles each touch 64 KiB of region memory and 32 KiB of device memory: a leak of either
    // would add >= 32 MiB. 16 MiB leaves room for the JS heap and malloc arenas breathing.
    expect(after.rss - before.rss).toBeLessThan(16 << 20);
    expect(d.stats().freed).toBe(d.stats().migratedToDevice);
    await d.close();
  }, 60_000);

  it.each(SERVICERS)(
    'exits promptly with code 0 with pages on a device and native threads faulting (%s servicer)',
    async (servicer) => {
      // The child starts touchers that fault forever on device pages, then ends its script: the
      // event loop empties and the process must exit, not wait on servicers or blocked threads.
      // (scripts/exit-stress.mjs runs the same child hundreds of times.)
      const code = childScript(servicer, 200, servicer === 'native' ? 'exit' : 'end');
      const started = Date.now();
      const res = await runNode(['--input-type=module', '-e', code], { cwd: repo, timeoutMs: 15_000 });
      const ms = Date.now() - started;
      expect({ code: res.code, signal: res.signal, timedOut: res.timedOut }, res.out).toEqual({ code: 0, signal: null, timedOut: false });
      const m = /faults (\d+) on device (\d+)/.exec(res.out);
      expect(m, res.out).not.toBeNull();
      // Faults were really in flight: many served, and pages still on the device at exit.
      expect(Number(m![1])).toBeGreaterThan(100);
      expect(Number(m![2])).toBeGreaterThan(0);
      // Startup is ~100 ms, the script 200 ms: "promptly" leaves room for a loaded machine only.
      expect(ms).toBeLessThan(5_000);
    },
  );
});
