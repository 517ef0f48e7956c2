// The registry path, as a user meets it: the tarball `npm pack` makes, installed offline (from
// npm's cache, with this checkout's lockfile pinning every version) into an empty project that
// imports it from ESM, type-checks a strict consumer on TypeScript 5 and on the current release,
// runs a vitest file with the uffd-hmm/vitest fixtures and matchers, and runs the CLI.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runNode, uffdAvailable, type NodeOutcome } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { name: string; version: string };
const lock = JSON.parse(readFileSync(path.join(root, 'package-lock.json'), 'utf8')) as {
  packages: Record<string, { version?: string; name?: string; resolved?: string; link?: boolean }>;
};
const npmCli =
  process.env.npm_execpath && process.env.npm_execpath.endsWith('.js')
    ? process.env.npm_execpath
    : path.resolve(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js');

// The tarball carries a prebuilt addon only when packed on linux-x64 with glibc (scripts/prebuild.mjs).
const prebuiltHere = process.arch === 'x64' && Boolean((process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime);

const versionOf = (name: string): string => {
  const v = lock.packages[`node_modules/${name}`]?.version;
  if (!v) throw new Error(`${name} is not in package-lock.json`);
  return v;
};

// The consumer: a strict TypeScript program over the main entry, and a vitest file (the same files
// scripts/matrix.mjs checks on every supported Node).
const CONSUMER_TS = readFileSync(path.join(root, 'test', 'fixtures', 'consumer', 'main.ts'), 'utf8');
const CONSUMER_TEST = readFileSync(path.join(root, 'test', 'fixtures', 'consumer', 'consumer.spec.ts'), 'utf8');
const TSCONFIG = {
  compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: false },
};

// Runs with a deadline; npm's own variables from an enclosing `npm test` must not steer the
// consumer's npm (its cache, scripts or prefix).
function run(args: string[], cwd: string, timeoutMs: number): Promise<NodeOutcome> {
  const env: Record<string, string | undefined> = { NO_COLOR: '1', FORCE_COLOR: undefined };
  for (const k of Object.keys(process.env)) if (/^npm_/i.test(k)) env[k] = undefined;
  return runNode(args, { cwd, timeoutMs, env });
}

function ok(o: NodeOutcome, what: string): NodeOutcome {
  expect({ code: o.code, signal: o.signal, timedOut: o.timedOut }, `${what} (${o.ms} ms):\n${o.out}`).toEqual({
    code: 0,
    signal: null,
    timedOut: false,
  });
  return o;
}

describe('the packed tarball, installed offline into an empty project', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'uffd-hmm-pack-'));
  const project = path.join(dir, 'project');
  const tarball = path.join(dir, `${pkg.name}-${pkg.version}.tgz`);
  const installed = path.join(project, 'node_modules', 'uffd-hmm');
  let files: string[] = [];
  let install: NodeOutcome;

  beforeAll(async () => {
    // What `npm pack` runs: prepack (the prebuilt addon), then the packing itself. Its prepare
    // step (tsc) is left out: `npm test` compiled dist/ just before, and other test files are
    // importing it right now.
    try {
      ok(await run([path.join(root, 'scripts', 'prebuild.mjs')], root, 60_000), 'prepack');
      ok(await run([npmCli, 'pack', '--ignore-scripts', '--pack-destination', dir], root, 60_000), 'npm pack');
    } finally {
      ok(await run([path.join(root, 'scripts', 'prebuild.mjs'), '--clean'], root, 20_000), 'postpack');
    }

    // The project: this checkout's versions of TypeScript 5, the current TypeScript, @types/node
    // and vitest, pinned by a lockfile made from this checkout's, so nothing needs the network.
    const consumer = {
      name: 'consumer',
      private: true,
      type: 'module',
      dependencies: { 'uffd-hmm': `file:${tarball}` },
      devDependencies: {
        typescript: versionOf('typescript'),
        'typescript-latest': `npm:typescript@${versionOf('typescript-latest')}`,
        '@types/node': versionOf('@types/node'),
        vitest: versionOf('vitest'),
      },
      // npm 11 runs a dependency's install script only once approved: approve it, so the install
      // script's choice (the prebuilt, no compiler) is what is tested.
      allowScripts: { 'uffd-hmm': true, [`file:${tarball}`]: true },
    };
    mkdirSync(path.join(project, 'types'), { recursive: true });
    mkdirSync(path.join(project, 'test'), { recursive: true });
    writeFileSync(path.join(project, 'package.json'), JSON.stringify(consumer, null, 2));
    const packages: Record<string, unknown> = { '': { name: consumer.name, dependencies: consumer.dependencies, devDependencies: consumer.devDependencies } };
    for (const [k, v] of Object.entries(lock.packages)) {
      if (!k || v.link) continue;
      const name = v.name ?? k.slice(k.lastIndexOf('node_modules/') + 'node_modules/'.length);
      packages[k] = { ...v, resolved: v.resolved ?? `https://registry.npmjs.org/${name}/-/${name.split('/').pop()}-${v.version}.tgz` };
    }
    writeFileSync(path.join(project, 'package-lock.json'), JSON.stringify({ name: consumer.name, lockfileVersion: 3, requires: true, packages }, null, 2));
    writeFileSync(path.join(project, 'types', 'main.ts'), CONSUMER_TS);
    writeFileSync(path.join(project, 'types', 'tsconfig.json'), JSON.stringify({ ...TSCONFIG, include: ['main.ts'] }));
    writeFileSync(path.join(project, 'test', 'device.test.ts'), CONSUMER_TEST);
    writeFileSync(path.join(project, 'test', 'tsconfig.json'), JSON.stringify({ ...TSCONFIG, include: ['device.test.ts'] }));
    install = ok(
      await run([npmCli, 'install', '--offline', '--no-audit', '--no-fund', '--foreground-scripts'], project, 90_000),
      'npm install --offline',
    );
    // What the tarball held, as installed.
    files = (readdirSync(installed, { recursive: true, withFileTypes: true }) as import('node:fs').Dirent[])
      .filter((d) => d.isFile())
      .map((d) => path.relative(installed, path.join(d.parentPath, d.name)));
  }, 200_000);

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('ships the LICENSE, the prebuilt addon, what the README links to, and no source maps without their sources', () => {
    for (const f of ['LICENSE', 'README.md', 'package.json', 'scripts/install.mjs', 'binding.gyp', 'native/addon.cc']) expect(files).toContain(f);
    if (prebuiltHere) expect(files).toContain('prebuilds/linux-x64-glibc/uffd_hmm.node');
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
    // No shipped file points at one the package does not hold (a source map, a declaration map).
    for (const f of files.filter((x) => /\.(js|mjs|d\.ts)$/.test(x))) {
      const refs = [...readFileSync(path.join(installed, f), 'utf8').matchAll(/^\/\/# sourceMappingURL=(\S+)/gm)].map((m) => m[1]);
      for (const ref of refs) expect(files, `${f} references ${ref}`).toContain(path.join(path.dirname(f), ref));
    }
    const readme = readFileSync(path.join(installed, 'README.md'), 'utf8');
    const links = [...readme.matchAll(/\]\(([^)#\s]+)[^)]*\)/g)].map((m) => m[1]).filter((l) => !/^[a-z]+:/.test(l));
    expect(links.length).toBeGreaterThan(0);
    for (const link of links) expect(files.some((f) => f === link || f.startsWith(`${link.replace(/\/$/, '')}/`)), link).toBe(true);
    // The documents and sources a user reads name no development file they do not have.
    const documents = files.filter((x) => /^(docs\/.*\.md|examples\/|native\/|scripts\/|LICENSE)/.test(x));
    expect(documents.length).toBeGreaterThan(10);
    for (const f of documents) {
      const text = readFileSync(path.join(installed, f), 'utf8');
      expect(text, f).not.toMatch(/\bAPI\.md\b|\bSEMANTICS\.md\b|\.\.\/shared\/|\/work\//);
    }
  });

  it.skipIf(!prebuiltHere)('installs without compiling: the install script loads the prebuilt addon', () => {
    expect(install.out).toContain('uffd-hmm: using the prebuilt addon for linux-x64 (glibc)');
    expect(existsSync(path.join(installed, 'build'))).toBe(false);
    expect(existsSync(path.join(installed, 'prebuilds', 'linux-x64-glibc', 'uffd_hmm.node'))).toBe(true);
  });

  it('type-checks a strict consumer on TypeScript 5 and on the current release', async () => {
    const ts5 = path.join(project, 'node_modules', 'typescript', 'bin', 'tsc');
    const tsLatest = path.join(project, 'node_modules', 'typescript-latest', 'bin', 'tsc');
    // skipLibCheck false makes TypeScript 5 check vitest's and Node's declarations too: slow on a
    // loaded 2-core machine, so generous deadlines (TypeScript 7 takes seconds).
    const [mainLatest, latest] = await Promise.all([run([tsLatest, '-p', 'types'], project, 120_000), run([tsLatest, '-p', 'test'], project, 120_000)]);
    const [main5, vitest5] = await Promise.all([run([ts5, '-p', 'types'], project, 240_000), run([ts5, '-p', 'test'], project, 240_000)]);
    ok(main5, 'tsc 5 (main entry)');
    ok(mainLatest, 'tsc latest (main entry)');
    ok(vitest5, 'tsc 5 (uffd-hmm/vitest)');
    ok(latest, 'tsc latest (uffd-hmm/vitest)');
  }, 400_000);

  it.skipIf(!uffdAvailable)('imports from ESM and serves a real fault', async () => {
    const script = `import { Device, Region } from 'uffd-hmm';
const gpu = new Device({ name: 'gpu0', capacity: 4 });
const region = Region.map({ pages: 1 });
region.bytes[7] = 42;
region.migrate(0, 1, gpu);
console.log(JSON.stringify({ kind: region.entry(0).kind, back: region.bytes[7], stats: region.stats().migratedBack }));
await region.close();
await gpu.close();`;
    const o = ok(await run(['--input-type=module', '-e', script], project, 30_000), 'node -e import');
    expect(JSON.parse(o.stdout)).toEqual({ kind: 'device', back: 42, stats: 1 });
  });

  it.skipIf(!uffdAvailable)('runs a vitest file with the uffd-hmm/vitest fixtures and matchers', async () => {
    const vitest = path.join(project, 'node_modules', 'vitest', 'vitest.mjs');
    const o = ok(await run([vitest, 'run', '--root', project], project, 90_000), 'vitest run');
    expect(o.stdout).toMatch(/Tests\s+1 passed \(1\)/);
  }, 120_000);

  it('runs the CLI from node_modules/.bin', async () => {
    const bin = path.join(project, 'node_modules', '.bin', 'uffd-hmm');
    const version = ok(await run([bin, '--version'], project, 20_000), 'uffd-hmm --version');
    expect(version.stdout).toBe(`${pkg.version}\n`);
    const info = await run([bin, 'info'], project, 20_000);
    expect(info.timedOut).toBe(false);
    expect(info.code).toBe(uffdAvailable ? 0 : 1);
    expect(info.stdout).toMatch(/^userfaultfd\s+/m);
  });
});
