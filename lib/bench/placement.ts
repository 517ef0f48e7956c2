// CPU placement for a run. On this kind of VM a wake-up across vCPUs costs more than the fault
// itself, so where the faulting thread and its servicer sit decides the result.
import { native } from '../native.js';
import type { Placement } from './types.js';

/**
 * Runs `fn` with every thread of the process on `cpu` ('one-cpu') or untouched ('any'), then puts
 * every thread back where the calling thread was.
 */
export function withPlacement<T>(placement: Placement, cpu: number, fn: () => T): T {
  if (placement === 'any') return fn();
  const before = native.benchSetAffinity(Int32Array.of(cpu));
  try {
    return fn();
  } finally {
    native.benchSetAffinity(before);
  }
}
