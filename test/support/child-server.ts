import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { startFakeBitrix24, type FakeBitrix24, type FakeBitrix24Options } from '../fakes/bitrix24.js';
import { startFakeChat2Desk, type FakeChat2Desk } from '../fakes/chat2desk.js';
import Database from 'better-sqlite3';
import pg from 'pg';
import { type DatabaseReader, emptyDatabase, postgresRows } from './databases.js';
import { eventually, freePort, stackDatabase, stackEnv, type StackDatabase } from './stack.js';

/**
 * Our server as a child process on the run's database (a SQLite file, or a database of its own on the
 * run's PostgreSQL), for tests that kill it with SIGKILL (kill -9)
 * and start it again on the same database; the fakes run in the test's own process.
 */

const root = fileURLToPath(new URL('../..', import.meta.url));
// node itself with tsx's loader: one process, so SIGKILL really kills the server (the tsx CLI forks a child).
const tsxLoader = pathToFileURL(join(root, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;

export interface Child {
  process: ChildProcess;
  /** What the server printed, stdout and stderr interleaved. */
  output: string[];
}

export function startChild(env: Record<string, string>, cwd = root): Child {
  const output: string[] = [];
  const child = spawn(process.execPath, ['--import', tsxLoader, join(root, 'src', 'index.ts')], {
    cwd,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (chunk) => output.push(String(chunk)));
  child.stderr.on('data', (chunk) => output.push(String(chunk)));
  return { process: child, output };
}

export async function healthy(url: string): Promise<boolean> {
  try {
    return (await fetch(`${url}/healthz`)).status === 200;
  } catch {
    return false;
  }
}

/** SIGKILL: no shutdown code runs, whatever was in flight is cut where it stood. */
export function killHard(child: Child): Promise<void> {
  return new Promise((resolve) => {
    if (child.process.exitCode !== null || child.process.signalCode !== null) return resolve();
    child.process.once('exit', () => resolve());
    child.process.kill('SIGKILL');
  });
}

/** Both fakes and the server as a child process on `databaseFile`, up and healthy (not installed). */
export interface ChildStack {
  b24: FakeBitrix24;
  c2d: FakeChat2Desk;
  server: { url: string };
  database: StackDatabase;
  /**
   * The server's database by hand. On SQLite only while the server is down (the file is held by
   * one process): each statement opens the file and closes it again.
   */
  db: DatabaseReader;
  child: Child;
  /** kill -9 the server. */
  kill(): Promise<void>;
  /**
   * kill -9 if still running, then start it again on the same database and wait until it is
   * healthy (on PostgreSQL with the killed process's job leases run out).
   */
  restart(): Promise<void>;
  close(): Promise<void>;
}

export async function startChildStack(options: { env?: Record<string, string>; b24?: FakeBitrix24Options } = {}): Promise<ChildStack> {
  const b24 = await startFakeBitrix24(options.b24);
  const c2d = await startFakeChat2Desk();
  const dir = mkdtempSync(join(tmpdir(), 'c2d-b24-child-'));
  const port = await freePort();
  const database = await stackDatabase(dir);
  const env = stackEnv(b24, c2d, port, dir, { LOG_LEVEL: 'info', DATABASE_URL: database.url, ...options.env });
  const url = `http://127.0.0.1:${port}`;
  const reader = childReader(database, join(dir, 'app.db'));
  const stack: ChildStack = {
    b24,
    c2d,
    server: { url },
    database,
    db: reader,
    child: startChild(env),
    kill: () => killHard(stack.child),
    async restart() {
      await killHard(stack.child);
      // On PostgreSQL a starting process takes up only the running jobs whose lease ran out: a live
      // lease may be another process's (src/jobs/worker.ts). The killed process's leases would run
      // out after LEASE_MS (src/jobs/dispatcher.ts); moved, rather than waited out.
      if (database.kind === 'postgres') await reader.run("update jobs set lease_until = ? where state = 'running'", Date.now() - 1);
      stack.child = startChild(env);
      await eventually(() => healthy(url), 20_000, 'server back');
    },
    async close() {
      await killHard(stack.child);
      await reader.close();
      await Promise.all([b24.close(), c2d.close(), database.drop()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await eventually(() => healthy(url), 20_000, 'server up');
  } catch (error) {
    await stack.close();
    throw error;
  }
  return stack;
}

function childReader(database: StackDatabase, file: string): DatabaseReader & { close(): Promise<void> } {
  if (database.kind === 'sqlite') {
    const rows = async <T>(query: string, ...params: unknown[]): Promise<T[]> => {
      const sqlite = new Database(file);
      try {
        const statement = sqlite.prepare(query);
        if (statement.reader) return statement.all(...params) as T[];
        statement.run(...params);
        return [];
      } finally {
        sqlite.close();
      }
    };
    return {
      rows,
      row: async (query, ...params) => (await rows(query, ...params))[0] as never,
      run: async (query, ...params) => void (await rows(query, ...params)),
      close: async () => undefined,
    };
  }
  let pool: pg.Pool | undefined;
  const rows = async <T>(query: string, ...params: unknown[]): Promise<T[]> => {
    pool ??= new pg.Pool({ connectionString: database.url, max: 1 });
    return postgresRows<T>(pool, query, params);
  };
  return {
    rows,
    row: async (query, ...params) => (await rows(query, ...params))[0] as never,
    run: async (query, ...params) => void (await rows(query, ...params)),
    close: async () => void (await pool?.end()),
  };
}

/** Several server processes on one PostgreSQL database, behind no balancer: a test spreads its calls over `urls`. */
export interface ChildProcesses {
  b24: FakeBitrix24;
  c2d: FakeChat2Desk;
  /** The first process: the one the portal installs through (its PUBLIC_URL is in the robots' handlers). */
  server: { url: string };
  urls: string[];
  children: Child[];
  /** kill -9 process `index`. */
  kill(index: number): Promise<void>;
  close(): Promise<void>;
}

/** Both fakes, a fresh PostgreSQL database (`emptyDatabase`) and `count` server processes on it, each up and healthy. */
export async function startChildProcesses(count: number, options: { env?: Record<string, string>; b24?: FakeBitrix24Options } = {}): Promise<ChildProcesses> {
  const b24 = await startFakeBitrix24(options.b24);
  const c2d = await startFakeChat2Desk();
  const database = await emptyDatabase();
  const dir = mkdtempSync(join(tmpdir(), 'c2d-b24-processes-'));
  const ports = await Promise.all(Array.from({ length: count }, () => freePort()));
  const urls = ports.map((port) => `http://127.0.0.1:${port}`);
  const children: Child[] = [];
  const stack: ChildProcesses = {
    b24,
    c2d,
    server: { url: urls[0]! },
    urls,
    children,
    kill: (index) => killHard(children[index]!),
    async close() {
      await Promise.all(children.map((child) => killHard(child)));
      await Promise.all([b24.close(), c2d.close()]);
      await database.drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    for (const port of ports) {
      children.push(startChild(stackEnv(b24, c2d, port, dir, { LOG_LEVEL: 'info', DATABASE_URL: database.url, ...options.env })));
      // One after another: the first applies the migrations, the others find them applied.
      await eventually(() => healthy(`http://127.0.0.1:${port}`), 20_000, `server on port ${port} up`);
    }
  } catch (error) {
    await stack.close();
    throw error;
  }
  return stack;
}
