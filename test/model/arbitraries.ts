// fast-check arbitraries for the differential model test: operations and whole scenarios on
// small regions (at most 16 pages) and small devices (at most 6 pages each).
import fc from 'fast-check';
import type { ServicerKind } from 'uffd-hmm';
import type { Op, RaceThen, Scenario } from './runner.js';
import type { MChildStep } from './model.js';

// Small regions and devices, so that capacity runs out (partial migration) and pages collide.
const page = fc.integer({ min: 0, max: 15 });
const count = fc.integer({ min: 0, max: 16 });
// Offsets at the page edges are where an off-by-one copy would show; the rest anywhere.
const offset = fc.oneof(fc.constantFrom(0, 1, 4095), fc.integer({ min: 0, max: 4095 }));
const byte = fc.integer({ min: 0, max: 255 });
const dev = fc.integer({ min: 0, max: 1 });

const childStep: fc.Arbitrary<MChildStep> = fc.oneof(
  fc.record({ op: fc.constant('read' as const), page, offset }),
  fc.record({ op: fc.constant('write' as const), page, offset, value: byte }),
  fc.record({ op: fc.constant('checksum' as const), first: page, count }),
);

const migrate = fc.record({ op: fc.constant('migrate' as const), first: page, count, dev, write: fc.constantFrom(undefined, true, false) }, { requiredKeys: ['op', 'first', 'count', 'dev'] });
const migrateToRam = fc.record({ op: fc.constant('migrateToRam' as const), first: page, count });
const discard = fc.record({ op: fc.constant('discard' as const), first: page, count });
const mprotect = fc.record({ op: fc.constant('mprotect' as const), first: page, count, prot: fc.constantFrom('read' as const, 'readwrite' as const, 'readwrite' as const, 'none' as const) });
const fork = fc.record({ op: fc.constant('fork' as const), steps: fc.array(childStep, { maxLength: 3 }) });
const remap = fc.record({ op: fc.constant('remap' as const), pages: fc.integer({ min: 1, max: 16 }) });
const read = fc.record({ op: fc.constant('read' as const), page, offset });
const write = fc.record({ op: fc.constant('write' as const), page, offset, value: byte });
const deviceWrite = fc.record({ op: fc.constant('deviceWrite' as const), page, offset, value: byte });

/** A zap by another thread racing a migration, a remap or a fork. */
const raceThen: fc.Arbitrary<RaceThen> = fc.oneof({ weight: 3, arbitrary: migrate }, migrateToRam, remap, fork);
const race = fc.record({ op: fc.constant('race' as const), first: page, count: fc.integer({ min: 1, max: 3 }), then: raceThen });
/** A discard or migration whose madvise the kernel refuses. */
const refuseZap = fc.record({ op: fc.constant('refuseZap' as const), then: fc.oneof(migrate, discard) });

export const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: migrate },
  { weight: 3, arbitrary: migrateToRam },
  { weight: 5, arbitrary: read },
  { weight: 5, arbitrary: write },
  { weight: 3, arbitrary: deviceWrite },
  { weight: 2, arbitrary: discard },
  { weight: 3, arbitrary: mprotect },
  { weight: 1, arbitrary: fork },
  { weight: 2, arbitrary: remap },
  { weight: 2, arbitrary: race },
  { weight: 1, arbitrary: refuseZap },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('closeDevice' as const), dev }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('openDevice' as const), dev }) },
  { weight: 1, arbitrary: fc.constant({ op: 'closeRegion' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'map' as const }) },
  // Kernel-mode accesses (device 1's driver refuses them), and multi-page copies cut short.
  { weight: 2, arbitrary: fc.record({ op: fc.constant('syscallRead' as const), page, offset }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('migrateToRamCut' as const), first: page, count, cut: fc.integer({ min: 1, max: 4 }) }) },
);

export const scenario = (servicer: ServicerKind): fc.Arbitrary<Scenario> =>
  fc.record({
    servicer: fc.constant(servicer),
    pages: fc.integer({ min: 1, max: 16 }),
    capacities: fc.tuple(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 6 })),
    ops: fc.array(opArb, { minLength: 1, maxLength: 40 }),
  });

/** An operation a slow driver hook holding a page (device 1's) makes wait, time out, or not. */
const heldThen: fc.Arbitrary<Op> = fc.oneof(migrate, migrateToRam, discard, mprotect, fork, remap, read, write, deviceWrite);
const slowHook = fc.record({ op: fc.constant('slowHook' as const), page, then: heldThen });

/**
 * Worker scenarios whose device 1 has a slow fault hook: they start and end with pages on device
 * 1, and some steps (the last one always) fault on one of them in the background while another
 * step runs.
 */
export const slowHookScenario: fc.Arbitrary<Scenario> = fc.record({
  servicer: fc.constant('worker' as ServicerKind),
  pages: fc.integer({ min: 2, max: 8 }),
  capacities: fc.tuple(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 4, max: 8 })),
  ops: fc
    .tuple(fc.array(fc.oneof({ weight: 2, arbitrary: slowHook }, migrate, migrateToRam, discard, mprotect, read, write, remap), { maxLength: 6 }), slowHook)
    .map(([ops, last]): Op[] => [{ op: 'migrate', first: 0, count: 16, dev: 1 }, ...ops, { op: 'migrate', first: 0, count: 16, dev: 1 }, last]),
});

// THP regions: one PMD (512 pages), a device that holds one huge page (device 0) and a small one
// whose driver refuses kernel-mode faults (device 1). Ranges lean to the PMD's halves and whole,
// where splits (partial mprotect, discard, migration) meet huge entries.
const PMD = 512;
const thpPage = fc.oneof(fc.constantFrom(0, 1, 255, 256, 300, 511), fc.integer({ min: 0, max: PMD - 1 }));
const thpRange = fc.oneof(
  fc.constantFrom({ first: 0, count: PMD }, { first: 256, count: 256 }, { first: 0, count: 256 }, { first: 300, count: 1 }),
  fc.record({ first: thpPage, count: fc.integer({ min: 0, max: PMD }) }),
);
const cut = fc.integer({ min: 1, max: 8 });

export const thpOpArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant('fillAll' as const), value: byte }) },
  { weight: 3, arbitrary: fc.constant({ op: 'collapse' as const }) },
  { weight: 5, arbitrary: thpRange.chain((r) => fc.record({ op: fc.constant('migrate' as const), first: fc.constant(r.first), count: fc.constant(r.count), dev: fc.constantFrom(0, 0, 0, 1), write: fc.constantFrom(undefined, true, false) }, { requiredKeys: ['op', 'first', 'count', 'dev'] })) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('read' as const), page: thpPage, offset }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('readCut' as const), page: thpPage, offset, cut }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('write' as const), page: thpPage, offset, value: byte }) },
  { weight: 3, arbitrary: thpRange.chain((r) => fc.record({ op: fc.constant('mprotect' as const), first: fc.constant(r.first), count: fc.constant(r.count), prot: fc.constantFrom('read' as const, 'readwrite' as const, 'readwrite' as const) })) },
  { weight: 1, arbitrary: thpRange.map((r) => ({ op: 'discard' as const, ...r })) },
  { weight: 2, arbitrary: thpRange.map((r) => ({ op: 'migrateToRam' as const, ...r })) },
  { weight: 2, arbitrary: thpRange.chain((r) => fc.record({ op: fc.constant('migrateToRamCut' as const), first: fc.constant(r.first), count: fc.constant(r.count), cut })) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('syscallRead' as const), page: thpPage, offset }) },
);

// Most scenarios start with a THP migrated whole (written, collapsed, migrated to device 0): the
// huge entry is what the rest splits, protects, faults back and cuts short.
const hugeStart: fc.Arbitrary<Op[]> = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(byte, fc.constantFrom(undefined, true, false, false)).map(([value, write]) => [
    { op: 'fillAll' as const, value },
    { op: 'collapse' as const },
    { op: 'migrate' as const, first: 0, count: PMD, dev: 0, ...(write === undefined ? {} : { write }) },
  ]) },
  { weight: 1, arbitrary: fc.constant([] as Op[]) },
);

// A fault right after a split: half the PMD protected differently (two vmas under one huge entry),
// then a touch in either half, plain or with its copy cut short.
const splitThenFault: fc.Arbitrary<Op[]> = fc
  .tuple(fc.constantFrom(0, 256), fc.constantFrom('read' as const, 'readwrite' as const), thpPage, offset, fc.option(cut, { nil: undefined }))
  .map(([first, prot, p, o, c]) => [
    { op: 'mprotect' as const, first, count: 256, prot },
    c === undefined ? { op: 'read' as const, page: p, offset: o } : { op: 'readCut' as const, page: p, offset: o, cut: c },
  ]);

export const thpScenario = (servicer: ServicerKind): fc.Arbitrary<Scenario> =>
  fc.record({
    servicer: fc.constant(servicer),
    pages: fc.constant(PMD),
    capacities: fc.constant<[number, number]>([PMD, 8]),
    thp: fc.constant(true),
    ops: fc
      .tuple(hugeStart, fc.array(fc.oneof({ weight: 6, arbitrary: thpOpArb.map((op) => [op]) }, { weight: 1, arbitrary: splitThenFault }), { minLength: 1, maxLength: 16 }))
      .map(([start, rest]) => [...start, ...rest.flat()]),
  });

// Stall scenarios (worker servicer, a short stall deadline): device 1's driver stalls every CPU
// fault, so a touch of a device-1 page has the watchdog take the region over (a fork during the
// stall, sometimes); its refusals of system calls end with the takeover.
export const stallScenario: fc.Arbitrary<Scenario> = fc.record({
  servicer: fc.constant('worker' as const),
  pages: fc.integer({ min: 1, max: 4 }),
  capacities: fc.tuple(fc.integer({ min: 1, max: 4 }), fc.constant(4)),
  stall: fc.constant(true),
  ops: fc
    .tuple(
      byte,
      fc.record({ page, spawn: fc.boolean() }),
      fc.array(
        fc.oneof(
          { weight: 3, arbitrary: fc.record({ op: fc.constant('migrate' as const), first: page, count, dev: fc.constantFrom(0, 1, 1) }) },
          { weight: 4, arbitrary: fc.record({ op: fc.constant('stallTouch' as const), page, spawn: fc.boolean() }) },
          { weight: 3, arbitrary: fc.record({ op: fc.constant('syscallRead' as const), page, offset }) },
          { weight: 1, arbitrary: fc.record({ op: fc.constant('discard' as const), first: page, count }) },
          { weight: 1, arbitrary: fc.record({ op: fc.constant('migrateToRam' as const), first: page, count }) },
          { weight: 1, arbitrary: fc.record({ op: fc.constant('read' as const), page, offset }) },
          { weight: 1, arbitrary: fc.constant({ op: 'closeRegion' as const }) },
          { weight: 1, arbitrary: fc.constant({ op: 'map' as const }) },
        ),
        { minLength: 1, maxLength: 8 },
      ),
    )
    // Every page on device 1 first, and a touch that stalls (the stuck worker taken over, maybe
    // with a fork during the stall); the rest runs on the guard, or on a new region's new worker.
    .map(([value, first, rest]): Op[] => [
      { op: 'write', page: 0, offset: 0, value },
      { op: 'migrate', first: 0, count: 4, dev: 1 },
      { op: 'syscallRead', page: first.page, offset: 0 },
      { op: 'stallTouch', ...first },
      ...rest,
    ]),
});
