// S10 kernel-mode access (get_user_pages, hmm_gup_test): write(2) from device-resident pages and
// read(2) into them fault inside the kernel and are served; with user-mode-only userfaultfd they fail with EFAULT.
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { Device, Region, type RegionStats } from 'uffd-hmm';
import { closeAfterEach, describeUffd, fillPages, pattern } from './helpers.js';
import { describeOutcome, jsonLines, runChild } from './fixtures/semantics/run-child.js';

const userModeOnlyChild = fileURLToPath(new URL('./fixtures/semantics/kernel-access-user-mode-only.mjs', import.meta.url));

const track = closeAfterEach();
/** A fresh temporary directory, removed after the test. */
function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'uffd-hmm-kernel-access-'));
  track({ close: async () => rmSync(dir, { recursive: true, force: true }) });
  return dir;
}

const delta = (a: RegionStats, b: RegionStats) => ({
  faults: b.faults - a.faults,
  kernelFaults: b.kernelFaults - a.kernelFaults,
  writeFaults: b.writeFaults - a.writeFaults,
  wpFaults: b.wpFaults - a.wpFaults,
  migratedBack: b.migratedBack - a.migratedBack,
});

// The kernel's faults reach a servicer only through a full (not user-mode-only) userfaultfd, served
// off the faulting thread: the worker and native servicers. (The inline servicer's EFAULT is
// covered by test/inline.test.ts.)
describeUffd.each(['worker', 'native'] as const)('system calls through device pages with the %s servicer', (servicer) => {
  it('write(2) from device-resident pages writes their bytes to the file', () => {
    // countKernelFaults: the servicer tells faults inside system calls from the CPU's own.
    const r = track(Region.map({ pages: 8, servicer, countKernelFaults: true }));
    expect(r.userModeOnly).toBe(false);
    const d = track(new Device({ capacity: 8 }));
    const ps = r.pageSize;
    fillPages(r, 0, 8, 1);
    r.migrate(1, 3, d); // write entries
    r.migrate(4, 3, d, { write: false }); // read entries
    expect(d.used).toBe(6);
    const s0 = r.stats();
    const file = path.join(tempDir(), 'out');
    const fd = openSync(file, 'w');
    // From the middle of page 1 to the middle of page 6: every device page is read by the kernel.
    const n = writeSync(fd, r.bytes, ps + 100, 5 * ps);
    closeSync(fd);
    expect(n).toBe(5 * ps);

    const got = readFileSync(file);
    expect(got.length).toBe(5 * ps);
    for (let i = 0; i < got.length; i++) {
      const at = ps + 100 + i;
      if (got[i] !== pattern(Math.floor(at / ps), at % ps, 1)) {
        expect.fail(`file byte ${i} (page ${Math.floor(at / ps)} offset ${at % ps}): ${got[i]} != ${pattern(Math.floor(at / ps), at % ps, 1)}`);
      }
    }
    // copy_from_user read them: one read fault per page, each migrated back as its entry says.
    expect(delta(s0, r.stats())).toEqual({ faults: 6, kernelFaults: 6, writeFaults: 0, wpFaults: 0, migratedBack: 6 });
    for (let p = 1; p <= 3; p++) expect(r.entry(p)).toEqual({ kind: 'present', write: true });
    for (let p = 4; p <= 6; p++) expect(r.entry(p)).toEqual({ kind: 'present', write: false });
    expect(d.used).toBe(0);
    expect(d.stats()).toMatchObject({ faults: 6, migratedToRam: 6, freed: 6 });
  });

  it('read(2) into device-resident pages lands the file bytes; read entries take their write-protect fault', () => {
    const r = track(Region.map({ pages: 4, servicer, countKernelFaults: true }));
    const d = track(new Device({ capacity: 4 }));
    const ps = r.pageSize;
    fillPages(r, 0, 4, 2);
    r.migrate(0, 2, d); // pages 0-1: write entries
    r.migrate(2, 2, d, { write: false }); // pages 2-3: read entries
    const data = Buffer.alloc(2 * ps + 100);
    for (let i = 0; i < data.length; i++) data[i] = (i * 13 + 5) & 0xff;
    const file = path.join(tempDir(), 'in');
    writeFileSync(file, data);
    const s0 = r.stats();
    const fd = openSync(file, 'r');
    // Lands on the last 50 bytes of page 0, all of pages 1 and 2, and the first 50 bytes of page 3.
    const n = readSync(fd, r.bytes, ps - 50, data.length, 0);
    closeSync(fd);
    expect(n).toBe(data.length);

    expect(Buffer.from(r.bytes.subarray(ps - 50, ps - 50 + n)).equals(data)).toBe(true);
    // The bytes around the read came from the device pages, intact.
    expect(r.bytes[ps - 51]).toBe(pattern(0, ps - 51, 2));
    expect(r.bytes[0]).toBe(pattern(0, 0, 2));
    expect(r.bytes[3 * ps + 50]).toBe(pattern(3, 50, 2));
    expect(r.bytes[4 * ps - 1]).toBe(pattern(3, ps - 1, 2));
    // copy_to_user wrote them: one write fault per write entry, two (missing, then write-protect)
    // per read entry, exactly as a CPU write would — all of them inside the kernel.
    expect(delta(s0, r.stats())).toEqual({ faults: 6, kernelFaults: 6, writeFaults: 6, wpFaults: 2, migratedBack: 4 });
    for (let p = 0; p < 4; p++) expect(r.entry(p)).toEqual({ kind: 'present', write: true });
    expect(d.used).toBe(0);
    // The same page touched by the CPU is a user-mode fault: counted, but not as a kernel one.
    r.migrate(0, 1, d);
    const s1 = r.stats();
    r.bytes[0] = 0x77; // a plain store: one write fault
    expect(delta(s1, r.stats())).toEqual({ faults: 1, kernelFaults: 0, writeFaults: 1, wpFaults: 0, migratedBack: 1 });
  });
});

describeUffd('kernel-mode faults seen by a driver', () => {
  it("the fault hook's ctx.kernelMode is true inside write(2), false for the CPU's own access", async () => {
    const CHANNEL = 'uffd-hmm-semantics-recording-driver'; // as in fixtures/semantics/drivers/recording.mjs
    const calls: { hook: string; deviceName: string; page: number; write: boolean; kernelMode: boolean }[] = [];
    const channel = new BroadcastChannel(CHANNEL);
    channel.onmessage = (e) => calls.push((e as MessageEvent<(typeof calls)[number]>).data);
    track({ close: async () => channel.close() });
    const driver = new URL('./fixtures/semantics/drivers/recording.mjs', import.meta.url);
    const r = track(Region.map({ pages: 2, countKernelFaults: true })); // hooks run in the worker servicer
    const d = track(new Device({ name: 'kmode', capacity: 2, driver }));
    fillPages(r, 0, 2);
    r.migrate(0, 2, d);
    const fd = openSync(path.join(tempDir(), 'out'), 'w');
    expect(writeSync(fd, r.bytes, 0, 64)).toBe(64); // page 0, from inside the kernel
    closeSync(fd);
    void r.bytes[r.pageSize]; // page 1, by the CPU
    const deadline = Date.now() + 5_000;
    const faults = () => calls.filter((c) => c.hook === 'fault' && c.deviceName === 'kmode');
    while (faults().length < 2) {
      if (Date.now() > deadline) expect.fail(`timed out waiting for two fault hook calls, got ${JSON.stringify(faults())}`);
      await new Promise((res) => setTimeout(res, 5));
    }
    expect(faults().map(({ page, write, kernelMode }) => ({ page, write, kernelMode }))).toEqual([
      { page: 0, write: false, kernelMode: true },
      { page: 1, write: false, kernelMode: false },
    ]);
  });
});

describeUffd('system calls through device pages in user-mode-only mode', () => {
  // /dev/userfaultfd is root-only and vm.unprivileged_userfaultfd is 0 here, so user nobody gets
  // a UFFD_USER_MODE_ONLY userfaultfd: the kernel's own faults on device pages cannot be served.
  for (const servicer of ['worker', 'native'] as const) {
    it.concurrent(`as user nobody (${servicer} servicer): CPU touches work, write(2)/read(2) on device pages fail with EFAULT`, async ({ expect }) => {
      const o = await runChild(userModeOnlyChild, [servicer], {
        wrapper: ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups'],
        cwd: tmpdir(), // nothing the child does may touch the repository
      });
      expect(o.timedOut, describeOutcome(o)).toBe(false);
      const [res] = jsonLines(o.stdout);
      if (o.code === 3) expect.fail(`environment differs from the one this test needs (user-mode-only userfaultfd for nobody): ${o.stdout}`);
      expect({ code: o.code, signal: o.signal }, describeOutcome(o)).toEqual({ code: 0, signal: null });
      expect(res).toEqual({
        uid: 65534,
        userModeOnly: true,
        problemMentionsEFAULT: true,
        writeFromDevice: 'EFAULT',
        readIntoDevice: 'EFAULT',
        // The failed system calls never reached the servicer: the pages are still on the device.
        afterSyscalls: { entries: ['device', 'device'], used: 2, faults: 0 },
        cpuRead: 0x11,
        afterCpu: { entries: ['present', 'present'], used: 0, faults: 2 },
        writeFromRam: 16,
        readIntoRam: 16,
        landed: true,
      });
    });
  }
});
