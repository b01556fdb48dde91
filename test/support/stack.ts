import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { DeliveryHandler } from '../../src/chat2desk/delivery-handlers.js';
import type { Clock } from '../../src/clock.js';
import { loadConfig, type Config } from '../../src/config.js';
import type { JobKind } from '../../src/jobs/kinds.js';
import type { LiveTimers } from '../../src/live/stream.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';
import pg from 'pg';
import { databaseReader, emptyDatabase, TEST_DATABASE, type DatabaseKind, type DatabaseReader } from './databases.js';
import { startFakeBitrix24, type FakeBitrix24, type FakeBitrix24Options } from '../fakes/bitrix24.js';
import { startFakeChat2Desk, type FakeChat2Desk, type FakeChat2DeskOptions } from '../fakes/chat2desk.js';

export const APP_SECRET = 'test-app-secret-0123456789abcdef';

/**
 * The database a stack's server runs on: the test run's (TEST_DATABASE, vitest.config.ts) — a SQLite
 * file in the stack's directory, or a fresh database on the run's PostgreSQL, dropped by `drop`.
 */
export interface StackDatabase {
  kind: DatabaseKind;
  /** DATABASE_URL for the server. */
  url: string;
  drop(): Promise<void>;
}

export async function stackDatabase(dir: string): Promise<StackDatabase> {
  if (TEST_DATABASE === 'sqlite') return { kind: 'sqlite', url: `file:${join(dir, 'app.db')}`, drop: async () => undefined };
  const database = await emptyDatabase();
  return { kind: 'postgres', url: database.url, drop: database.drop };
}

/**
 * Reads and writes by hand on a stack's database, whichever it is (test/support/databases.ts).
 * On SQLite through the running server's own connection (the file is held by one process); on
 * PostgreSQL through a small pool of its own, which outlives the server's restarts.
 */
export function stackReader(database: StackDatabase, server: () => RunningServer): DatabaseReader & { kind: DatabaseKind; close(): Promise<void> } {
  if (database.kind === 'sqlite') {
    const current = () => databaseReader(server().database);
    return {
      kind: 'sqlite',
      rows: (query, ...params) => current().rows(query, ...params),
      row: (query, ...params) => current().row(query, ...params),
      run: (query, ...params) => current().run(query, ...params),
      close: async () => undefined,
    };
  }
  const pool = new pg.Pool({ connectionString: database.url, max: 2 });
  const reader = databaseReader({ kind: 'postgres', pool } as never);
  return { kind: 'postgres', ...reader, close: () => pool.end() };
}

/** Everything a behaviour test needs: both fakes, our server on a real port, a real database of the run's kind. */
export interface Stack {
  b24: FakeBitrix24;
  c2d: FakeChat2Desk;
  server: RunningServer;
  /** The server's database, read and written by hand (`?` parameters on either database). */
  db: DatabaseReader & { kind: DatabaseKind };
  config: Config;
  env: Record<string, string>;
  dir: string;
  logs: string[];
  restart(): Promise<void>;
  close(): Promise<void>;
}

export interface StackOptions {
  b24?: FakeBitrix24Options;
  c2d?: FakeChat2DeskOptions;
  env?: Record<string, string>;
  reportLingerMs?: number;
  /** The server's outgoing fetch, for a test that must see when an answer reached our code. */
  fetch?: typeof fetch;
  /** Where the server reads the time (test/support/clock.ts moves it forward instead of sleeping). */
  clock?: Clock;
  /** Job kinds registered only in this test, and the ordering-key hold, passed to startServer. */
  extraKinds?: JobKind[];
  orderingHoldMs?: number;
  /** How the protocol clients wait before retrying a transient failure (test/support/clock.ts `noRetryWait`). */
  retrySleep?: (ms: number) => Promise<void>;
  /** Chat2Desk delivery handlers registered only in this test, passed to startServer. */
  deliveryHandlers?: DeliveryHandler[];
  /** How live streams wait between pings (src/live/stream.ts), passed to startServer. */
  liveTimers?: LiveTimers;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

export function stackEnv(b24: FakeBitrix24, c2d: FakeChat2Desk, port: number, dir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PORT: String(port),
    PUBLIC_URL: `http://127.0.0.1:${port}`,
    DATABASE_URL: `file:${join(dir, 'app.db')}`,
    B24_CLIENT_ID: b24.clientId,
    B24_CLIENT_SECRET: b24.clientSecret,
    B24_OAUTH_URL: b24.oauthUrl,
    CHAT2DESK_API_URL: c2d.url,
    APP_SECRET,
    LOG_LEVEL: 'debug',
    // The production default (300/min) would make every test wait on the client-side bucket.
    CHAT2DESK_REQUESTS_PER_MINUTE: '60000',
    // The fakes and the tests' file servers listen on 127.0.0.1 over http; any other loopback name
    // (localhost) is still refused as production would (src/outside-fetch.ts).
    OUTSIDE_FETCH_ALLOW_HOSTS: '127.0.0.1',
    ...extra,
  };
}

export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const dir = mkdtempSync(join(tmpdir(), 'c2d-b24-test-'));
  const b24 = await startFakeBitrix24(options.b24);
  const c2d = await startFakeChat2Desk(options.c2d);
  const port = await freePort();
  const database = await stackDatabase(dir);
  const env = stackEnv(b24, c2d, port, dir, { DATABASE_URL: database.url, ...options.env });
  const config = loadConfig(env);
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      logs.push(String(chunk));
      done();
    },
  });
  const log = createLogger(config.logLevel, sink);
  const boot = async (): Promise<RunningServer> => {
    const server = await startServer(config, log, {
      hostname: '127.0.0.1',
      reportLingerMs: options.reportLingerMs ?? 50,
      fetch: options.fetch,
      clock: options.clock,
      extraKinds: options.extraKinds,
      orderingHoldMs: options.orderingHoldMs,
      retrySleep: options.retrySleep,
      deliveryHandlers: options.deliveryHandlers,
      liveTimers: options.liveTimers,
    });
    return server;
  };
  const server = await boot();
  const db = stackReader(database, () => stack.server);
  const stack: Stack = {
    b24,
    c2d,
    config,
    env,
    dir,
    logs,
    server,
    db,
    async restart() {
      await stack.server.close();
      stack.server = await boot();
    },
    async close() {
      await stack.server.close().catch(() => undefined);
      await db.close();
      await Promise.all([b24.close(), c2d.close(), database.drop()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return stack;
}

export function postForm(url: string, body: string, query = ''): Promise<Response> {
  return fetch(query ? `${url}?${query}` : url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body,
  });
}

/** The parts of a stack the set-up helpers need, so they also drive a server in a child process. */
export type Reachable = Pick<Stack, 'b24' | 'c2d'> & { server: { url: string } };

/** Installs the app into the fake portal through the server-side install callback. */
export async function install(stack: Reachable): Promise<void> {
  const response = await postForm(`${stack.server.url}/install`, stack.b24.installEventBody());
  if (response.status !== 200) throw new Error(`install failed: ${response.status} ${await response.text()}`);
  stack.b24.installFinish();
}

export function adminHeaders(stack: Reachable, userId = 1): Record<string, string> {
  return {
    authorization: `Bearer ${stack.b24.issueAuth(userId).access_token}`,
    'x-bitrix24-member-id': stack.b24.memberId,
    'content-type': 'application/json',
  };
}

export async function putSettings(stack: Reachable, settings: Record<string, unknown>, userId = 1): Promise<Response> {
  return fetch(`${stack.server.url}/api/settings`, { method: 'PUT', headers: adminHeaders(stack, userId), body: JSON.stringify(settings) });
}

/** Install and connect Chat2Desk: the state a portal is in once its admin has set the app up. */
export async function installAndConfigure(stack: Reachable & { server: { idle?: () => Promise<void> } }, settings: Record<string, unknown> = {}): Promise<void> {
  await install(stack);
  const response = await putSettings(stack, { chat2deskApiToken: stack.c2d.token, ...settings });
  if (response.status !== 200) throw new Error(`settings failed: ${response.status} ${await response.text()}`);
  // The cache fill that follows the first save runs in the background; let it finish first.
  await stack.server.idle?.();
  stack.c2d.resetCalls();
  stack.b24.resetCalls();
}

/** Polls until `check` returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function eventually<T>(check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000, what = 'condition'): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Messages our server sent through the fake Chat2Desk (POST /messages that succeeded). */
export function sentMessages(stack: Pick<Stack, 'c2d'>) {
  return stack.c2d.calls.filter((call) => call.method === 'POST' && call.path === '/messages' && call.status === 200);
}

/** Writes one field of a portal's stored settings JSON by hand (a set-up no route makes), on either database. */
export async function writeStoredSetting(stack: Pick<Stack, 'db' | 'b24'>, field: string, value: unknown): Promise<void> {
  const row = await stack.db.row<{ settings: string }>('select settings from portals where member_id = ?', stack.b24.memberId);
  const settings = { ...JSON.parse(row!.settings), [field]: value };
  await stack.db.run('update portals set settings = ? where member_id = ?', JSON.stringify(settings), stack.b24.memberId);
}
