import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from './embedded-postgres.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The test run's PostgreSQL server (a maintenance URL: each test file makes its own database, test/support/databases.ts). */
    postgresUrl: string;
  }
}

/** One real PostgreSQL for the whole test run (test/support/embedded-postgres.ts), stopped at the end. */
export default async function setup(project: TestProject) {
  const postgres = await startEmbeddedPostgres();
  project.provide('postgresUrl', postgres.url);
  return () => postgres.stop();
}
