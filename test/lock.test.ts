// Locks inside device memory: uffd-stress's locking test. Native threads take the pthread mutex
// each page holds (NativeToucher mode 'lock') while the main thread bounces the pages between two
// devices and back; a contended mutex sleeps in futex(2) on a page that may be on a device, so
// waiters, faults taken inside that system call and migrations race. No increment may be lost,
// no thread may hang, and every mutex ends unlocked.
import { expect, it } from 'vitest';
import { Device, NativeToucher, Region, type ChildResult } from 'uffd-hmm';
import { closeAfterEach, describeUffd } from './helpers.js';

const PAGES = 64;
const THREADS = 8;
const ROUNDS = 150;
const LOCK_OFFSET = 256;
const MUTEX_BYTES = 40; // sizeof(pthread_mutex_t) on x86-64 and arm64 glibc
const PAGE_COUNTER = 512;

interface Bounced {
  moved: number;
  counts: number[];
}

/**
 * Migrates every page to `a`, then to `b`, then back to RAM, ROUNDS times while the touchers
 * (iterations 0: until stop()) run, then stops them: every thread must finish within the deadline.
 */
async function bounce(region: Region, a: Device, b: Device, t: NativeToucher, during?: (round: number) => void): Promise<Bounced> {
  let moved = 0;
  for (let round = 0; round < ROUNDS; round++) {
    moved += region.migrate(0, PAGES, a);
    moved += region.migrate(0, PAGES, b);
    region.migrateToRam(0, PAGES);
    during?.(round);
    await new Promise((r) => setImmediate(r));
  }
  t.stop();
  await t.finished(30_000); // ERR_TOUCHER_TIMEOUT if a thread hangs (in a fault, or in futex(2))
  return { moved, counts: t.counts() };
}

/** Every counter adds up, and every mutex's bytes are zero again (unlocked, no owner, no waiter). */
function expectConsistent(region: Region, counts: number[]): void {
  expect(region.migrateToRam(0, PAGES)).toBe(0); // bounce() ends with every page in RAM
  const ps = region.pageSize;
  const words = new Uint32Array(region.bytes.buffer, region.bytes.byteOffset, (PAGES * ps) / 4);
  const perThread = new Array<number>(THREADS).fill(0);
  let pageTotal = 0;
  const lockedPages: number[] = [];
  for (let p = 0; p < PAGES; p++) {
    const base = (p * ps) / 4;
    let pageSum = 0;
    for (let k = 0; k < THREADS; k++) {
      perThread[k] += words[base + k];
      pageSum += words[base + k];
    }
    // Each page's counter was added to under the same mutex as the threads' counters on it.
    expect(words[base + PAGE_COUNTER / 4], `page ${p}`).toBe(pageSum);
    pageTotal += words[base + PAGE_COUNTER / 4];
    if (region.bytes.subarray(p * ps + LOCK_OFFSET, p * ps + LOCK_OFFSET + MUTEX_BYTES).some((x) => x !== 0)) lockedPages.push(p);
  }
  for (const c of counts) expect(c).toBeGreaterThan(0);
  expect(perThread).toEqual(counts);
  expect(pageTotal).toBe(counts.reduce((x, y) => x + y, 0));
  expect(lockedPages, 'pages whose mutex is not back to zeroed bytes').toEqual([]);
}

describeUffd.each(['worker', 'native'] as const)("%s: NativeToucher mode 'lock' (uffd-stress's locking test)", (servicer) => {
  const track = closeAfterEach();

  function setup(): { region: Region; a: Device; b: Device; t: NativeToucher } {
    const region = track(Region.map({ pages: PAGES, servicer, countKernelFaults: true }));
    const a = track(new Device({ capacity: PAGES, name: 'lock-a' }));
    const b = track(new Device({ capacity: PAGES, name: 'lock-b' }));
    region.bytes.fill(0, 0, region.length); // present, and every mutex an unlocked one
    const t = new NativeToucher(region, { threads: THREADS, iterations: 0, mode: 'lock', seed: 24 });
    return { region, a, b, t };
  }

  it(`${THREADS} threads locking ${PAGES} pages while the main thread migrates them between two devices and back`, async () => {
    const { region, a, b, t } = setup();
    const { moved, counts } = await bounce(region, a, b, t);
    expectConsistent(region, counts);
    expect(moved).toBeGreaterThan(ROUNDS);
    // The threads met the pages on the devices, from user mode and inside futex(2).
    const stats = region.stats();
    expect(stats.faults).toBeGreaterThan(0);
    expect(stats.kernelFaults, JSON.stringify(stats)).toBeGreaterThan(0);
    expect(a.used + b.used).toBe(0);
  }, 90_000);

  it('the same, with a region.fork child reading checksums meanwhile', async () => {
    const { region, a, b, t } = setup();
    const steps = Array.from({ length: 8 }, () => ({ op: 'checksum' as const, first: 0, count: PAGES }));
    let child: Promise<ChildResult> | undefined;
    // Forked once the threads are under way and some pages are on a device: the child shares them.
    const { counts } = await bounce(region, a, b, t, (round) => {
      if (round === 2) {
        region.migrate(0, PAGES / 2, a);
        child = region.fork(steps, { timeoutMs: 30_000 });
      }
    });
    expect(child).toBeDefined();
    const res = await child!;
    expect({ exitCode: res.exitCode, signal: res.signal, results: res.results.length }).toEqual({ exitCode: 0, signal: null, results: steps.length });
    for (const crc of res.results) expect(crc).toBeGreaterThanOrEqual(0);
    expectConsistent(region, counts);
    expect(a.used + b.used).toBe(0);
  }, 90_000);
});

describeUffd("NativeToucher mode 'lock' on an 'inline' region", () => {
  const track = closeAfterEach();

  it('is refused at construction: the inline servicer cannot serve a fault taken inside futex(2)', () => {
    const region = track(Region.map({ pages: 4, servicer: 'inline' }));
    expect(() => new NativeToucher(region, { iterations: 1, mode: 'lock' })).toThrow(
      expect.objectContaining({
        code: 'ERR_SERVICER_UNSUPPORTED',
        message: expect.stringMatching(/^NativeToucher mode 'lock' sleeps in futex\(2\) .*'inline' servicer cannot serve a fault taken inside a system call/),
      }),
    );
    // The other modes still run there.
    const t = new NativeToucher(region, { iterations: 10, mode: 'increment' });
    expect(t.wait(10_000)).toBe(true);
  });
});
