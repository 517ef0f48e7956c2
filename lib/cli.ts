#!/usr/bin/env node
// The `uffd-hmm` command: `info` shows what this machine's userfaultfd can do, `bench` measures
// fault latency of every servicer against a raw C handler. Usage errors exit 2, failures (and
// `info` finding no userfaultfd) 1.
import { readFileSync } from 'node:fs';

import { UsageError, flag, parse } from './bench/args.js';
import { BENCH_USAGE } from './bench/command.js';
import type { Probe } from './probe.js';

const USAGE = `usage: uffd-hmm <command> [options]

Linux HMM device-private memory emulated in user space on real userfaultfd page faults.

commands:
  info [--json]   can this process use userfaultfd, in which mode, with which features
  bench           fault-latency benchmark of every servicer against a raw C handler
                  (uffd-hmm bench --help for its options)

options:
  -h, --help      this text
  -v, --version   the package version
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function formatProbe(p: Probe): string {
  const rows: Array<[string, string]> = [
    ['userfaultfd', p.available ? `available (via ${p.via === 'dev-userfaultfd' ? '/dev/userfaultfd' : 'the userfaultfd(2) system call'})` : 'NOT available'],
    ['kernel', p.kernel],
  ];
  if (p.available) {
    rows.push([
      'faults served',
      p.userModeOnly
        ? 'user mode only: system calls through device pages fail with EFAULT'
        : 'user and kernel mode (system calls through device pages work)',
    ]);
  }
  if (p.problem) rows.push(['problem', p.problem]);
  if (p.fix) rows.push(['fix', p.fix]);
  const lines = rows.map(([k, v]) => `${k.padEnd(14)} ${v}`);
  lines.push('features');
  for (const [name, on] of Object.entries(p.features)) lines.push(`  ${name.padEnd(12)} ${on ? 'yes' : 'no'}`);
  return lines.join('\n') + '\n';
}

async function info(argv: string[]): Promise<number> {
  const args = parse(argv, { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, 0);
  if (flag(args, 'help')) {
    process.stdout.write(
      'usage: uffd-hmm info [--json]\n\nprobe() as a table, or with --json the Probe object.\n' +
        'Exits 0 when this process can use userfaultfd, 1 when it cannot.\n',
    );
    return 0;
  }
  const { probe } = await import('./probe.js');
  const p = probe();
  process.stdout.write(flag(args, 'json') ? JSON.stringify(p, null, 2) + '\n' : formatProbe(p));
  return p.available ? 0 : 1;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'info':
        return await info(rest);
      case 'bench': {
        const { benchCommand } = await import('./bench/command.js');
        return await benchCommand(rest);
      }
      case '-v':
      case '--version':
        process.stdout.write(`${version()}\n`);
        return 0;
      case '-h':
      case '--help':
      case 'help':
        process.stdout.write(command === 'help' && rest[0] === 'bench' ? BENCH_USAGE : USAGE);
        return 0;
      case undefined:
        process.stderr.write(USAGE);
        return 2;
      default:
        throw new UsageError(command.startsWith('-') ? `unknown option '${command}'` : `unknown command '${command}'`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`uffd-hmm: ${e.message}\nRun 'uffd-hmm --help' for usage.\n`);
      return 2;
    }
    const err = e as Error & { code?: string };
    // Messages that already start with the package's name ("uffd-hmm could not load …") keep it once.
    const text = err.message.startsWith('uffd-hmm ') ? err.message : `uffd-hmm: ${err.message}`;
    process.stderr.write(`${text}${err.code ? ` [${err.code}]` : ''}\n`);
    if (process.env.UFFD_HMM_DEBUG) process.stderr.write(`${err.stack}\n`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
process.exitCode = code;
// A finished command exits once its output is flushed: a benchmark must not hang on a handle
// some servicer left referenced (as the worker servicer's message port once did).
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
