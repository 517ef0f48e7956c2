// Fails the whole run, loudly, when userfaultfd is unavailable: a suite that silently skipped
// every real fault would report green while testing nothing. UFFD_HMM_ALLOW_UNAVAILABLE=1 is the
// explicit opt-out that turns the userfaultfd tests into visible skips instead.
import { probe } from 'uffd-hmm';

export default function setup(): void {
  const p = probe();
  if (p.available) return;
  if (process.env.UFFD_HMM_ALLOW_UNAVAILABLE === '1') {
    console.warn(`\nuffd-hmm: userfaultfd unavailable (${p.problem}); userfaultfd tests will be SKIPPED.\n`);
    return;
  }
  throw new Error(
    `userfaultfd is unavailable, so the uffd-hmm test suite cannot run real faults.\n` +
      `  problem: ${p.problem}\n  fix: ${p.fix}\n` +
      `Set UFFD_HMM_ALLOW_UNAVAILABLE=1 to run the rest of the suite with those tests skipped.`,
  );
}
