import { defineConfig } from 'vitest/config';

// Unit tests need no sockets. Integration tests run against real PostgreSQL: one shared local
// cluster is built once per run (globalSetup) for the files that do not break nodes; files that
// kill or promote nodes build their own. Files run two at a time on the 2-core CI machine.
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 180_000,
    pool: 'forks',
    maxWorkers: 2,
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/support/cluster-global-setup.ts'],
        },
      },
    ],
  },
});
