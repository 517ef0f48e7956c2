// Tests run the built package (dist/) in forked processes: native code and real page faults
// need process isolation, and a crash must take down one file's process, not the runner.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    teardownTimeout: 10_000,
    server: { deps: { external: [/\/dist\//] } },
  },
});
