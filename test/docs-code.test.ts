// The documentation a package user follows: every TypeScript or JavaScript code block in README.md,
// docs/ and the examples' READMEs type-checks as written (strict TypeScript 7 for ts, checkJs for
// js), against the package's own exports; and every shell block in those shipped files that needs
// a clone of the source tree (npm run, npm ci, node scripts/…) says so just above it.
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const docs = [
  'README.md',
  ...readdirSync(path.join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`),
  ...readdirSync(path.join(root, 'examples')).flatMap((d) => (readdirSync(path.join(root, 'examples', d)).includes('README.md') ? [`examples/${d}/README.md`] : [])),
];

interface Block {
  file: string;
  line: number;
  lang: string;
  code: string;
  /** The prose just above the block. */
  before: string;
}

function blocks(file: string): Block[] {
  const lines = readFileSync(path.join(root, file), 'utf8').split('\n');
  const out: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\w*)\s*$/.exec(lines[i]);
    if (!open) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]); i++) body.push(lines[i]);
    out.push({ file, line: start + 1, lang: open[1], code: body.join('\n'), before: lines.slice(Math.max(0, start - 4), start).join('\n') });
  }
  return out;
}
const all = docs.flatMap(blocks);
const code = all.filter((b) => ['ts', 'typescript', 'js', 'javascript', 'mjs'].includes(b.lang));

const dir = path.join(root, '.scratch', `docs-code-${process.pid}`);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// A block is a module as written when it exports (a driver module); otherwise its statements run
// inside an async function, after its imports, so that a fragment may use the names the docs
// around it set up (declared here) and top-level await works.
const PRELUDE_TS = `import type { Device as __Device, Region as __Region, FaultTrace as __FaultTrace } from 'uffd-hmm';
declare const region: __Region;
declare const gpu: __Device;
declare const device: __Device;
declare const trace: __FaultTrace;
`;
const PRELUDE_JS = `/** @type {import('uffd-hmm').Region} */ let region;
/** @type {import('uffd-hmm').Device} */ let gpu;
/** @type {import('uffd-hmm').Device} */ let device;
void region, gpu, device;
`;

function moduleOf(b: Block): string {
  const js = !b.lang.startsWith('t');
  if (/^export /m.test(b.code)) return b.code;
  const imports: string[] = [];
  const body: string[] = [];
  const lines = b.code.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (/^declare /.test(lines[i])) {
      imports.push(lines[i]);
    } else if (/^import /.test(lines[i])) {
      let stmt = lines[i];
      while (!/;\s*(\/\/.*)?$/.test(stmt) && i + 1 < lines.length) stmt += `\n${lines[++i]}`;
      imports.push(stmt);
    } else {
      body.push(lines[i]);
    }
  }
  return `${imports.join('\n')}\n${js ? PRELUDE_JS : PRELUDE_TS}\nexport async function block() {\n${body.join('\n')}\n}\n`;
}

function tsc(project: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(root, 'node_modules', 'typescript-latest', 'bin', 'tsc'), '-p', project], { cwd: root, timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` });
    });
  });
}

describe('code blocks in README.md, docs/ and examples/*/README.md', () => {
  it('finds the blocks (README, DRIVERS, GUIDE, PERFORMANCE)', () => {
    const files = new Set(code.map((b) => b.file));
    for (const f of ['README.md', 'docs/DRIVERS.md', 'docs/GUIDE.md', 'docs/PERFORMANCE.md']) expect(files, f).toContain(f);
    expect(code.length).toBeGreaterThan(10);
  });

  it('each type-checks as written', async () => {
    mkdirSync(dir, { recursive: true });
    const names = new Map<string, Block>();
    code.forEach((b, i) => {
      const name = `${b.file.replace(/[/.]/g, '_')}_L${b.line}_${i}.${b.lang.startsWith('t') ? 'ts' : 'mjs'}`;
      names.set(name, b);
      writeFileSync(path.join(dir, name), moduleOf(b));
    });
    const base = { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', noEmit: true, skipLibCheck: false, types: ['node'] };
    writeFileSync(path.join(dir, 'tsconfig.ts.json'), JSON.stringify({ compilerOptions: { ...base, strict: true }, include: ['*.ts'] }));
    writeFileSync(path.join(dir, 'tsconfig.js.json'), JSON.stringify({ compilerOptions: { ...base, allowJs: true, checkJs: true, strict: false }, include: ['*.mjs'] }));
    const problems: string[] = [];
    for (const project of ['tsconfig.ts.json', 'tsconfig.js.json']) {
      const r = await tsc(path.join(dir, project));
      for (const line of r.out.split('\n').filter((l) => /error TS\d+/.test(l))) {
        const m = /([\w.-]+\.(?:ts|mjs))\((\d+),\d+\): (.*)$/.exec(line);
        const b = m ? names.get(m[1]) : undefined;
        problems.push(b ? `${b.file}, the block at line ${b.line}: ${m![3]}` : line);
      }
      if (r.code !== 0 && problems.length === 0) problems.push(r.out);
    }
    expect(problems, problems.join('\n')).toEqual([]);
  }, 150_000);
});

describe('shell commands in the shipped documents', () => {
  it('that need a clone of the source tree say so', () => {
    const cloneOnly = /\bnpm (run|ci|test)\b|\bnode scripts\/|\bnpx tsc\b|\bnpx node-gyp\b/;
    const sh = all.filter((b) => ['sh', 'bash', 'shell', ''].includes(b.lang) && cloneOnly.test(b.code));
    const unmarked = sh.filter((b) => !/clone|source tree/i.test(b.before)).map((b) => `${b.file}:${b.line}`);
    expect(unmarked).toEqual([]);
  });

  it('name example files as an installed package has them', () => {
    for (const f of docs.filter((d) => d.startsWith('examples/'))) {
      for (const b of blocks(f).filter((x) => ['sh', 'bash', ''].includes(x.lang))) {
        for (const m of b.code.matchAll(/\bexamples\/[\w./-]+/g)) {
          expect(b.code.slice(Math.max(0, m.index! - 'node_modules/uffd-hmm/'.length), m.index), `${f}:${b.line}`).toBe('node_modules/uffd-hmm/');
        }
      }
    }
  });
});
