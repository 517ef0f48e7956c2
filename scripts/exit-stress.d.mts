// Types of scripts/exit-stress.mjs's engine, for test/exit-stress.test.ts.
import type { ServicerKind } from '../dist/index.js';

export interface ExitFailure {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** The child's stdout and stderr. */
  out: string;
}

export function childScript(servicer: ServicerKind, ms: number, how: 'exit' | 'end'): string;

export function stressExit(options: {
  servicer: ServicerKind;
  runs: number;
  parallel?: number;
  ms?: number;
  cwd?: string;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}): Promise<{ runs: number; ok: number; failures: ExitFailure[] }>;
