// The runnable answers to the seed review's four questions (docs/REVIEW.md): every
// examples/review/*.mjs runs in a child process and must exit 0, which its own assertions only allow when the evidence holds.
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { expect, it } from 'vitest';
import { describeUffd } from './helpers.js';
import { describeOutcome, runChild } from './fixtures/semantics/run-child.js';

const dir = fileURLToPath(new URL('../examples/review/', import.meta.url));
const examples = readdirSync(dir).filter((f) => f.endsWith('.mjs')).sort();

describeUffd('examples/review', () => {
  it('has the examples docs/REVIEW.md points to', () => {
    expect(examples).toEqual(['device-entry-fault.mjs', 'fork-rss.mjs', 'mprotect.mjs', 'persistent-entry.mjs']);
  });

  for (const file of examples) {
    it.concurrent(`${file} runs to completion and exits 0`, async ({ expect }) => {
      // persistent-entry.mjs watches its entries for 2 s here (its default is 3 s) to keep the suite fast.
      const args = file === 'persistent-entry.mjs' ? ['2'] : [];
      const o = await runChild(path.join(dir, file), args, { timeoutMs: 20_000 });
      expect(o.timedOut, describeOutcome(o)).toBe(false);
      expect({ code: o.code, signal: o.signal }, describeOutcome(o)).toEqual({ code: 0, signal: null });
      expect(o.stdout).toContain('Answer:');
    });
  }
});
