// Host facts: what this machine charges every program, with or without userfaultfd (a null
// system call, a first touch of fresh memory, the kernel's first read of a page user space wrote).
// Hosts of one machine kind differ several-fold in each, so a reader needs them to tell a slow host
// from a slow servicer.
import { addon } from './addon.js';
import { withPlacement } from './placement.js';
import { hostKindOf } from './provenance.js';
import type { HostFacts } from './types.js';

/** Measured on `cpu`, as the one-CPU runs are; well under a second. */
export function measureHost(cpu: number): HostFacts {
  const out = new Float64Array(5);
  withPlacement('one-cpu', cpu, () => addon.benchHost(out));
  return {
    syscall_ns: out[0],
    plain_touch_us: out[1],
    plain_write_us: out[2],
    copy_fresh_source_us: out[3],
    copy_us: out[4],
    cpu,
    ...hostKindOf(out[0], out[3], out[4]),
  };
}
