// Shrunk counterexamples from the differential model test, kept as explicit cases: each runs the
// scenario against the strict model (no tolerated divergences), or a child that once hung.
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { Device, Region } from 'uffd-hmm';
import { describeUffd, runNode } from '../helpers.js';
import { runScenario, warmWorkerServicer, type Op, type Scenario } from './runner.js';

const forkFirst = fileURLToPath(new URL('./fixtures/fork-first.mjs', import.meta.url));

const scenario = (servicer: Scenario['servicer'], pages: number, capacities: [number, number], ops: Op[]): Scenario => ({
  servicer,
  pages,
  capacities,
  ops,
});

/** Runs a fixture with a hard deadline; a hung child is SIGKILLed (it ignores SIGTERM in fork). */
function child(args: string[], timeoutMs: number) {
  return runNode(args, { timeoutMs });
}

describeUffd('model regressions', () => {
  // Found with the worker servicer: the first fork after the first worker-mode Region.map hung
  // the process for ever (main thread in D state in dup_userfaultfd_complete). glibc's fork()
  // holds every malloc arena lock across clone(); the kernel blocks that clone until the region's
  // EVENT_FORK is read; the worker thread that reads it was still starting up and blocked in
  // malloc on one of those arena locks. SIGTERM cannot end it; only SIGKILL.
  it.each(['region-fork', 'spawnSync'])('a fork (%s) right after the first worker region neither hangs nor fails', async (how) => {
    const res = await child([forkFirst, how], 15_000);
    expect({ timedOut: res.timedOut, code: res.code, signal: res.signal }, res.out).toEqual({ timedOut: false, code: 0, signal: null });
    expect(res.out).toContain('done');
  }, 20_000);

  it.each(['worker', 'native'] as const)(
    '%s: a device page shared with a forked child and faulted back by it counts as one page migrated to RAM',
    async (servicer) => {
      await warmWorkerServicer();
      // The kernel migrates the one device page once and repoints both ptes at the new page;
      // device.stats() must not count it twice (migratedToRam 2 for migratedToDevice 1).
      await runScenario(
        scenario(servicer, 1, [1, 1], [
          { op: 'write', page: 0, offset: 0, value: 1 },
          { op: 'migrate', first: 0, count: 1, dev: 0 },
          { op: 'fork', steps: [{ op: 'read', page: 0, offset: 0 }] },
        ]),
      );
    },
  );

  // A run of device pages that spans two vmas (mprotect split the mapping) came back in one
  // UFFDIO_COPY, which the kernel refuses with ENOENT (the range must lie in one vma):
  // migrateToRam threw and device.close() rejected with the pages still on the device.
  it.each(['worker', 'native', 'inline'] as const)('%s: pages on a device across an mprotect boundary come back (migrateToRam, device.close)', async (servicer) => {
    for (const last of [{ op: 'migrateToRam', first: 0, count: 2 } as Op, { op: 'closeDevice', dev: 0 } as Op]) {
      await runScenario(
        scenario(servicer, 2, [2, 1], [
          { op: 'mprotect', first: 0, count: 1, prot: 'read' },
          { op: 'migrate', first: 0, count: 2, dev: 0, write: false },
          last,
        ]),
      );
    }
  });

  // Device slots are reused, lowest first: with model-dev0 and model-dev1 closed, the new
  // model-dev1 took model-dev0's slot, and region.snapshot(0, 1, <closed model-dev0>) compared slot
  // numbers and called the page LOCAL (0x22) where the model says REMOTE. A closed Device now
  // refuses every call it is handed (ERR_DEVICE_CLOSED), which the runner checks after each step.
  it.each(['worker', 'native', 'inline'] as const)('%s: a closed device never stands for the device that took its slot', async (servicer) => {
    await warmWorkerServicer();
    await runScenario(
      scenario(servicer, 1, [1, 1], [
        { op: 'write', page: 0, offset: 0, value: 1 },
        { op: 'closeDevice', dev: 0 },
        { op: 'closeDevice', dev: 1 },
        { op: 'openDevice', dev: 1 },
        { op: 'migrate', first: 0, count: 1, dev: 1 },
      ]),
    );
  });

  // The cases below once failed only because the model or the comparison was wrong; they stay
  // as regressions of the paths they exercise.
  it.each(['worker', 'native'] as const)('%s: a child that exits leaves untouched device pages to the parent, as read entries', async (servicer) => {
    await warmWorkerServicer();
    await runScenario(
      scenario(servicer, 14, [4, 4], [
        { op: 'write', page: 5, offset: 4085, value: 247 },
        { op: 'read', page: 1, offset: 1 },
        { op: 'migrate', first: 13, count: 1, dev: 0 },
        { op: 'fork', steps: [{ op: 'read', page: 0, offset: 0 }] },
        { op: 'write', page: 13, offset: 9, value: 3 },
      ]),
    );
  });

  it.each(['worker', 'native', 'inline'] as const)('%s: PROT_NONE shows as ERROR in snapshots, whatever the entry', async (servicer) => {
    await runScenario(
      scenario(servicer, 4, [2, 2], [
        { op: 'write', page: 0, offset: 0, value: 9 },
        { op: 'read', page: 1, offset: 0 },
        { op: 'migrate', first: 2, count: 1, dev: 1, write: false },
        { op: 'mprotect', first: 0, count: 4, prot: 'none' },
        { op: 'mprotect', first: 0, count: 4, prot: 'readwrite' },
        { op: 'read', page: 2, offset: 0 },
        { op: 'write', page: 2, offset: 0, value: 1 },
      ]),
    );
  });

  // Found with the worker servicer once its fill woke the faulting thread itself: the thread ran
  // on before the servicer had pushed the freed device page on the free stack, and a migration to
  // the full device right after its fault found no page (real 0, model 1). The kernel frees the
  // device page before the fault returns.
  it.each(['worker', 'native', 'inline'] as const)('%s: the device page a fault freed is free as soon as the fault returns', async (servicer) => {
    await warmWorkerServicer();
    const device = new Device({ capacity: 2 });
    const region = Region.map({ pages: 3, servicer });
    try {
      region.bytes.fill(1);
      for (let i = 0; i < 300; i++) {
        expect(region.migrate(0, 2, device)).toBe(2); // the device is full
        expect(region.bytes[0]).toBe(1); // a fault: page 0 comes back, its device page is freed
        expect(region.migrate(2, 1, device)).toBe(1);
        expect(region.migrateToRam(0, 3)).toBe(2);
      }
      expect(device.used).toBe(0);
    } finally {
      await region.close();
      await device.close();
    }
  });

  // Issue #21, in model form: a huge read entry split by a partial mprotect came back one page
  // whose fallback freed the block's first device page (refcounts differ); a huge entry's copy cut
  // short was rolled back whole (the table said device where the kernel had the pages).
  const thp = (servicer: Scenario['servicer'], ops: Op[]): Scenario => ({ servicer, pages: 512, capacities: [512, 8], thp: true, ops });
  const hugeRead: Op[] = [
    { op: 'fillAll', value: 7 },
    { op: 'collapse' },
    { op: 'migrate', first: 0, count: 512, dev: 0, write: false },
  ];
  it.each(['worker', 'native', 'inline'] as const)('%s: a huge read entry split by mprotect, faulted at page 300', async (servicer) => {
    await warmWorkerServicer();
    await runScenario(thp(servicer, [...hugeRead, { op: 'mprotect', first: 256, count: 256, prot: 'read' }, { op: 'read', page: 300, offset: 5 }, { op: 'migrate', first: 0, count: 1, dev: 1 }]));
  });
  it.each(['worker', 'native', 'inline'] as const)('%s: a huge entry whose copy stops after 2 pages, faulted at page 300 and at page 1', async (servicer) => {
    await warmWorkerServicer();
    await runScenario(thp(servicer, [...hugeRead, { op: 'readCut', page: 300, offset: 5, cut: 2 }, { op: 'write', page: 1, offset: 0, value: 9 }]));
    await runScenario(thp(servicer, [...hugeRead, { op: 'readCut', page: 1, offset: 5, cut: 2 }, { op: 'write', page: 0, offset: 0, value: 9 }]));
  });
  it.each(['worker', 'native', 'inline'] as const)('%s: write(2) from device pages, device 1 refusing (worker)', async (servicer) => {
    await warmWorkerServicer();
    await runScenario(
      scenario(servicer, 3, [2, 2], [
        { op: 'write', page: 0, offset: 0, value: 3 },
        { op: 'migrate', first: 0, count: 1, dev: 1 },
        { op: 'syscallRead', page: 0, offset: 0 },
        { op: 'syscallRead', page: 0, offset: 0 },
        { op: 'migrate', first: 1, count: 1, dev: 0 },
        { op: 'syscallRead', page: 1, offset: 100 },
        { op: 'syscallRead', page: 2, offset: 0 },
        { op: 'read', page: 0, offset: 0 },
      ]),
    );
  });
});
