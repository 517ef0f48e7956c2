// Bad workload input (a pattern, a trace file, an option out of range): a RangeError with a code,
// as the library's other argument errors are. The CLI reports it as a usage error (exit 2).

export class BenchInputError extends RangeError {
  readonly code = 'ERR_INVALID_ARG_VALUE';
  constructor(message: string) {
    super(message);
    this.name = 'RangeError';
  }
}

export function benchUsage(message: string): BenchInputError {
  return new BenchInputError(message);
}
