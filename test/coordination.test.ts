import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { CallerChecksExhausted } from '../src/bitrix24/rest-client.js';
import type { AccountGate, Chat2DeskApi } from '../src/chat2desk/client.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { warnOfClockSkew } from '../src/db/clock-skew.js';
import { PortalStore } from '../src/db/portals.js';
import { SecretBox } from '../src/secrets.js';
import { type RunningServer, startServer } from '../src/server.js';
import { type FakeBitrix24, type FakeBitrix24Options, startFakeBitrix24 } from './fakes/bitrix24.js';
import { type FakeChat2Desk, type FakeChat2DeskOptions, startFakeChat2Desk } from './fakes/chat2desk.js';
import { TestClock } from './support/clock.js';
import { emptyDatabase, openTestDatabase, TEST_DATABASE, type TestDatabase } from './support/databases.js';
import { APP_SECRET, eventually, freePort, install, installAndConfigure, stackEnv } from './support/stack.js';

/**
 * Two server processes' worth of state (two startServer instances, each with its own pool, REST
 * client, buckets and caps) on one PostgreSQL database, in front of the same fakes: what is
 * coordinated per process on SQLite must hold across both here (docs/multi-process.md).
 */
interface TwoProcesses {
  b24: FakeBitrix24;
  c2d: FakeChat2Desk;
  servers: [RunningServer, RunningServer];
  close(): Promise<void>;
}

async function startTwo(options: { b24?: FakeBitrix24Options; c2d?: FakeChat2DeskOptions; env?: Record<string, string> } = {}): Promise<TwoProcesses> {
  const database = await emptyDatabase();
  const b24 = await startFakeBitrix24(options.b24);
  const c2d = await startFakeChat2Desk(options.c2d);
  const dir = mkdtempSync(join(tmpdir(), 'c2d-b24-coord-'));
  const start = async () => {
    const port = await freePort();
    const config = loadConfig(stackEnv(b24, c2d, port, dir, { DATABASE_URL: database.url, LOG_LEVEL: 'silent', ...options.env }));
    return startServer(config, createLogger('silent'), { hostname: '127.0.0.1' });
  };
  const servers: [RunningServer, RunningServer] = [await start(), await start()];
  return {
    b24,
    c2d,
    servers,
    async close() {
      await Promise.all(servers.map((server) => server.close().catch(() => undefined)));
      await Promise.all([b24.close(), c2d.close()]);
      await database.drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// PostgreSQL only: a SQLite file is held by one process, with nothing to coordinate.
describe.skipIf(TEST_DATABASE !== 'postgres')('upstream coordination across processes on PostgreSQL', () => {
  let two: TwoProcesses;
  afterEach(() => two.close());

  it('refreshes once when 20 calls spread over two processes meet expired_token, and all 20 succeed', async () => {
    two = await startTwo();
    const [a, b] = two.servers;
    await install({ b24: two.b24, c2d: two.c2d, server: a });
    two.b24.resetCalls();
    two.b24.expireAccessTokens();
    // Every call reaches the portal with the expired token before any is answered.
    const expired = two.b24.hold({ rest: 'user.current' }, 20);
    const refresh = two.b24.hold({ oauth: 'oauth.token' });
    const calls = Promise.allSettled(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).rest.call(two.b24.memberId, 'user.current', {}, { idempotent: true })));
    await expired.arrived;
    expired.release();
    await refresh.arrived;
    // Both processes' callers have their expired_token answers and have decided what to do while
    // the first refresh is held: without a shared lease the other process would send its own.
    await eventually(() => two.b24.calls.filter((call) => call.method === 'user.current' && call.error === 'expired_token').length === 20, 10_000, '20 refusals');
    await new Promise((resolve) => setTimeout(resolve, 300));
    refresh.release();
    const outcomes = await calls;
    expect(outcomes.filter((outcome) => outcome.status === 'rejected')).toEqual([]);
    expect(two.b24.oauthCalls.filter((call) => call.method === 'oauth.token')).toHaveLength(1);
    expect(two.b24.calls.filter((call) => call.method === 'user.current' && call.status === 200)).toHaveLength(20);
    expect((await a.portals.get(two.b24.memberId))?.status).toBe('active');
  });

  it('takes over the refresh lease of a process that died holding it once the lease runs out', async () => {
    two = await startTwo();
    const [a] = two.servers;
    await install({ b24: two.b24, c2d: two.c2d, server: a });
    two.b24.resetCalls();
    two.b24.expireAccessTokens();
    // A process that took the lease and died before refreshing: its lease runs out in 1.5 s.
    if (a.database.kind !== 'postgres') throw new Error('the test runs on PostgreSQL');
    await a.database.pool.query('update portals set refresh_owner = $1, refresh_until = $2 where member_id = $3', ['a dead process', Date.now() + 1_500, two.b24.memberId]);
    const startedAt = Date.now();
    await a.rest.call(two.b24.memberId, 'user.current', {}, { idempotent: true });
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(1_400);
    expect(two.b24.oauthCalls.filter((call) => call.method === 'oauth.token')).toHaveLength(1);
    const [lease] = (await a.database.pool.query('select refresh_owner, refresh_until from portals where member_id = $1', [two.b24.memberId])).rows;
    expect(lease).toEqual({ refresh_owner: null, refresh_until: null });
  });

  it("keeps two processes together within the portal's Bitrix24 budget: no QUERY_LIMIT_EXCEEDED", async () => {
    // The portal's bucket (docs/protocols.md B4) at a small size, so that one process's own
    // bucket would let through almost all of it and two together would overflow it.
    two = await startTwo({ b24: { rateLimit: { drainPerSecond: 10, burst: 8 } }, env: { B24_RATE_PER_SECOND: '10', B24_RATE_BURST: '8' } });
    const [a, b] = two.servers;
    await install({ b24: two.b24, c2d: two.c2d, server: a });
    await Promise.all([a.idle(), b.idle()]);
    await new Promise((resolve) => setTimeout(resolve, 1_000)); // the install's calls drain away
    two.b24.resetCalls();
    const startedAt = Date.now();
    const outcomes = await Promise.allSettled(Array.from({ length: 30 }, (_, i) => (i % 2 === 0 ? a : b).rest.call(two.b24.memberId, 'user.current', {}, { idempotent: true })));
    const seconds = (Date.now() - startedAt) / 1000;
    const refused = two.b24.calls.filter((call) => call.error === 'QUERY_LIMIT_EXCEEDED');
    expect(refused).toHaveLength(0);
    expect(outcomes.filter((outcome) => outcome.status === 'rejected')).toEqual([]);
    // 30 calls through a bucket of 7 (one slot of headroom) draining 10/s take at least 2.3 s.
    expect(seconds).toBeGreaterThanOrEqual(2.2);
  });

  it('caps unverified caller checks of a portal across both processes (RateLimiterPostgres)', async () => {
    // A burst of 20 gives the callers' share max(3, 20 × 0.2) = 4 checks.
    two = await startTwo({ env: { B24_RATE_BURST: '20' } });
    const [a, b] = two.servers;
    await install({ b24: two.b24, c2d: two.c2d, server: a });
    const tries = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).rest.callAs(two.b24.memberId, two.b24.clientEndpoint, `bogus-${i}`, 'profile')),
    );
    const refusedHere = tries.filter((outcome) => outcome.status === 'rejected' && outcome.reason instanceof CallerChecksExhausted);
    // The share used by the install's own check counts too: at most 4 reached the portal in all.
    expect(10 - refusedHere.length).toBeLessThanOrEqual(4);
    expect(refusedHere.length).toBeGreaterThanOrEqual(6);
  });

  /** The Chat2Desk API of the portal's account as one server process holds it (its own pace object). */
  const apiOf = async (server: RunningServer) => (await server.directoryOf(two.b24.memberId))!.api;
  const refusals = () => two.c2d.calls.filter((call) => call.status === 429);
  /** The pace one process keeps for the account (the gate is the API object's, private to the client). */
  const paceOf = (api: Chat2DeskApi) => (api as unknown as { gate: AccountGate }).gate.rate;

  it("keeps two processes together within Chat2Desk's limit for one account: no 429", async () => {
    // Told 10/s and no more; the fake allows 12 per second: one process alone never exceeds it, two
    // at their own 10/s each would.
    two = await startTwo({
      c2d: { rateLimit: { requests: 12, perMs: 1_000 } },
      env: { CHAT2DESK_REQUESTS_PER_MINUTE: '600', CHAT2DESK_MAX_REQUESTS_PER_MINUTE: '600' },
    });
    const [a, b] = two.servers;
    await installAndConfigure({ b24: two.b24, c2d: two.c2d, server: a });
    const [apiA, apiB] = await Promise.all([apiOf(a), apiOf(b)]);
    await new Promise((resolve) => setTimeout(resolve, 1_100)); // the set-up's requests leave the fake's window
    two.c2d.resetCalls();
    const startedAt = Date.now();
    await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? apiA : apiB).apiInfo()));
    const seconds = (Date.now() - startedAt) / 1000;
    expect(refusals()).toHaveLength(0);
    // 40 requests at 10/s in all (a twentieth of a second of burst) take at least 3.5 s.
    expect(seconds).toBeGreaterThanOrEqual(3.5);
  });

  it('slows every process when one of them is refused for load (429): the learned rate is shared', async () => {
    // Told 20/s; the fake allows 10 per second.
    two = await startTwo({
      c2d: { rateLimit: { requests: 10, perMs: 1_000 } },
      env: { CHAT2DESK_REQUESTS_PER_MINUTE: '1200', CHAT2DESK_MAX_REQUESTS_PER_MINUTE: '1200' },
    });
    const [a, b] = two.servers;
    await installAndConfigure({ b24: two.b24, c2d: two.c2d, server: a });
    const [apiA, apiB] = await Promise.all([apiOf(a), apiOf(b)]);
    await apiB.apiInfo(); // B's pace exists before A learns anything
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    two.c2d.resetCalls();
    // Only A meets the limit.
    await Promise.all(Array.from({ length: 30 }, () => apiA.apiInfo()));
    expect(refusals().length).toBeGreaterThan(0);
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    two.c2d.resetCalls();
    // B, which was never refused, takes the rate A learned with its next request: about 10/s instead of its own 20/s.
    await apiB.apiInfo();
    expect(refusals()).toHaveLength(0);
    expect(paceOf(apiB).perMinute).toBeLessThanOrEqual(11 * 60);
    const startedAt = Date.now();
    await Promise.all(Array.from({ length: 20 }, () => apiB.apiInfo()));
    const seconds = (Date.now() - startedAt) / 1000;
    expect(paceOf(apiB).perMinute).toBeLessThanOrEqual(11 * 60);
    expect(seconds).toBeGreaterThanOrEqual(1.7);
    // At the learned limit a refusal now and then is how the rate keeps probing (src/chat2desk/adaptive-rate.ts).
    expect(refusals().length).toBeLessThanOrEqual(1);
  });
});

// PostgreSQL only, like the rest of this file. Two stores on one database stand for two processes.
describe.skipIf(TEST_DATABASE !== 'postgres')('the refresh lease across processes on PostgreSQL', () => {
  const memberId = 'lease-portal';
  const secrets = new SecretBox(APP_SECRET);
  let test: TestDatabase | undefined;
  afterEach(async () => {
    await test?.close();
    test = undefined;
  });

  async function twoStores(aheadMs: number) {
    test = await openTestDatabase('postgres');
    const other = await test.openAnother();
    const clockA = new TestClock();
    const clockB = new TestClock();
    clockB.advance(aheadMs);
    const a = new PortalStore(test.handle, secrets, clockA);
    const b = new PortalStore(other, secrets, clockB);
    await a.saveInstall({
      memberId,
      domain: 'portal.example',
      applicationToken: 't',
      installerUserId: 1,
      accessToken: 'x',
      refreshToken: 'r',
      expiresAt: 2e9,
      clientEndpoint: 'https://portal.example/rest/',
    });
    return { a, b, generation: (await a.tokens(memberId))!.generation };
  }

  // Review 11: the lease was set and compared by each process's own clock, so a process whose clock
  // ran 31 s ahead took a live lease, its refresh with the used token was refused, it marked the
  // portal reauth_required, and the holder's good new pair could no longer be stored.
  it('a second process does not take a refresh lease another process took a moment ago, even with its clock 31 s ahead', async () => {
    const { a, b, generation } = await twoStores(31_000);
    expect(await a.takeRefreshLease(memberId, 'A', generation, 30_000)).toBe(true);
    expect(await b.takeRefreshLease(memberId, 'B', generation, 30_000)).toBe(false);
    // A refusal B met (its token already used by A's refresh) does not mark the portal lost.
    expect(await b.markReauthRequired(memberId, generation, 'B')).toBe(false);
    expect(await a.saveRefreshedTokens(memberId, { accessToken: 'x2', refreshToken: 'r2', expiresAt: 2e9, clientEndpoint: 'https://portal.example/rest/' }, generation)).toBe(
      generation + 1,
    );
    expect((await b.get(memberId))?.status).toBe('active');
  });

  it('keeps a renewed lease from another process past its first term, and lets it go once it runs out', async () => {
    const { a, b, generation } = await twoStores(0);
    expect(await a.takeRefreshLease(memberId, 'A', generation, 300)).toBe(true);
    expect(await a.renewRefreshLease(memberId, 'A', 30_000)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(await b.takeRefreshLease(memberId, 'B', generation, 300)).toBe(false);
    expect(await b.renewRefreshLease(memberId, 'B', 300)).toBe(false);
    await a.releaseRefreshLease(memberId, 'A');
    expect(await b.takeRefreshLease(memberId, 'B', generation, 300)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 400));
    // B died holding it: the lease has run out, so a refused refresh by A does mark the portal.
    expect(await a.markReauthRequired(memberId, generation, 'A')).toBe(true);
  });
});

// Job leases are compared by each process's own clock (src/db/jobs.ts), so the clocks must agree.
describe.skipIf(TEST_DATABASE !== 'postgres')("a process's clock against PostgreSQL's", () => {
  let test: TestDatabase | undefined;
  afterEach(async () => {
    await test?.close();
    test = undefined;
  });

  it("warns at start when this process's clock is more than 5 s from the database's, and not otherwise", async () => {
    test = await openTestDatabase('postgres');
    if (test.handle.kind !== 'postgres') throw new Error('the test runs on PostgreSQL');
    const lines: string[] = [];
    const log = createLogger(
      'warn',
      new Writable({
        write(chunk, _encoding, done) {
          lines.push(String(chunk));
          done();
        },
      }),
    );
    const clock = new TestClock();
    await warnOfClockSkew(test.handle.pool, () => clock.now(), log);
    expect(lines).toEqual([]);
    clock.advance(6_000);
    await warnOfClockSkew(test.handle.pool, () => clock.now(), log);
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 40, skewMs: expect.any(Number) });
    expect(JSON.parse(lines[0]!).skewMs).toBeGreaterThan(5_000);
  });
});
