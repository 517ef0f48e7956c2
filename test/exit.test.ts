// Process exit with regions open, pages on a device and faults in flight is prompt and clean
// (exit code 0): no servicer keeps the process alive, no thread aborts it on the way out.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { SERVICERS, describeUffd } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/exit-with-faults.mjs', import.meta.url));

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
});
