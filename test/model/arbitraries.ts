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
