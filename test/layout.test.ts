// The shared-memory protocol is written twice, native/layout.h for C++ and lib/layout.ts for
// TypeScript: this holds them against each other, so that a slot, bit or record field changed on
// one side only fails here instead of corrupting a page table at run time.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import * as layout from '../dist/layout.js';
import { native } from '../dist/native.js';

const header = readFileSync(new URL('../native/layout.h', import.meta.url), 'utf8');
const exported = native.protocolConstants();

/** kStatFaults -> STAT_FAULTS, kDevMigratedToRam -> DEV_MIGRATED_TO_RAM. */
function tsName(cppName: string): string {
  return cppName.slice(1).replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

const tsConstants = Object.entries(layout).filter(([name, v]) => /^[A-Z][A-Z0-9_]*$/.test(name) && typeof v === 'number') as [
  string,
  number,
][];

describe('protocol: native/layout.h and lib/layout.ts', () => {
  it('the addon exports every constant the header declares, and no other', () => {
    const declared = [...header.matchAll(/constexpr\s+[\w:]+\s+(k\w+)\s*=/g)].map((m) => m[1]).sort();
    expect(declared.length).toBeGreaterThan(50);
    const fromAddon = Object.keys(exported).filter((n) => n.startsWith('k')).sort();
    expect(fromAddon).toEqual(declared);
  });

  it('every native constant has a TypeScript twin with the same value', () => {
    const ts = new Map(tsConstants);
    const missing: string[] = [];
    const differ: string[] = [];
    for (const [cpp, value] of Object.entries(exported)) {
      const name = cpp.startsWith('k') ? tsName(cpp) : cpp;
      if (!ts.has(name)) missing.push(`${cpp} (${name})`);
      else if (ts.get(name) !== value) differ.push(`${name}: native ${value}, TypeScript ${ts.get(name)}`);
    }
    expect(missing).toEqual([]);
    expect(differ).toEqual([]);
  });

  it('every TypeScript constant has a native twin', () => {
    const names = new Set(Object.keys(exported).map((cpp) => (cpp.startsWith('k') ? tsName(cpp) : cpp)));
    expect(tsConstants.map(([n]) => n).filter((n) => !names.has(n))).toEqual([]);
  });

  it('the page-state bits do not overlap each other or the device slot', () => {
    const bits = [layout.KIND_MASK, layout.WRITE, layout.LOCKED, layout.UNMAPPED, layout.ZAPPING, layout.HUGE, layout.ZAP_PENDING];
    let seen = 0;
    for (const b of bits) {
      expect(seen & b).toBe(0);
      seen |= b;
    }
    expect(seen >>> layout.DEVICE_SHIFT).toBe(0);
    expect((layout.MAX_DEVICE_SLOT << layout.DEVICE_SHIFT) >>> 0).toBeLessThan(2 ** 31);
  });
});
