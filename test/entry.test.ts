// Device-entry encoding against include/linux/swapops.h with the seed patch (x86-64):
// swp_entry(type, offset) = type << 57 | offset; SWP_DEVICE_WRITE 30, SWP_DEVICE 31.
import { describe, expect, it } from 'vitest';
import {
  MAX_SWAPFILES,
  SWP_DEVICE,
  SWP_DEVICE_WRITE,
  SWP_HWPOISON,
  SWP_MIGRATION_READ,
  SWP_MIGRATION_WRITE,
  deviceEntryToPfn,
  isDeviceEntry,
  isWriteDeviceEntry,
  makeDeviceEntry,
  makeDeviceEntryRead,
  swpEntry,
  swpOffset,
  swpType,
} from 'uffd-hmm';

describe('device entry encoding', () => {
  it('carves the seed patch types out of the 5-bit swap type', () => {
    expect(MAX_SWAPFILES).toBe(27);
    expect(SWP_HWPOISON).toBe(27);
    expect(SWP_MIGRATION_READ).toBe(28);
    expect(SWP_MIGRATION_WRITE).toBe(29);
    expect(SWP_DEVICE_WRITE).toBe(30);
    expect(SWP_DEVICE).toBe(31);
  });

  it('places the type at bit 57 and the pfn in the offset', () => {
    expect(makeDeviceEntry(0, true)).toBe(30n << 57n);
    expect(makeDeviceEntry(5, false)).toBe((31n << 57n) | 5n);
    expect(makeDeviceEntry(0x123456, true).toString(16)).toBe('3c00000000123456');
  });

  it('round-trips pfn, type and write bit', () => {
    for (const pfn of [0, 1, 4095, 65535, 2 ** 24 - 1, 2 ** 40 + 3, Number.MAX_SAFE_INTEGER]) {
      for (const write of [false, true]) {
        const e = makeDeviceEntry(pfn, write);
        expect(isDeviceEntry(e)).toBe(true);
        expect(isWriteDeviceEntry(e)).toBe(write);
        expect(deviceEntryToPfn(e)).toBe(pfn);
        expect(swpOffset(e)).toBe(pfn);
        expect(swpType(e)).toBe(write ? SWP_DEVICE_WRITE : SWP_DEVICE);
        const r = makeDeviceEntryRead(e);
        expect(isWriteDeviceEntry(r)).toBe(false);
        expect(isDeviceEntry(r)).toBe(true);
        expect(deviceEntryToPfn(r)).toBe(pfn);
      }
    }
  });

  it('tells device entries from other swap entries', () => {
    expect(isDeviceEntry(swpEntry(0, 10))).toBe(false);
    expect(isDeviceEntry(swpEntry(SWP_MIGRATION_WRITE, 10))).toBe(false);
    expect(isDeviceEntry(swpEntry(SWP_HWPOISON, 10))).toBe(false);
    expect(() => deviceEntryToPfn(swpEntry(3, 1))).toThrow(RangeError);
  });

  it('rejects bad input with typed errors', () => {
    expect(() => makeDeviceEntry(-1, true)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => makeDeviceEntry(1.5, true)).toThrow(RangeError);
    expect(() => makeDeviceEntry('1' as unknown as number, true)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => makeDeviceEntry(1, 1 as unknown as boolean)).toThrow(TypeError);
    expect(() => isDeviceEntry(5 as unknown as bigint)).toThrow(TypeError);
    expect(() => swpType(-1n)).toThrow(RangeError);
    expect(() => swpType(1n << 64n)).toThrow(RangeError);
    expect(() => swpEntry(32, 0)).toThrow(RangeError);
  });
});
