// The addon's own checks, below lib/'s: regionCreate's options object and the one page span every
// range-taking binding goes through. JS must never be able to make the addon touch memory outside
// what it mapped, whatever it passes, and each refusal must carry the package's error shape.
import { afterEach, expect, it } from 'vitest';
import { native, type NativeRegion, type NativeRegionOptions } from '../dist/native.js';
import { REGION_HEADER } from '../dist/layout.js';
import { describeUffd } from './helpers.js';

const PAGES = 4;
const table = (pages = PAGES) => new Int32Array(new SharedArrayBuffer((REGION_HEADER + 2 * pages) * 4));

const open: NativeRegion[] = [];
afterEach(() => {
  for (const r of open.splice(0)) {
    native.detachArrayBuffer(r.bytes);
    native.regionClose(r.handle);
  }
});

function create(options: Partial<NativeRegionOptions>): NativeRegion {
  const r = native.regionCreate(options as NativeRegionOptions);
  open.push(r);
  return r;
}

const valid = (): NativeRegionOptions => ({ pages: PAGES, shared: table(), servicer: 'native', allowUserModeOnly: true });

function refusal(fn: () => unknown): { name: string; code: string; message: string } {
  try {
    fn();
  } catch (e) {
    const x = e as Error & { code: string };
    return { name: x.name, code: x.code, message: x.message };
  }
  throw new Error('expected a refusal, got none');
}

describeUffd('regionCreate(options)', () => {
  it('maps a working region from the required fields alone, defaults for the rest', () => {
    const r = create({ pages: PAGES, shared: table(), servicer: 'native' });
    expect(r.bytes.byteLength).toBe(PAGES * r.pageSize);
    const bytes = new Uint8Array(r.bytes);
    bytes[r.pageSize + 7] = 42; // a real missing fault, served by the native servicer
    expect(bytes[r.pageSize + 7]).toBe(42);
    expect(bytes[0]).toBe(0);
  });

  it('refuses each wrong field by name, with a TypeError or RangeError and its code', () => {
    const cases: Array<[Partial<NativeRegionOptions> | unknown, string, string, RegExp]> = [
      [undefined, 'TypeError', 'ERR_INVALID_ARG_TYPE', /^options must be an object/],
      [[4], 'TypeError', 'ERR_INVALID_ARG_TYPE', /^options must be an object/],
      [{ ...valid(), pages: undefined }, 'TypeError', 'ERR_INVALID_ARG_TYPE', /^options\.pages must be a number, got undefined$/],
      [{ ...valid(), pages: 0 }, 'RangeError', 'ERR_OUT_OF_RANGE', /^options\.pages must be an integer from 1 to 2\^32-1, got 0$/],
      [{ ...valid(), pages: 1.5 }, 'RangeError', 'ERR_OUT_OF_RANGE', /^options\.pages must be an integer/],
      [{ ...valid(), shared: new Int32Array(4) }, 'RangeError', 'ERR_OUT_OF_RANGE', /^options\.shared must hold at least 24 words/],
      [{ ...valid(), shared: new Uint8Array(100) }, 'TypeError', 'ERR_INVALID_ARG_TYPE', /^options\.shared must be an Int32Array/],
      [{ ...valid(), servicer: 'gpu' }, 'TypeError', 'ERR_INVALID_ARG_VALUE', /^options\.servicer must be 'worker', 'native' or 'inline', got 'gpu'$/],
      [{ ...valid(), servicer: 1 }, 'TypeError', 'ERR_INVALID_ARG_TYPE', /^options\.servicer must be a string, got 1$/],
      [{ ...valid(), allowUserModeOnly: 1 }, 'TypeError', 'ERR_INVALID_ARG_TYPE', /^options\.allowUserModeOnly must be a boolean, got 1$/],
      [{ ...valid(), classifyFaults: 'yes' }, 'TypeError', 'ERR_INVALID_ARG_TYPE', /^options\.classifyFaults must be a boolean/],
      [{ ...valid(), faultAround: 0 }, 'RangeError', 'ERR_OUT_OF_RANGE', /^options\.faultAround must be an integer from 1 to 512, got 0$/],
      [{ ...valid(), faultAround: 513 }, 'RangeError', 'ERR_OUT_OF_RANGE', /^options\.faultAround must be an integer from 1 to 512/],
      [{ ...valid(), mapShared: null }, 'TypeError', 'ERR_INVALID_ARG_TYPE', /^options\.mapShared must be a boolean, got null$/],
      [{ ...valid(), fd: '3' }, 'TypeError', 'ERR_INVALID_ARG_TYPE', /^options\.fd must be a number, got '3'$/],
      [{ ...valid(), fd: -2 }, 'RangeError', 'ERR_OUT_OF_RANGE', /^options\.fd must be -1 \(anonymous\) or a file descriptor, got -2$/],
      [{ ...valid(), fd: 2 ** 31 }, 'RangeError', 'ERR_OUT_OF_RANGE', /^options\.fd must be/],
      [{ ...valid(), offset: -4096 }, 'RangeError', 'ERR_OUT_OF_RANGE', /^options\.offset must be a non-negative multiple/],
      [{ ...valid(), offset: 100 }, 'RangeError', 'ERR_OUT_OF_RANGE', /^options\.offset must be a non-negative multiple of the page size/],
      [{ ...valid(), hugetlb: 0 }, 'TypeError', 'ERR_INVALID_ARG_TYPE', /^options\.hugetlb must be a boolean/],
      [{ ...valid(), thp: {} }, 'TypeError', 'ERR_INVALID_ARG_TYPE', /^options\.thp must be a boolean, got an object$/],
    ];
    for (const [options, name, code, message] of cases) {
      const got = refusal(() => create(options as Partial<NativeRegionOptions>));
      expect({ options, name: got.name, code: got.code }).toEqual({ options, name, code });
      expect(got.message, JSON.stringify(options)).toMatch(message);
    }
    expect(open).toEqual([]); // nothing was mapped on the way to a refusal
  });
});

describeUffd('page ranges: one checked span', () => {
  // Every binding that takes (region, first, count), called with the range as given.
  const bindings: Array<[string, (h: number, first: number, count: number) => unknown]> = [
    ['regionPagemap', (h, f, c) => native.regionPagemap(h, f, c, new BigUint64Array(Math.min(c, 64)))],
    ['regionDiscard', (h, f, c) => native.regionDiscard(h, f, c)],
    ['regionCollapse', (h, f, c) => native.regionCollapse(h, f, c)],
    ['regionMprotect', (h, f, c) => native.regionMprotect(h, f, c, 3)],
    ['regionUnmap', (h, f, c) => native.regionUnmap(h, f, c)],
    ['regionWake', (h, f, c) => native.regionWake(h, f, c)],
    ['regionWriteProtect', (h, f, c) => native.regionWriteProtect(h, f, c, true, true)],
    ['regionCopyOut', (h, f, c) => native.regionCopyOut(h, f, c, 0, new Int32Array(Math.min(c, 64)))],
  ];
  const outside: Array<[number, number, RegExp]> = [
    [PAGES + 1, 0, /^first must be an integer from 0 to 4 \(the region's pages\), got 5$/],
    [0, PAGES + 1, /^count must be an integer from 0 to 4 \(the pages from first to the region's end\), got 5$/],
    [3, 2, /^count must be an integer from 0 to 1 .*, got 2$/],
    // first + count wraps around 2^32 to 1: a 32-bit check would let it through.
    [2 ** 32 - 1, 2, /^first must be an integer from 0 to 4 .*, got 4294967295$/],
    [1, 2 ** 32 - 1, /^count must be an integer from 0 to 3 .*, got 4294967295$/],
  ];

  it('refuses a range outside the region (wrap-around included) before touching memory', () => {
    const r = create(valid());
    const bytes = new Uint8Array(r.bytes);
    bytes.fill(7);
    for (const [name, call] of bindings) {
      for (const [first, count, message] of outside) {
        const got = refusal(() => call(r.handle, first, count));
        expect({ name, first, count, error: got.name, code: got.code }).toEqual({ name, first, count, error: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
        expect(got.message, `${name}(${first}, ${count})`).toMatch(message);
      }
      const bad = refusal(() => call(r.handle, -1, 1));
      expect({ name, code: bad.code }).toEqual({ name, code: 'ERR_OUT_OF_RANGE' });
      const wrongType = refusal(() => call(r.handle, '0' as unknown as number, 1));
      expect({ name, code: wrongType.code }).toEqual({ name, code: 'ERR_INVALID_ARG_TYPE' });
    }
    // Nothing was discarded, unmapped, protected or left write-protected by the refused calls.
    bytes[PAGES * r.pageSize - 1] = 9;
    expect(bytes.every((b, i) => b === (i === PAGES * r.pageSize - 1 ? 9 : 7))).toBe(true);
  });

  it('accepts the empty range at the end, and the whole region', () => {
    const r = create(valid());
    // The span lets it through to the kernel, whose answer comes back: madvise of 0 bytes is a no-op.
    expect(native.regionDiscard(r.handle, PAGES, 0)).toBe(0);
    expect(native.regionMprotect(r.handle, 0, PAGES, 3)).toBe(0);
    const pm = new BigUint64Array(PAGES);
    native.regionPagemap(r.handle, 0, PAGES, pm);
    expect(pm.every((e) => (e & (1n << 63n)) === 0n)).toBe(true); // never touched: nothing present
  });

  it('refuses a closed region as closed, not as a range error', () => {
    const r = create(valid());
    open.pop();
    native.detachArrayBuffer(r.bytes);
    native.regionClose(r.handle);
    for (const [name, call] of bindings) {
      expect({ name, code: refusal(() => call(r.handle, 0, 1)).code }).toEqual({ name, code: 'ERR_REGION_CLOSED' });
    }
  });
});
