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
  constructor(negErrno: number, syscall: string, context?: string) {
    const errno = negErrno < 0 ? negErrno : -negErrno;
    const code = native.errnoName(-errno);
    super(`${syscall} failed: ${code}${context ? ` (${context})` : ''}`);
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
export function check(rc: number, syscall: string, context?: string): void {
  if (rc < 0) throw new UffdSystemError(rc, syscall, context);
}
