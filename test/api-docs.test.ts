// The API reference (issue #8): TypeDoc builds it from the TypeScript source of both package
// exports, and every public symbol must carry documentation. Runs typedoc as `npm run docs` does,
// with its validation forced on, but writes nothing (--emit none).
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const typedocBin = path.join(root, 'node_modules', 'typedoc', 'bin', 'typedoc');

interface Run {
  code: number | null;
  signal: string | null;
  output: string;
}

function typedoc(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [typedocBin, ...args],
      // The child gets its own deadline below the test's, so a hung typedoc is killed, not leaked.
      { cwd: root, timeout: 100_000, killSignal: 'SIGKILL', maxBuffer: 16 << 20, env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' } },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: number | string; signal?: string }) | null;
        resolve({
          code: e ? (typeof e.code === 'number' ? e.code : null) : 0,
          signal: e?.signal ?? null,
          output: `${stdout}${stderr}`.replace(/\x1b\[[0-9;]*m/g, ''),
        });
      },
    );
  });
}

it('documents the entry points package.json exports, not a subset', () => {
  // typedoc.json has // comments (typedoc reads it as JSONC); only whole-line ones, so strip those.
  const config = JSON.parse(readFileSync(path.join(root, 'typedoc.json'), 'utf8').replace(/^\s*\/\/.*$/gm, '')) as {
    entryPoints: string[];
  };
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as {
    exports: Record<string, string | { default: string }>;
  };
  const fromExports = Object.values(pkg.exports)
    .map((e) => (typeof e === 'string' ? e : e.default))
    .filter((file) => file.startsWith('./dist/') && file.endsWith('.js'))
    .map((file) => file.replace(/^\.\/dist\//, 'lib/').replace(/\.js$/, '.ts'));
  expect([...config.entryPoints].sort()).toEqual(fromExports.sort());
});

it(
  'builds the API reference with no undocumented public symbol, broken link or missing export',
  { timeout: 120_000 },
  async () => {
    const run = await typedoc([
      '--emit',
      'none',
      '--treatWarningsAsErrors',
      '--validation.notDocumented',
      '--validation.notExported',
      '--validation.invalidLink',
    ]);
    const problems = run.output
      .split('\n')
      .filter((line) => /\[(warning|error)\]/.test(line) && !/Found \d+ errors? and \d+ warnings?/.test(line))
      .map((line) => line.replace(/^\s*\[(warning|error)\]\s*/, ''));
    const undocumented = problems.filter((line) => line.includes('does not have any documentation'));
    expect(
      undocumented,
      `${undocumented.length} public symbol(s) without documentation: add a /** … */ comment to each\n  ${undocumented.join('\n  ')}\n`,
    ).toEqual([]);
    expect(problems, `typedoc reported:\n  ${problems.join('\n  ')}\n`).toEqual([]);
    expect({ code: run.code, signal: run.signal }, run.output).toEqual({ code: 0, signal: null });
  },
);
