// Access orders: which page each successive touch hits. Every run of the same pattern uses the
// same order, so runs differ only in who serves the faults.
import type { Pattern } from './types.js';

/** Pages 0..n-1 in the pattern's order; 'random' is a seeded shuffle, the same on every call. */
export function accessOrder(pattern: Pattern, n: number, seed = 0x9e3779b9): Int32Array {
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  if (pattern === 'sequential') return order;
  // Fisher-Yates driven by xorshift32: reproducible without a dependency.
  let s = seed >>> 0 || 1;
  for (let i = n - 1; i > 0; i--) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    const j = s % (i + 1);
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}
