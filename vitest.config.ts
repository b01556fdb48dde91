import { defineConfig } from 'vitest/config';

// The whole suite runs once per database (issue 11): `npm test` runs the `sqlite` project, then the
// `postgres` project, each printing its own summary. TEST_DATABASE tells the tests which one they are on
// (test/support/databases.ts `DATABASE_KINDS`, test/support/stack.ts).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    projects: [
      { extends: true, test: { name: 'sqlite', env: { TEST_DATABASE: 'sqlite' } } },
      {
        extends: true,
        // One embedded PostgreSQL for the run; every test (and every HTTP stack) makes its own database on it.
        test: { name: 'postgres', env: { TEST_DATABASE: 'postgres' }, globalSetup: ['test/support/postgres.global.ts'] },
      },
    ],
  },
});
