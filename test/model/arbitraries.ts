// fast-check arbitraries for the differential model test: operations and whole scenarios on
// small regions (at most 16 pages) and small devices (at most 6 pages each).
import fc from 'fast-check';
import type { ServicerKind } from 'uffd-hmm';
import type { Op, Scenario } from './runner.js';
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

export const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('migrate' as const), first: page, count, dev, write: fc.constantFrom(undefined, true, false) }, { requiredKeys: ['op', 'first', 'count', 'dev'] }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('migrateToRam' as const), first: page, count }) },
  { weight: 5, arbitrary: fc.record({ op: fc.constant('read' as const), page, offset }) },
  { weight: 5, arbitrary: fc.record({ op: fc.constant('write' as const), page, offset, value: byte }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('deviceWrite' as const), page, offset, value: byte }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('discard' as const), first: page, count }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('mprotect' as const), first: page, count, prot: fc.constantFrom('read' as const, 'readwrite' as const, 'readwrite' as const, 'none' as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('fork' as const), steps: fc.array(childStep, { maxLength: 3 }) }) },
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

