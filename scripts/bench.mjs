#!/usr/bin/env node
// The benchmark without the CLI front: `node scripts/bench.mjs [bench options]` runs the same
// code as `uffd-hmm bench` (build first: npx node-gyp build && npx tsc -p tsconfig.json).
import { benchCommand } from '../dist/bench/command.js';
import { UsageError } from '../dist/bench/args.js';

let code;
try {
  code = await benchCommand(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`bench: ${e.message}\n`);
  code = e instanceof UsageError ? 2 : 1;
}
// Exit once output is flushed, as the CLI does: no servicer handle may hold the process open.
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
