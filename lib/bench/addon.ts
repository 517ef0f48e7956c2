// The addon's benchmark entry points (native/bench.cc) with the optional arguments the benchmark
// passes: per-touch writes, SIGBUS recovery, the C handlers' source choice, host facts.
import { native } from '../native.js';

export interface BenchAddon {
  /** Touches `order` in a region from native threads; `refused` marks touches that raised SIGBUS (recovered). */
  benchTouch(region: number, order: Int32Array, threads: number, out: Float64Array, write: boolean, writes?: Uint8Array, refused?: Uint8Array): void;
  /**
   * c-baseline: a poll + read + UFFDIO_COPY thread; `hot` copies from one cache-hot page instead of
   * distinct pages; `around` > 1 fills the aligned block of that many pages with one copy per
   * fault. Returns the ns spent touching, without populating the source.
   */
  benchBaseline(pages: number, order: Int32Array, threads: number, out: Float64Array, hot?: boolean, writes?: Uint8Array, around?: number): number;
  /** c-sigbus: an in-thread SIGBUS handler doing one UFFDIO_COPY from distinct pages. Returns the ns spent touching. */
  benchSigbus(pages: number, order: Int32Array, threads: number, out: Float64Array, writes?: Uint8Array): number;
  benchPlainTouch(pages: number, order: Int32Array, threads: number, out: Float64Array, write: boolean): void;
  /**
   * out[0] null system call ns, out[1] plain first read µs, out[2] plain first write µs, out[3]
   * UFFDIO_COPY µs from a page user space just wrote, out[4] from the same page again.
   */
  benchHost(out: Float64Array): void;
}

export const addon = native as unknown as BenchAddon;
