// uffd-hmm/vitest: fixtures that hand each test fresh devices and regions and always clean them up
// (even when the test fails), and matchers for entries and fault traces.

/**
 * `uffd-hmm/vitest`: vitest's `test` (also as `it`) with fixtures that hand each test fresh
 * devices and regions and always close them, even when the test fails, and `expect` with three
 * matchers for entries and fault traces. Works with vitest 3.2 and later 3.x, 4 and 5 (an optional
 * peer dependency).
 *
 * The matchers, registered on vitest's `expect` when this module is imported:
 * - `expect(region).toHaveDeviceEntry(page, { write?, device?, pfn? })`: the page holds a device
 *   entry (of that kind, on that device, at that pfn). See {@link DeviceEntryExpectation}.
 * - `expect(region).toBePresent(page, { write? })`: the page is a CPU page (writable or
 *   write-protected). See {@link PresentExpectation}.
 * - `expect(trace).toHaveFaulted(page, { kind?, write?, outcome?, times? })`: a
 *   {@link FaultTrace} recorded a fault on the page (of that kind, access and outcome; exactly
 *   `times` of them). See {@link FaultExpectation}.
 *
 * Each works with `.not`, and a failure says what the page holds instead (or which faults it took).
 *
 * @example
 * ```ts
 * import { expect, test } from 'uffd-hmm/vitest';
 *
 * test('the kernel faults my page back once', ({ region, device }) => {
 *   region.bytes[0] = 1;
 *   region.migrate(0, 1, device);
 *   expect(region).toHaveDeviceEntry(0, { write: true, device });
 *   const trace = region.trace();
 *   void region.bytes[0];
 *   expect(trace).toHaveFaulted(0, { kind: 'missing', outcome: 'migrated', times: 1 });
 *   expect(region).toBePresent(0, { write: true });
 * });
 * ```
 *
 * @module uffd-hmm/vitest
 */
import { expect as vitestExpect, test as base } from 'vitest';

import { Device, type DeviceOptions } from './device.js';
import { Region, type MapOptions } from './region.js';
import type { FaultTrace, TraceRecord } from './trace.js';

/**
 * The `uffd` fixture: creates devices and regions for one test and closes them all when it ends
 * (regions first, then devices), whether the test passed or failed.
 */
export interface UffdFixture {
  /** {@link Region.map} with these defaults: 64 pages, the worker servicer. Any option can be overridden. */
  map(options?: Partial<MapOptions>): Region;
  /** `new` {@link Device} with these defaults: 1024 pages. Any option can be overridden. */
  device(options?: DeviceOptions): Device;
}

/** The fixtures {@link test} adds to vitest's test context; destructure the ones a test needs. */
export interface UffdFixtures {
  /** Makes as many regions and devices as the test needs, with any options; all closed after the test. */
  uffd: UffdFixture;
  /** A Device of 1024 pages, closed after the test. */
  device: Device;
  /** A 64-page Region on the worker servicer, closed after the test. */
  region: Region;
}

/**
 * vitest's `test`, extended with the `uffd`, `device` and `region` fixtures ({@link UffdFixtures}).
 * A fixture is created only when the test destructures it, and closed after the test even when
 * it fails. `test.skip`, `test.each`, `test.fails` and the rest work as in vitest.
 *
 * @example
 * ```ts
 * import { expect, test } from 'uffd-hmm/vitest';
 *
 * test('two devices', ({ uffd }) => {
 *   const a = uffd.device({ name: 'a', capacity: 4 });
 *   const b = uffd.device({ name: 'b', capacity: 4 });
 *   const r = uffd.map({ pages: 4, servicer: 'native' });
 *   r.migrate(0, 4, a);
 *   r.migrate(0, 4, b);                       // device to device
 *   expect(r).toHaveDeviceEntry(0, { device: b });
 * });
 * ```
 */
export const test = base.extend<UffdFixtures>({
  // eslint-disable-next-line no-empty-pattern
  uffd: async ({}, use) => {
    const regions: Region[] = [];
    const devices: Device[] = [];
    const fixture: UffdFixture = {
      map: (options) => {
        const r = Region.map({ pages: 64, ...options });
        regions.push(r);
        return r;
      },
      device: (options) => {
        const d = new Device({ capacity: 1024, ...options });
        devices.push(d);
        return d;
      },
    };
    try {
      await use(fixture);
    } finally {
      // Regions first: they drop their device references; then devices evict anything left.
      for (const r of regions.reverse()) await r.close();
      for (const d of devices.reverse()) await d.close();
    }
  },
  device: async ({ uffd }, use) => {
    await use(uffd.device());
  },
  region: async ({ uffd }, use) => {
    await use(uffd.map());
  },
});

/**
 * The three uffd-hmm matchers, as `expect(x)` and `expect(x).not` from `uffd-hmm/vitest` have them.
 * `R` is what a matcher returns. To have them on vitest's own `expect` too, extend the interface
 * vitest documents for custom matchers with it, in a `.d.ts` of your project:
 * `declare module 'vitest' { interface Matchers<R, T> extends UffdMatchers<R> {} }` on vitest 5,
 * `declare module 'vitest' { interface Matchers<T = any> extends UffdMatchers<T> {} }` on vitest
 * 3.2 and 4 (vitest 5 declares `Matchers` with other type parameters, so no one declaration in
 * this package can merge with both).
 */
export interface UffdMatchers<R = void> {
  /** The region's page holds a device entry (optionally of this kind, on this device, at this pfn). */
  toHaveDeviceEntry(page: number, want?: DeviceEntryExpectation): R;
  /** The region's page is a CPU page (optionally writable or write-protected). */
  toBePresent(page: number, want?: PresentExpectation): R;
  /** The trace holds a fault on this page (optionally of this kind/access/outcome, exactly `times`). */
  toHaveFaulted(page: number, want?: FaultExpectation): R;
}

/** What vitest's `expect(actual)` returns, for whichever vitest is installed. */
export type VitestAssertion<T> = ReturnType<typeof vitestExpect<T>>;

/** vitest's assertion on `actual`, with the {@link UffdMatchers}, under `.not` too. */
export type UffdAssertion<T> = VitestAssertion<T> &
  UffdMatchers & {
    /** The negated assertion, with vitest's matchers and the {@link UffdMatchers}. */
    not: VitestAssertion<T> & UffdMatchers;
  };

/** vitest's `expect`, whose assertions also have the {@link UffdMatchers}. */
export type UffdExpect = (<T>(actual: T, message?: string) => UffdAssertion<T>) & typeof vitestExpect;

/**
 * vitest's `expect`, with the matchers registered and typed ({@link UffdMatchers}): it is vitest's
 * own object, so everything else (`expect.soft`, `expect.poll`, `expect.extend`, asymmetric
 * matchers) is as in vitest.
 */
export const expect: UffdExpect = vitestExpect as UffdExpect;

/** The same as {@link test}, under vitest's other name. */
export const it = test;

/**
 * What `expect(region).toHaveDeviceEntry(page, want)` checks besides "the page holds a device
 * entry"; each field left out matches anything.
 */
export interface DeviceEntryExpectation {
  /** A write entry (true) or a read entry (false). */
  write?: boolean;
  /** The device the entry names (compared by identity). */
  device?: Device;
  /** The device page the entry names. */
  pfn?: number;
}

/** What `expect(region).toBePresent(page, want)` checks besides "the page is a CPU page". */
export interface PresentExpectation {
  /** The pte is writable (true) or write-protected / read-only (false). */
  write?: boolean;
}

/**
 * Which faults `expect(trace).toHaveFaulted(page, want)` counts: those on `page` that match every
 * given field. It passes when there is at least one, or exactly `times`.
 */
export interface FaultExpectation {
  /** `'missing'` (no CPU page: a device entry or a hole) or `'wp'` (a write-protect fault). */
  kind?: TraceRecord['kind'];
  /** The access was a write (true) or a read (false). */
  write?: boolean;
  /** How the fault was resolved, e.g. `'migrated'`; see {@link TraceRecord.outcome}. */
  outcome?: TraceRecord['outcome'];
  /** Exactly this many matching faults (default: at least one). */
  times?: number;
}

interface MatcherResult {
  pass: boolean;
  message: () => string;
}

function isRegion(x: unknown): x is Region {
  return x instanceof Region;
}

function describeEntry(region: Region, page: number): string {
  const e = region.entry(page);
  if (e.kind === 'device') return `a ${e.write ? 'write' : 'read'} device entry on ${e.device.name} (pfn ${e.pfn})`;
  if (e.kind === 'present') return `a ${e.write ? 'writable' : 'write-protected'} CPU page`;
  return e.kind === 'none' ? 'no page (never touched or discarded)' : 'a poisoned page';
}

vitestExpect.extend({
  /** expect(region).toHaveDeviceEntry(page, { write, device, pfn }) */
  toHaveDeviceEntry(received: unknown, page: number, want: DeviceEntryExpectation = {}): MatcherResult {
    if (!isRegion(received)) return { pass: false, message: () => 'expected a Region' };
    const e = received.entry(page);
    const pass =
      e.kind === 'device' &&
      (want.write === undefined || e.write === want.write) &&
      (want.device === undefined || e.device === want.device) &&
      (want.pfn === undefined || e.pfn === want.pfn);
    return {
      pass,
      message: () =>
        `expected page ${page} ${pass ? 'not ' : ''}to hold a device entry${want.write === undefined ? '' : want.write ? ' (write)' : ' (read)'}` +
        `${want.device ? ` on ${want.device.name}` : ''}${want.pfn === undefined ? '' : ` at pfn ${want.pfn}`}, ` +
        `but it holds ${describeEntry(received, page)}`,
    };
  },

  /** expect(region).toBePresent(page, { write }) */
  toBePresent(received: unknown, page: number, want: PresentExpectation = {}): MatcherResult {
    if (!isRegion(received)) return { pass: false, message: () => 'expected a Region' };
    const e = received.entry(page);
    const pass = e.kind === 'present' && (want.write === undefined || e.write === want.write);
    return {
      pass,
      message: () =>
        `expected page ${page} ${pass ? 'not ' : ''}to be a ${want.write === undefined ? '' : want.write ? 'writable ' : 'write-protected '}CPU page, ` +
        `but it holds ${describeEntry(received, page)}`,
    };
  },

  /** expect(trace).toHaveFaulted(page, { kind, write, outcome, times }) */
  toHaveFaulted(received: unknown, page: number, want: FaultExpectation = {}): MatcherResult {
    const trace = received as FaultTrace;
    if (typeof trace?.records !== 'function') return { pass: false, message: () => 'expected a FaultTrace (region.trace())' };
    const all = trace.records();
    const hits = all.filter(
      (r) =>
        r.page === page &&
        (want.kind === undefined || r.kind === want.kind) &&
        (want.write === undefined || r.write === want.write) &&
        (want.outcome === undefined || r.outcome === want.outcome),
    );
    const pass = want.times === undefined ? hits.length > 0 : hits.length === want.times;
    const onPage = all.filter((r) => r.page === page).map((r) => `${r.kind}/${r.write ? 'write' : 'read'}/${r.outcome}`);
    return {
      pass,
      message: () =>
        `expected page ${page} ${pass ? 'not ' : ''}to have faulted${want.times === undefined ? '' : ` ${want.times} time(s)`}` +
        `${want.kind ? ` (${want.kind})` : ''}${want.outcome ? ` with outcome ${want.outcome}` : ''}; ` +
        `it faulted ${hits.length} matching time(s); all its faults: [${onPage.join(', ')}]` +
        (trace.overflow > 0 ? ` (the ring overwrote ${trace.overflow} older records)` : ''),
    };
  },
});
