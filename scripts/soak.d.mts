// Types of scripts/soak.mjs's churn engine, for test/churn.test.ts.
import type { ServicerKind } from '../dist/index.js';

export interface ChurnOptions {
  servicer: ServicerKind;
  ops: number;
  pages?: number;
  threads?: number;
  seed?: number;
  capacity?: number;
  /** Wrecks the counters on purpose, to show that the check reports it. */
  sabotage?: boolean;
  deadlineMs?: number;
  progress?: (done: number) => void;
}

export interface ChurnResult {
  servicer: ServicerKind;
  ops: number;
  mismatches: string[];
  errors: string[];
  touches: number;
  reads: number;
  faults: number;
  /** Operations of each kind the churn made. */
  counts: Record<"migrate" | "migrateToRam" | "discard" | "mprotect" | "write" | "check" | "skipped", number>;
  elapsedMs: number;
  opsPerSec: number;
}

export function runChurn(options: ChurnOptions): Promise<ChurnResult>;
