// Error constructors with the stable `code` API.md promises, and the SystemError shape
// (code, errno, syscall) for system-call failures.
import { native } from './native.js';

export interface SystemErrorFields {
  code: string;
  errno: number;
  syscall: string;
}

export class UffdHmmError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UffdHmmError';
    this.code = code;
  }
}

export class UffdSystemError extends Error implements SystemErrorFields {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
  /** `context` says what was being done (which pages, which operation); `hint` the next step (default: by errno). */
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

/** ERR_DRIVER_HOOK: a fault hook threw or answered wrongly (the error is err.cause). */
export function faultHookFailed(device: string): string {
  return `driver fault hook of ${device} failed (the error is err.cause); the fault was served by the default policy (migrated back); fix the hook`;
}

/** ERR_DRIVER_HOOK: a pageFree hook threw. */
export function pageFreeHookThrew(device: string): string {
  return `driver pageFree hook of ${device} threw (the error is err.cause); the page was freed anyway; fix the hook`;
}

/** ERR_DRIVER_LOAD; `consequence` says what runs without the driver. */
export function driverLoadFailed(url: string, device: string, consequence: string): string {
  return `could not load driver ${url} of ${device} (the error is err.cause); ${consequence}; check that it names an ES module that imports without error`;
}

/** ERR_BENCH_CHECK: the benchmark's own sanity checks, which only a bug in uffd-hmm can fail. */
export function benchCheckFailed(what: string): UffdHmmError {
  return new UffdHmmError(
    'ERR_BENCH_CHECK',
    `benchmark self-check failed: ${what}; this is a bug in uffd-hmm, please report it with this message and the output of \`npx uffd-hmm info --json\``,
  );
}
