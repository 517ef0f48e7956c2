// The job's input and its check, shared by the supervisor (main.mjs) and the worker process
// (job.mjs): page p's bytes are a pure function of p, so the supervisor can re-create lost input.
import { createHash } from 'node:crypto';

/** Pages of input the job must process. */
export const JOB_PAGES = 30;

/** Fills `view` (one page) with page `page`'s input: xorshift32 bytes seeded by the page number. */
export function fillInput(view, page) {
  let x = Math.imul(page + 1, 0x9e3779b1) || 1; // xorshift must not start at 0
  for (let i = 0; i < view.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    view[i] = x & 0xff;
  }
}

/** The job's result for one page: a short SHA-256 of its bytes. */
export function digest(view) {
  return createHash('sha256').update(view).digest('hex').slice(0, 16);
}

/** What the digest of page `page` must be, computed without any device in the way. */
export function expectedDigest(page, pageSize) {
  const view = new Uint8Array(pageSize);
  fillInput(view, page);
  return digest(view);
}
