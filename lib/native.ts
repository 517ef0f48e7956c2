// The one place that loads the addon, and the exact surface it exposes to TypeScript.
// Every native function returns 0 or -errno on its hot paths and throws only for bad handles or
// arguments, so servicers decide what an errno means.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export interface NativeProbe {
  available: boolean;
  via: 'dev-userfaultfd' | 'syscall' | null;
  userModeOnly: boolean;
  features: number;
  devErrno: number;
  syscallErrno: number;
  errno: number;
  kernel: string;
  pageSize: number;
}

export interface NativeRegion {
  handle: number;
  bytes: ArrayBuffer;
  address: bigint;
  pageSize: number;
  via: 'dev-userfaultfd' | 'syscall';
  userModeOnly: boolean;
  forkEvents: boolean;
}

/** What regionCreate maps: absent optional fields take the defaults given. */
export interface NativeRegionOptions {
  /** Pages of the mapping, at least 1. */
  pages: number;
  /** The region header and page table (layout.ts), at least REGION_HEADER + 2 * pages words. */
  shared: Int32Array;
  servicer: 'worker' | 'native' | 'inline';
  /** Accept a user-mode-only userfaultfd when a full one is refused (default false). */
  allowUserModeOnly?: boolean;
  /** Look up whether each fault came from inside a system call (default false). */
  classifyFaults?: boolean;
  /** Pages migrated back per device fault, 1..512 (default 1). */
  faultAround?: number;
  /** MAP_SHARED instead of MAP_PRIVATE (default false). */
  mapShared?: boolean;
  /** The file to map, or -1 for anonymous memory (default -1). */
  fd?: number;
  /** Byte offset into fd, a multiple of the page size (default 0). */
  offset?: number;
  /** MAP_HUGETLB (default false). */
  hugetlb?: boolean;
  /** A PMD-aligned mapping that THPs may back (default false). */
  thp?: boolean;
}

export interface NativeForkResult {
  results: number[];
  exitCode: number | null;
  signal: string | null;
  stats: { faults: number; wpFaults: number; migratedBack: number };
}

export interface Addon {
  probe(): NativeProbe;
  errnoName(errno: number): string;
  /** Every constant of native/layout.h by its C++ name, and the kernel's UFFD_PAGEFAULT_FLAG_*. */
  protocolConstants(): Record<string, number>;
  detachArrayBuffer(ab: ArrayBuffer): void;

  deviceCreate(capacity: number, shared: Int32Array): number;
  deviceDestroy(slot: number): void;
  deviceRead(slot: number, pfn: number, out: Uint8Array): void;
  deviceWrite(slot: number, pfn: number, data: ArrayBufferView, offset: number): void;
  deviceZero(slot: number, pfn: number): void;
  deviceRelease(slot: number, idleTop: number): number;
  deviceCopyPage(srcSlot: number, srcPfn: number, dstSlot: number, dstPfn: number): void;
  deviceChecksum(slot: number, pfn: number): number;

  /** Maps and registers a region; every field is checked (TypeError/RangeError with a `code`). */
  regionCreate(options: NativeRegionOptions): NativeRegion;
  /** MADV_COLLAPSE over the range: 0 or -errno. */
  regionCollapse(handle: number, first: number, count: number): number;
  regionClose(handle: number): void;
  regionTakeOver(handle: number): boolean;
  regionGuarded(handle: number): boolean;
  regionTraceSet(handle: number, buffer: Int32Array | null): void;
  regionFork(handle: number, steps: Int32Array, childShared: Int32Array, timeoutMs: number): number;
  forkPoll(job: number): NativeForkResult | undefined;
  forkStart(job: number): void;
  /** Device removal for region.fork children: their entries on the device migrate back. 0 or -errno. */
  forkEvictDevice(slot: number): number;
  /**
   * The fault engine, once a driver's fault hook has decided (verdict 1 migrate, 2 SIGBUS) for the
   * entry (state word, pfn) it was asked about: 0 served, 1 deferred (keep the verdict, try again),
   * 2 the page holds another entry and is locked for the caller (ask again, then serve it held),
   * 3 failed (its thread was woken to fault afresh). held: the caller holds the page locked since
   * an ask; verdict 0 then only unlocks it.
   */
  faultServe(handle: number, page: number, flags: number, tid: number, t0Us: number, verdict: number, state: number, pfn: number, held: boolean, offset: number, hookUs?: number): number;
  /** Migrate back of locked pages [page, page + count) from device pages [pfn, …): 0 or -errno; publishes nothing. */
  regionFillFromDevice(handle: number, page: number, count: number, slot: number, pfn: number, writeProtect: boolean): number;
  regionWake(handle: number, first: number, count: number): number;
  regionWriteProtect(handle: number, first: number, count: number, protect: boolean, wake: boolean): number;
  regionCopyOut(handle: number, first: number, count: number, slot: number, pfns: Int32Array): number;
  regionPagemap(handle: number, first: number, count: number, out: BigUint64Array): void;
  regionDiscard(handle: number, first: number, count: number, free?: boolean): number;
  regionMprotect(handle: number, first: number, count: number, prot: number): number;
  regionUnmap(handle: number, first: number, count: number): number;
  regionRemap(handle: number, pages: number, shared: Int32Array): { bytes: ArrayBuffer; address: bigint };

  pollerCreate(): number;
  pollerDestroy(handle: number): void;
  pollerAdd(poller: number, region: number): void;
  pollerRemove(poller: number, region: number): void;
  pollerKick(poller: number): void;
  /**
   * Serves what the poller's regions have for it, in native code, and writes into `out` the faults
   * a driver's fault hook must decide (EVENT_ASK records): their count, or -1 when kicked with none,
   * -2 when native guards serve these regions now.
   */
  pollerWait(poller: number, out: Float64Array, timeoutMs: number): number;
  pollerAttach(poller: number): void;
  pollerWatch(poller: number, deadlineMs: number): void;
  pollerDead(poller: number): 0 | 1 | 2;

  benchTouch(region: number, order: Int32Array, threads: number, out: Float64Array, write: boolean): void;
  benchPlain(pages: number, order: Int32Array, threads: number, out: Float64Array): void;
  benchBaseline(pages: number, order: Int32Array, threads: number, out: Float64Array): number;

  toucherStart(region: number, threads: number, iterations: number, mode: 0 | 1 | 2, seed: number, pages: Int32Array): number;
  toucherWait(toucher: number, timeoutMs: number, counts: Float64Array): boolean;
  toucherStop(toucher: number): void;

  /** TEST ONLY (native/region.h, RegionState::testHoldBatches): hold the next batches the servicer reads. */
  testHoldServicer(region: number, batches: number, ms: number): number;
  /** TEST ONLY: let held batches 1..upTo go (0: all, and cancel the rest); returns how many were held. */
  testReleaseServicer(region: number, upTo: number): number;
  /** TEST ONLY (native/test_hooks.cc): the next worker servicer waits `ms` before it attaches, as a slow start would. */
  testDelayWorkerAttach(ms: number): void;
  /** TEST ONLY: the region's next `skip` madvise calls (regionDiscard) succeed, the one after fails with `errno` (0 disarms). */
  testFailMadvise(region: number, skip: number, errno: number): void;
  /** TEST ONLY: a native thread that MADV_DONTNEEDs `page` every `intervalUs`, behind the library's back. */
  testZapperStart(region: number, page: number, intervalUs: number): number;
  /** TEST ONLY: stops and joins that thread; the zaps it made. */
  testZapperStop(zapper: number): number;
  /** TEST ONLY (native/test_hooks.cc): the region's next UFFDIO_COPY of more than `pages` pages fills that many and answers EAGAIN. */
  testCutCopy(region: number, pages: number, counted?: boolean): void;
  /** TEST ONLY: the next engine thread at `point` (1 lockNeighbours before its CAS, 2 migrateSharers after locking a sharer's page) waits; pauses so far. */
  testPauseAt(region: number, point: number, ms: number): number;
  /** TEST ONLY: pages [first, first + count) become hardware poison (S8): entry dropped, UFFDIO_POISON, kind 'poison'. */
  testPoisonPage(region: number, first: number, count: number): void;
  /** TEST ONLY: record each SIGBUS (and return from the handler) from now on. */
  testRecordSigbus(): void;
  /** TEST ONLY: the calling thread blocks (true) or unblocks the refusal signal (SIGRTMAX-4). */
  testBlockRefusalSignal(block: boolean): void;
  /** TEST ONLY: [count, si_code of the last, si_addr of the last]. */
  testSigbusRecord(): [number, number, bigint];

  benchPlainTouch(pages: number, order: Int32Array, threads: number, out: Float64Array, write: boolean): void;
  benchSetAffinity(cpus: Int32Array): Int32Array;
  /** out[0], out[1]: memcpy+madvise to the device and back, ns; out[2]: to the device stopping writers first, ns. */
  benchMigrateBaseline(pages: number, out: Float64Array): void;
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// A local build (a source checkout, or an install that compiled) wins over the prebuilt binary a
// registry tarball carries for linux-x64 with glibc (scripts/install.mjs chose between them).
const candidates = [
  path.join(root, 'build', 'Release', 'uffd_hmm.node'),
  path.join(root, 'build', 'Debug', 'uffd_hmm.node'),
  path.join(root, 'prebuilds', `${process.platform}-${process.arch}-glibc`, 'uffd_hmm.node'),
];

function load(): Addon {
  if (process.platform !== 'linux') {
    const err = new Error(
      `uffd-hmm runs on Linux only (this is ${process.platform}): it needs userfaultfd(2); run it on Linux 5.7 or newer (a virtual machine will do).`,
    );
    (err as NodeJS.ErrnoException).code = 'ERR_UFFD_UNSUPPORTED_PLATFORM';
    throw err;
  }
  const require = createRequire(import.meta.url);
  const failures: string[] = [];
  for (const file of candidates) {
    try {
      return require(file) as Addon;
    } catch (e) {
      failures.push(`  ${file}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  const err = new Error(
    'uffd-hmm could not load its native addon. Tried:\n' +
      failures.join('\n') +
      '\nBuild it with `UFFD_HMM_BUILD_FROM_SOURCE=1 npm rebuild uffd-hmm` (after `npm install-scripts approve uffd-hmm` where npm ' +
      "blocks dependencies' install scripts), or `npx node-gyp rebuild` in the package folder; " +
      'that needs python3, make and a C++ compiler (g++ 10 or newer).',
  );
  (err as NodeJS.ErrnoException).code = 'ERR_UFFD_ADDON_LOAD';
  throw err;
}

export const native: Addon = load();

/** The system page size; every region and device page has this size. */
export const PAGE_SIZE: number = native.probe().pageSize;
