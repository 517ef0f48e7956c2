// The uffd-hmm/vitest subpath: fixtures that always clean up, and the entry and trace matchers,
// used exactly as a user's test would use them.
import { Device } from 'uffd-hmm';
import { expect, test } from 'uffd-hmm/vitest';
import { uffdAvailable } from './helpers.js';

const t = uffdAvailable ? test : test.skip;
const leaked: { device?: Device } = {};

t('hands a test a region and a device, and the matchers see entries and faults', ({ region, device }) => {
  region.bytes[0] = 1;
  expect(region).toBePresent(0, { write: true });
  region.migrate(0, 2, device);
  expect(region).toHaveDeviceEntry(0, { write: true, device });
  expect(region).not.toBePresent(1);
  const trace = region.trace();
  void region.bytes[region.pageSize];
  expect(trace).toHaveFaulted(1, { kind: 'missing', outcome: 'migrated', times: 1 });
  expect(trace).not.toHaveFaulted(0);
  expect(region).toBePresent(1, { write: true });
  expect(() => expect(region).toHaveDeviceEntry(1)).toThrow(/holds a writable CPU page/);
  leaked.device = device;
});

t('closed what the previous test was given, even though nothing closed it there', () => {
  expect(leaked.device?.closed).toBe(true);
});

t('makes as many as a test needs through uffd', ({ uffd }) => {
  const gpu = uffd.device({ capacity: 4, name: 'gpu' });
  const r = uffd.map({ pages: 4, servicer: 'native' });
  r.bytes.fill(3);
  expect(r.migrate(0, 4, gpu)).toBe(4);
  for (let p = 0; p < 4; p++) expect(r).toHaveDeviceEntry(p, { device: gpu, pfn: p });
  expect(r.bytes[3 * r.pageSize]).toBe(3);
});

const afterFailure: { device?: Device } = {};
t.fails('(a test that fails on purpose, holding a device)', ({ device }) => {
  afterFailure.device = device;
  throw new Error('this test fails on purpose');
});

t('still closed the device of the test that failed', () => {
  expect(afterFailure.device?.closed).toBe(true);
});
