// A driver's refusal of a fault taken inside a system call, racing another thread's access to the
// same page (native/refusal.cc, fault.cc refuse). The kernel holds the page lock across
// migrate_to_ram: another thread waits for it, then faults and asks the driver for itself; the
// refusal fails only the system call that was refused. These run in child processes: the failure
// they guard against is a SIGBUS.
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { describeUffd } from './helpers.js';
import { describeOutcome, jsonLines, runChild } from './fixtures/semantics/run-child.js';

const child = fileURLToPath(new URL('./fixtures/refusal-races/child.mjs', import.meta.url));

describeUffd('a refusal inside a system call fails that call only', () => {
  for (const scenario of ['waiting', 'fresh'] as const) {
    const when = scenario === 'waiting' ? 'waiting on the page as the refusal comes' : 'touching the page just after the refusal';
    it.concurrent(`another thread ${when} reads the page (the driver migrates its access), and the write gets EFAULT`, async () => {
      const o = await runChild(child, [scenario], { timeoutMs: 20_000 });
      expect(o.timedOut, describeOutcome(o)).toBe(false);
      expect({ code: o.code, signal: o.signal }, describeOutcome(o)).toEqual({ code: 0, signal: null });
      expect(jsonLines(o.stdout), describeOutcome(o)).toEqual([{ value: 0x5a }, { write: 'EFAULT' }, { a: true, b: true }]);
    });
  }
});

describeUffd('a takeover while a refusal inside a system call is in progress', () => {
  it.concurrent('leaves the page held for the refusal; the watchdog reads its zap: EFAULT, then the page reads back', async () => {
    const o = await runChild(child, ['takeover'], { timeoutMs: 20_000 });
    expect(o.timedOut, describeOutcome(o)).toBe(false);
    expect({ code: o.code, signal: o.signal }, describeOutcome(o)).toEqual({ code: 0, signal: null });
    expect(jsonLines(o.stdout), describeOutcome(o)).toEqual([{ write: 'EFAULT' }, { value: 0x5a }, { page1: 0x5a, guarded: true }, { a: true, b: true }]);
  });
});

// The refusal travels to the faulting thread as a queued real-time signal, which the kernel refuses
// (EAGAIN) once the user's queued signals reach RLIMIT_SIGPENDING; the kernel's own SIGBUS for a
// refused access is never refused. With the limit at 0 every queued real-time signal fails.
const sigbusChild = fileURLToPath(new URL('./fixtures/semantics/sigbus-child.mjs', import.meta.url));
const noQueuedSignals = { wrapper: ['prlimit', '--sigpending=0'] };

describeUffd('a refusal whose signal cannot be queued (RLIMIT_SIGPENDING reached)', () => {
  it.concurrent('a refused CPU read still dies of SIGBUS, not a loop of asks', async () => {
    const o = await runChild(sigbusChild, ['refuse-all.mjs', 'read'], noQueuedSignals);
    expect(o.timedOut, describeOutcome(o)).toBe(false);
    expect(o.signal, describeOutcome(o)).toBe('SIGBUS');
    expect(o.stdout).toContain('TOUCH 2 read');
    expect(o.stdout).not.toContain('VALUE');
  });

  it.concurrent('a refusal inside write(2) that cannot be delivered is served as a migration, reported, and leaves no poison: the next touch reads the page', async () => {
    const o = await runChild(sigbusChild, ['refuse-first.mjs', 'syscall'], noQueuedSignals);
    expect(o.timedOut, describeOutcome(o)).toBe(false);
    expect({ code: o.code, signal: o.signal }, describeOutcome(o)).toEqual({ code: 0, signal: null });
    // No signal could carry the refusal: the write went through, the page came back, and the
    // driver's error says why (a hook error, as for a thread that blocks the signal).
    expect(o.stdout).toContain('{"code":null,"entry":"present"');
    expect(o.stderr).toMatch(/ERR_DRIVER_HOOK.*cannot be failed here/s);
    expect(o.stdout).toContain(`VALUE ${(0 * 131 + 5 * 7 + 1) & 0xff}`);
    expect(o.stdout).toContain('SURVIVED');
  });
});
