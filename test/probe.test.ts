// probe() reports what the kernel offers; on this machine every feature the library uses.
import { expect, it } from 'vitest';
import { probe } from 'uffd-hmm';
import { describeUffd } from './helpers.js';

describeUffd('probe', () => {
  it('reports availability, the way in, and the kernel', () => {
    const p = probe();
    expect(p.available).toBe(true);
    expect(['dev-userfaultfd', 'syscall']).toContain(p.via);
    expect(typeof p.userModeOnly).toBe('boolean');
    expect(p.kernel).toMatch(/^\d+\.\d+/);
    for (const key of ['wp', 'wpAsync', 'move', 'poison', 'zeropage', 'eventFork', 'eventRemove', 'eventUnmap', 'eventRemap', 'threadId']) {
      expect(typeof p.features[key as keyof typeof p.features]).toBe('boolean');
    }
    // The core needs write-protect faults on anonymous memory.
    expect(p.features.wp).toBe(true);
    // Root has CAP_SYS_PTRACE, which EVENT_FORK (region.fork) needs; as another user probe() says
    // false there (test/privileges.test.ts).
    if (process.geteuid?.() === 0) expect(p.features.eventFork).toBe(true);
    if (!p.userModeOnly && p.features.eventFork) {
      expect(p.problem).toBeUndefined();
      expect(p.fix).toBeUndefined();
    }
  });
});
