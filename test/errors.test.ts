// Bad input at every public entry point gets a TypeError/RangeError with a code (or a coded
// Error for closed objects), never a crash, a hang or a silent success.
import { afterAll, expect, it } from 'vitest';
import { Device, Region, NativeToucher } from 'uffd-hmm';
import { describeUffd } from './helpers.js';

const TYPE = expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
const RANGE = expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });

describeUffd('bad input', () => {
  const region = Region.map({ pages: 4 });
  const other = Region.map({ pages: 2, servicer: 'native' });
  const device = new Device({ capacity: 4 });
  afterAll(async () => {
    await region.close();
    await other.close();
    await device.close();
  });

  it('Region.map validates its options', () => {
    expect(() => Region.map(undefined as never)).toThrow(TYPE);
    expect(() => Region.map({} as never)).toThrow(TYPE);
    expect(() => Region.map({ pages: 0 })).toThrow(RANGE);
    expect(() => Region.map({ pages: -1 })).toThrow(RANGE);
    expect(() => Region.map({ pages: 1.5 })).toThrow(RANGE);
    expect(() => Region.map({ pages: 2 ** 40 })).toThrow(RANGE);
    expect(() => Region.map({ pages: '4' as never })).toThrow(TYPE);
    expect(() => Region.map({ pages: 4, servicer: 'gpu' as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => Region.map({ pages: 4, faultAround: 0 })).toThrow(RANGE);
  });

  it('Device validates its options and page numbers', () => {
    expect(() => new Device({ capacity: 0 })).toThrow(RANGE);
    expect(() => new Device({ capacity: 2 ** 30 })).toThrow(RANGE);
    expect(() => new Device({ capacity: 'x' as never })).toThrow(TYPE);
    expect(() => new Device({ name: 5 as never })).toThrow(TYPE);
    expect(() => new Device({ driver: 5 as never })).toThrow(TYPE);
    expect(() => device.read(-1)).toThrow(RANGE);
    expect(() => device.read(4)).toThrow(RANGE);
    expect(() => device.read(0.5)).toThrow(RANGE);
    expect(() => device.read(0)).toThrow(expect.objectContaining({ code: 'ERR_DEVICE_PAGE_FREE' }));
    expect(() => device.write(0, new Uint8Array(1))).toThrow(expect.objectContaining({ code: 'ERR_DEVICE_PAGE_FREE' }));
  });

  it('region methods reject ranges outside the region and wrong types', () => {
    expect(() => region.migrate(0, 5, device)).toThrow(RANGE);
    expect(() => region.migrate(4, 1, device)).toThrow(RANGE);
    expect(() => region.migrate(-1, 1, device)).toThrow(RANGE);
    expect(() => region.migrate(0, 1, {} as never)).toThrow(TYPE);
    expect(() => region.migrate(0, 1, device, { write: 'yes' as never })).toThrow(TYPE);
    expect(() => region.migrate('0' as never, 1, device)).toThrow(TYPE);
    expect(() => region.migrateToRam(0, 2 ** 53)).toThrow(RANGE);
    expect(() => region.entry(4)).toThrow(RANGE);
    expect(() => region.entry(NaN)).toThrow(RANGE);
    expect(() => region.snapshot(0, 5)).toThrow(RANGE);
    expect(() => region.snapshot(0, 1, 'd' as never)).toThrow(TYPE);
    expect(() => region.pagemap(3, 2)).toThrow(RANGE);
    expect(() => region.mprotect(0, 1, 'exec' as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => region.discard(0, 99)).toThrow(RANGE);
    expect(() => new NativeToucher(region, { iterations: 1, pages: [4] })).toThrow(RANGE);
    expect(() => new NativeToucher({} as never, { iterations: 1 })).toThrow(TYPE);
  });

  it('nothing was changed by the rejected calls', () => {
    for (let p = 0; p < 4; p++) expect(region.entry(p)).toEqual({ kind: 'none' });
    expect(device.used).toBe(0);
  });

  it('closed objects say so with a code', async () => {
    const r = Region.map({ pages: 1 });
    const d = new Device({ capacity: 1 });
    await r.close();
    await d.close();
    expect(() => r.migrate(0, 1, device)).toThrow(expect.objectContaining({ code: 'ERR_REGION_CLOSED' }));
    expect(() => r.stats()).not.toThrow();
    expect(() => region.migrate(0, 1, d)).toThrow(expect.objectContaining({ code: 'ERR_DEVICE_CLOSED' }));
    expect(() => d.write(0, new Uint8Array(1))).toThrow(expect.objectContaining({ code: 'ERR_DEVICE_CLOSED' }));
  });
});
