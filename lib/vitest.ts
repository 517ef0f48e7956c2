// uffd-hmm/vitest: fixtures that hand each test fresh devices and regions and always clean them up
// (even when the test fails), and matchers for entries and fault traces.
import { expect, test as base } from 'vitest';

import { Device, type DeviceOptions } from './device.js';
import { Region, type MapOptions } from './region.js';
import type { FaultTrace, TraceRecord } from './trace.js';

/** Creates devices and regions for one test and closes them all when it ends. */
export interface UffdFixture {
  /** Region.map with these defaults: 64 pages, the worker servicer. */
  map(options?: Partial<MapOptions>): Region;
  /** new Device with these defaults: 1024 pages. */
  device(options?: DeviceOptions): Device;
}

export interface UffdFixtures {
  uffd: UffdFixture;
  /** A Device of 1024 pages, closed after the test. */
  device: Device;
  /** A 64-page Region on the worker servicer, closed after the test. */
  region: Region;
}

/** vitest's `test`, extended with the `uffd`, `device` and `region` fixtures. */
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

export { expect };
export const it = test;

export interface DeviceEntryExpectation {
  write?: boolean;
  device?: Device;
  pfn?: number;
}

export interface PresentExpectation {
  write?: boolean;
}

export interface FaultExpectation {
  kind?: TraceRecord['kind'];
  write?: boolean;
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

expect.extend({
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

declare module 'vitest' {
  interface Assertion<T> {
    /** The region's page holds a device entry (optionally of this kind, on this device, at this pfn). */
    toHaveDeviceEntry(page: number, want?: DeviceEntryExpectation): T;
    /** The region's page is a CPU page (optionally writable or write-protected). */
    toBePresent(page: number, want?: PresentExpectation): T;
    /** The trace holds a fault on this page (optionally of this kind/access/outcome, exactly `times`). */
    toHaveFaulted(page: number, want?: FaultExpectation): T;
  }
}
