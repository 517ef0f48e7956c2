// hmm-tests.c's hmm_gup_test ported to uffd-hmm: the kernel itself accessing device private pages
// for writing (get_user_pages with FOLL_WRITE) migrates them back, and no data is corrupted.
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect, it } from 'vitest';
import { Device, HMM_DMIRROR_PROT_WRITE, Region } from 'uffd-hmm';
import { mirrorMigrate, mirrorSnapshot } from 'uffd-hmm';
import { describeUffd } from '../helpers.js';
import { fillInts, firstIntMismatchIn, ints, track } from './fixtures/common.js';

// There is no /sys/kernel/debug/gup_test to pin our pages with, and no need: any system call that
// writes into device-resident pages goes through the same get_user_pages/uaccess fault path. Kernel
// faults reach a servicer off the faulting thread: 'worker' (default) and 'native'.
function gupTest(servicer: 'worker' | 'native'): void {
  const npages = 4;
  const r = track(Region.map({ pages: npages, servicer }));
  const d = track(new Device({ capacity: npages }));
  const ps = r.pageSize;
  const ptr = ints(r);
  fillInts(ptr);
  const want = r.bytes.slice(0, npages * ps);
  const res = mirrorMigrate(r, 0, npages, d);
  expect(res.cpages).toBe(npages);
  expect(firstIntMismatchIn(res.data)).toBe(-1);

  // GUP_BASIC_TEST, GUP_FAST_BENCHMARK, PIN_FAST_BENCHMARK (FOLL_LONGTERM), PIN_LONGTERM_BENCHMARK:
  // each takes one page with FOLL_WRITE. Here the kernel writes 64 bytes into each page (read(2)
  // from a file): the page must come back whole for that, so the rest of it shows a lost page.
  const mark = new Uint8Array(64).fill(0x5a);
  for (let p = 0; p < npages; p++) want.set(mark, p * ps + 128);
  const dir = mkdtempSync(path.join(tmpdir(), 'uffd-hmm-gup-'));
  try {
    const fd = openSync(path.join(dir, 'mark'), 'w+');
    try {
      expect(writeSync(fd, mark, 0, mark.length, 0)).toBe(mark.length);
      const s0 = r.stats();
      for (let p = 0; p < npages; p++) expect(readSync(fd, r.bytes, p * ps + 128, mark.length, 0)).toBe(mark.length);
      // One write fault per page, each migrating a write entry back writable (no second fault).
      const s1 = r.stats();
      expect({ faults: s1.faults - s0.faults, writeFaults: s1.writeFaults - s0.writeFaults, wpFaults: s1.wpFaults - s0.wpFaults }).toEqual({
        faults: npages,
        writeFaults: npages,
        wpFaults: 0,
      });
    } finally {
      closeSync(fd);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  // Device private pages come back to system memory for every kind of pin.
  const m = mirrorSnapshot(r, 0, npages, d);
  expect([...m]).toEqual(new Array(npages).fill(HMM_DMIRROR_PROT_WRITE));
  expect(d.used).toBe(0);
  // Check again the content on the pages. Make sure there's no corrupted data.
  const got = r.bytes.subarray(0, npages * ps);
  for (let i = 0; i < got.length; i++) if (got[i] !== want[i]) expect.fail(`byte ${i} is ${got[i]}, want ${want[i]}`);
}

describeUffd('hmm-tests.c: kernel access', () => {
  // The kernel runs it under two fixture variants (device types); ours under both servicers.
  it('hmm_gup_test', () => {
    gupTest('worker');
    gupTest('native');
  });
});
