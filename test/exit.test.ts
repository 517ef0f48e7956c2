// Process exit with regions open, pages on a device and faults in flight is prompt and clean
// (exit code 0): no servicer keeps the process alive, no thread aborts it on the way out. The same
// holds when a worker thread that owns regions ends while the process lives on.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { SERVICERS, describeUffd } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/exit-with-faults.mjs', import.meta.url));
const workerEnd = fileURLToPath(new URL('./fixtures/worker-env-end.mjs', import.meta.url));

describeUffd('process exit', () => {
  it.each(SERVICERS)('exits promptly with code 0 while native threads fault (%s servicer)', (servicer) => {
    const started = Date.now();
    const res = spawnSync(process.execPath, [fixture, servicer], { timeout: 15_000, encoding: 'utf8' });
    expect(res.error).toBeUndefined();
    expect(res.stderr).toBe('');
    expect(res.signal).toBeNull();
    expect(res.status).toBe(0);
    expect(res.stdout).toContain('leaving');
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it.each(SERVICERS)(
    'a worker thread that ends with faults in flight stops every native thread that wrote its tables (%s servicer)',
    (servicer) => {
      // The worker's buffers (region and device tables) are freed when it ends: a servicer or guard
      // thread left running would write freed memory. Its thread count tells whether one is left.
      const res = spawnSync(process.execPath, [workerEnd, servicer], { timeout: 20_000, killSignal: 'SIGKILL', encoding: 'utf8' });
      expect(res.error).toBeUndefined();
      expect({ status: res.status, signal: res.signal }, res.stderr).toEqual({ status: 0, signal: null });
      const { before, after } = JSON.parse(res.stdout) as { before: number; after: number };
      expect(after).toBe(before);
    },
  );
});
