// Error constructors with the stable `code` docs/ERRORS.md lists, and the SystemError shape
// (code, errno, syscall) for system-call failures.
import { fileURLToPath } from 'node:url';

import { native } from './native.js';

/**
 * The fields Node's own SystemError carries, which every failed system call of this package
 * reports (see {@link UffdSystemError}): test `code` to branch on the cause, read `syscall` to
 * know which call or ioctl failed.
 */
export interface SystemErrorFields {
  /** The errno name, as Node spells it: `'EEXIST'`, `'EPERM'`, `'EFAULT'`, … */
  code: string;
  /** The errno, negative as Node reports it (`-17` for EEXIST). */
  errno: number;
  /** The call that failed, with the ioctl named: `'mmap'`, `'ioctl(UFFDIO_COPY)'`, `'ioctl(HMM_DMIRROR_READ)'`, … */
  syscall: string;
}

/**
 * The error the TypeScript layer throws for everything that is not an argument error or a failed
 * system call: a closed object, a missing privilege or kernel feature, a servicer failure, a
 * driver bug. Branch on `code`, which is stable, never on the class or the message: errors raised
 * inside the native addon carry the same kind of `code` on a plain `Error`.
 *
 * The codes: `ERR_UFFD_UNAVAILABLE` (no userfaultfd for this process: the message names the fix),
 * `ERR_UFFD_FEATURE_MISSING` (the kernel lacks a userfaultfd feature the call needs),
 * `ERR_REGION_CLOSED`, `ERR_DEVICE_CLOSED`, `ERR_DEVICE_PAGE_FREE` (a device page that is not
 * allocated), `ERR_SERVICER_UNSUPPORTED` (the region's servicer cannot do this, e.g. fork an
 * `'inline'` region), `ERR_SERVICER_FAILED` / `ERR_SERVICER_STALLED` (the worker servicer died or
 * hung: emitted as `'error'` on the region, which a native guard serves from then on),
 * `ERR_PAGE_LOCK_TIMEOUT`, `ERR_DRIVER_HOOK` / `ERR_DRIVER_LOAD` (a driver hook threw or returned
 * something other than a decision, or its module would not load: emitted as `'error'` on the
 * Device, with the original error as `cause`), `ERR_TOO_MANY_DEVICES`,
 * `ERR_TOO_MANY_INLINE_REGIONS`, `ERR_REGION_BUSY`, `ERR_TOUCHER_RUNNING`,
 * `ERR_TOUCHER_TIMEOUT`, `ERR_FORK_EVENT`, `ERR_SMAPS`, `ERR_BACKING_UNSUPPORTED` (a shared, file,
 * hugetlb or THP region cannot do what was asked), `ERR_NO_HUGE_PAGES` (the hugetlb pool is short),
 * and `ERR_UFFD_ADDON_LOAD` / `ERR_UFFD_UNSUPPORTED_PLATFORM` (the native addon could not be
 * loaded, at import time). docs/ERRORS.md lists every one with its message and next step.
 *
 * Argument errors are a `TypeError` (`code: 'ERR_INVALID_ARG_TYPE'`, or `'ERR_INVALID_ARG_VALUE'`
 * for a value outside an enumeration) or a `RangeError` (`code: 'ERR_OUT_OF_RANGE'`), as Node's
 * own are; failed system calls are {@link UffdSystemError}s (or, from the addon, plain `Error`s
 * with the same `code`, `errno` and `syscall`).
 *
 * @example
 * ```ts
 * try {
 *   Region.map({ pages: 16 });
 * } catch (e) {
 *   if ((e as UffdHmmError).code === 'ERR_UFFD_UNAVAILABLE') console.error((e as Error).message); // names the fix
 *   else throw e;
 * }
 * ```
 */
export class UffdHmmError extends Error {
  /** The stable error code, `ERR_…` (see the class description for the list). */
  readonly code: string;
  /**
   * Creates an error with a stable code; `name` is `'UffdHmmError'`.
   *
   * @param code - the stable `ERR_…` code.
   * @param message - what went wrong, for people.
   * @param options - `cause`: the underlying error, kept as `error.cause`.
   */
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UffdHmmError';
    this.code = code;
  }
}

/**
 * A failed system call or ioctl, shaped like Node's SystemError: `code` is the errno name,
 * `errno` the negative errno, `syscall` the call (`'ioctl(UFFDIO_COPY)'`, `'mmap'`, …), and its
 * `name` is `'SystemError'`. The mirror functions ({@link mirrorRead} and the others) throw it with
 * the errno dmirror returns (`EFAULT`, `EPERM`, `EINVAL`, `ENOENT`, `ENOMEM`).
 */
export class UffdSystemError extends Error implements SystemErrorFields {
  /** The errno name: `'EFAULT'`, `'EPERM'`, … */
  readonly code: string;
  /** The errno, negative as Node reports it. */
  readonly errno: number;
  /** The system call or ioctl that failed, e.g. `'ioctl(UFFDIO_COPY)'`. */
  readonly syscall: string;
  /**
   * Creates the error of a failed call; `code` is the errno's name and the message reads
   * `<syscall> failed: <code> (<context>): <hint>`.
   *
   * @param negErrno - the errno, negative as native calls return it (a positive one is accepted too).
   * @param syscall - the call that failed, named as the message and `syscall` will show it.
   * @param context - what was being done (which pages, which operation), in parentheses.
   * @param hint - the next step for the user; by default one chosen by errno.
   */
  constructor(negErrno: number, syscall: string, context?: string, hint?: string) {
    const errno = negErrno < 0 ? negErrno : -negErrno;
    const code = native.errnoName(-errno);
    super(`${syscall} failed: ${code}${context ? ` (${context})` : ''}: ${hint ?? nextStepFor(code)}`);
    this.name = 'SystemError';
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
  }
}

export function invalidType(name: string, expected: string, value: unknown): TypeError {
  const err = new TypeError(`${name} must be ${expected}, got ${describe(value)}`);
  (err as TypeError & { code: string }).code = 'ERR_INVALID_ARG_TYPE';
  return err;
}

export function outOfRange(name: string, expected: string, value: unknown): RangeError {
  const err = new RangeError(`${name} must be ${expected}, got ${describe(value)}`);
  (err as RangeError & { code: string }).code = 'ERR_OUT_OF_RANGE';
  return err;
}

export function invalidValue(name: string, expected: string, value: unknown): TypeError {
  const err = new TypeError(`${name} must be ${expected}, got ${describe(value)}`);
  (err as TypeError & { code: string }).code = 'ERR_INVALID_ARG_VALUE';
  return err;
}

function describe(value: unknown): string {
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value);
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value);
  if (typeof value === 'function') return 'a function';
  return `an ${Object.prototype.toString.call(value).slice(8, -1)}`;
}

/** Throws a SystemError when a native call returned -errno. */
export function check(rc: number, syscall: string, context?: string, hint?: string): void {
  if (rc < 0) throw new UffdSystemError(rc, syscall, context, hint);
}

// What to do about a failed system call, by errno; native/napi_util.cc nextStepFor is its twin
// (same words), and docs/ERRORS.md quotes both.
const NEXT_STEP: Record<string, string> = {
  ENOMEM:
    'the kernel refused the memory; map fewer or smaller regions and devices, or raise the limit that was hit (ulimit -v, ulimit -d, vm.max_map_count)',
  EMFILE: 'this process has too many open files; close regions and devices it no longer uses, or raise the limit (ulimit -n)',
  ENFILE: 'the system has too many open files; close some, or raise fs.file-max',
  EAGAIN: 'a process or thread limit was reached; end processes this user no longer needs, or raise the limit (ulimit -u)',
};
const UNEXPECTED = 'unexpected here; please report it with this message and the output of `npx uffd-hmm info --json`';

function nextStepFor(code: string): string {
  return NEXT_STEP[code] ?? UNEXPECTED;
}

/** ERR_REGION_CLOSED, worded once for every place that checks. */
export function regionClosed(): UffdHmmError {
  return new UffdHmmError('ERR_REGION_CLOSED', 'the region is closed (region.close() was called); map a new one with Region.map()');
}

/** ERR_DEVICE_CLOSED, worded once for every place that checks. */
export function deviceClosed(name: string): UffdHmmError {
  return new UffdHmmError('ERR_DEVICE_CLOSED', `device ${name} is closed (device.close() was called); create a new Device to use device memory again`);
}

// Driver errors are raised on the main thread and in the worker servicer alike: one wording for both.

// Stack frames in this package's own files (the servicer that called the hook) are not the driver's.
const OWN_FILES = [new URL('.', import.meta.url).href, fileURLToPath(new URL('.', import.meta.url))];

/**
 * What a hook threw, for a message the user reads without opening err.cause: its name and first
 * line of message, and its first stack frame in the driver's code ("Error: bad pfn, at fault
 * (file:///app/driver.mjs:3:9)"). A warning printed without a listener shows nothing else.
 */
export function describeThrown(thrown: unknown): string {
  if (!(thrown instanceof Error) && !(typeof thrown === 'object' && thrown !== null && 'message' in thrown)) {
    return `a non-Error: ${typeof thrown === 'string' ? JSON.stringify(thrown) : String(thrown)}`;
  }
  const e = thrown as { name?: unknown; message?: unknown; stack?: unknown };
  const head = `${String(e.name ?? 'Error')}: ${String(e.message).split('\n')[0]}`;
  const frame =
    typeof e.stack === 'string'
      ? e.stack
          .split('\n')
          .map((l) => l.trim())
          .find((l) => l.startsWith('at ') && !OWN_FILES.some((own) => l.includes(own)))
      : undefined;
  return frame === undefined ? head : `${head}, ${frame}`;
}

/** ERR_DRIVER_HOOK: a fault hook threw or answered wrongly (`thrown`, also err.cause). */
export function faultHookFailed(device: string, thrown: unknown): string {
  return (
    `driver fault hook of ${device} failed with ${describeThrown(thrown)} (err.cause is the whole error); the fault was ` +
    'served by the default policy (migrated back); fix the hook'
  );
}

/** ERR_DRIVER_HOOK: a pageFree hook threw `thrown` (also err.cause). */
export function pageFreeHookThrew(device: string, thrown: unknown): string {
  return `driver pageFree hook of ${device} threw ${describeThrown(thrown)} (err.cause is the whole error); the page was freed anyway; fix the hook`;
}

/**
 * Prints `err` as a process warning now, as process.emitWarning does a tick later: a report made
 * while the process exits (the 'exit' event) would never get that tick. Node's own listener
 * prints it, and honours --no-warnings and --redirect-warnings.
 */
export function warnNow(err: Error): void {
  process.emit('warning', err);
}

/** ERR_DRIVER_LOAD: the import of `url` failed with `thrown` (also err.cause); `consequence` says what runs without the driver. */
/** ERR_DRIVER_LOAD from `new Device`: the driver module's file does not exist. */
export function driverNotFound(given: string, file: string): string {
  return `driver module not found: ${file} (options.driver was '${given}'); a relative path is resolved from the current directory (${process.cwd()}), so pass new URL('./driver.mjs', import.meta.url) to name a file beside your module`;
}

export function driverLoadFailed(url: string, device: string, thrown: unknown, consequence: string): string {
  return (
    `could not load driver ${url} of ${device}: ${describeThrown(thrown)} (err.cause is the whole error); ${consequence}; ` +
    'check that it names an ES module that imports without error'
  );
}

/** ERR_BENCH_CHECK: the benchmark's own sanity checks, which only a bug in uffd-hmm can fail. */
export function benchCheckFailed(what: string): UffdHmmError {
  return new UffdHmmError(
    'ERR_BENCH_CHECK',
    `benchmark self-check failed: ${what}; this is a bug in uffd-hmm, please report it with this message and the output of \`npx uffd-hmm info --json\``,
  );
}
