import { afterEach, describe, expect, it } from 'vitest';
import { eventuallyOnClock, noRetryWait, TestClock } from './support/clock.js';
import { eventually, install, installAndConfigure, sentMessages, startStack, type Stack } from './support/stack.js';

async function fireRobots(stack: Stack, count: number, phone = '79161234567') {
  const calls = await Promise.all(Array.from({ length: count }, (_, i) => stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone, text: `message ${i}` } })));
  for (const call of calls) expect(call.status).toBe(200);
  return calls.map((call) => call.eventToken);
}

/** With a clock, retries and reports asked again run when their backoff has passed by it, not after waiting it out. */
async function allReported(stack: Stack, tokens: string[], timeoutMs = 20_000, clock?: TestClock) {
  const check = () => tokens.every((token) => stack.b24.sentEvents.some((event) => event.eventToken === token));
  return clock ? eventuallyOnClock(() => stack.server, clock, check, timeoutMs, 'every result reported') : eventually(check, timeoutMs, 'every result reported');
}

describe('resilience', () => {
  let stack: Stack;
  afterEach(() => stack.close());

  it('refreshes an expired token exactly once when 20 calls meet expired_token together, and keeps the new pair across a restart', async () => {
    // Counts the user.current answers handed to our REST client: once all 20 are in its hands and the
    // microtasks they start have run, every caller has decided whether to ask for a refresh.
    let answersHandedOver = 0;
    let allHandedOver = () => {};
    const handedOver = new Promise<void>((resolve) => {
      allHandedOver = resolve;
    });
    const countingFetch: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      if (!String(input).endsWith('/user.current')) return response;
      const body = await response.text();
      answersHandedOver += 1;
      if (answersHandedOver === 20) setImmediate(allHandedOver);
      return new Response(body, { status: response.status, headers: response.headers });
    };
    stack = await startStack({ fetch: countingFetch });
    await installAndConfigure(stack);
    stack.b24.expireAccessTokens();
    // All 20 calls reach the portal before any is answered, so all 20 meet expired_token.
    const expired = stack.b24.hold({ rest: 'user.current' }, 20);
    const refresh = stack.b24.hold({ oauth: 'oauth.token' });

    const concurrent = Promise.allSettled(Array.from({ length: 20 }, () => stack.server.rest.call(stack.b24.memberId, 'user.current', {}, { idempotent: true })));
    await expired.arrived;
    expired.release();
    await refresh.arrived;
    await handedOver;
    refresh.release();
    const outcomes = await concurrent;
    expect(stack.b24.oauthCalls.filter((call) => call.method === 'oauth.token')).toHaveLength(1);
    expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(20);
    const userCalls = stack.b24.calls.filter((call) => call.method === 'user.current');
    expect(userCalls.filter((call) => call.error === 'expired_token')).toHaveLength(20);
    expect(userCalls.filter((call) => call.status === 200)).toHaveLength(20);

    await stack.restart();
    await stack.server.rest.call(stack.b24.memberId, 'user.current', {}, { idempotent: true });
    expect(stack.b24.oauthCalls.filter((call) => call.method === 'oauth.token')).toHaveLength(1);
    // The rotated pair was persisted: after one more expiry the stored refresh token still works.
    stack.b24.expireAccessTokens();
    await stack.server.rest.call(stack.b24.memberId, 'user.current', {}, { idempotent: true });
    const refreshes = stack.b24.oauthCalls.filter((call) => call.method === 'oauth.token');
    expect(refreshes.map((call) => call.status)).toEqual([200, 200]);
  });

  it('marks the portal for reinstall when Bitrix24 rejects the refresh token, and still finishes nothing twice', async () => {
    const clock = new TestClock();
    stack = await startStack({ clock });
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    // The calls are confirmed and the runs send their messages; only then does the first report meet
    // the rejected refresh.
    const firstReport = stack.b24.hold({ rest: 'batch', command: 'bizproc.event.send' });
    const tokens = await fireRobots(stack, 3);
    await firstReport.arrived;
    stack.b24.expireAccessTokens();
    stack.b24.expireRefreshTokens();
    await eventually(async () => (await stack.server.jobs.countByState()).reporting === 3, 10_000, 'every run finished');
    expect(sentMessages(stack)).toHaveLength(3);
    firstReport.release();
    await eventually(async () => (await stack.server.portals.get(stack.b24.memberId))?.status === 'reauth_required', 10_000, 'portal marked for reinstall');
    await expect(stack.server.rest.call(stack.b24.memberId, 'user.current', {}, { idempotent: true })).rejects.toThrow(/reinstall/);
    const jobRows = async () =>
      (await stack.db.rows('select event_token, public_id, state, attempts, report_error from jobs order by id')) as Array<{
        event_token: string;
        public_id: string;
        state: string;
        attempts: number;
        report_error: string | null;
      }>;
    // Every run is over and its result waits for the portal to come back.
    await eventually(async () => (await jobRows()).every((row) => row.state === 'reporting' && row.report_error !== null), 10_000, 'results waiting');
    expect(stack.b24.sentEvents).toHaveLength(0);

    // The installer's next robot call brings a fresh pair; the waiting results then go out.
    const [recovering] = await fireRobots(stack, 1);
    const all = [...tokens, recovering!];
    await allReported(stack, all, 20_000, clock);
    await eventually(async () => (await jobRows()).every((row) => row.state === 'done'), 10_000, 'every job done');
    const rows = await jobRows();
    expect(rows.map((row) => row.event_token).sort()).toEqual([...all].sort());
    for (const row of rows) expect(row.attempts).toBe(1); // no job ran (or finished) a second time
    const externalIds = sentMessages(stack).map((call) => (call.body as { external_id: string }).external_id);
    expect(externalIds).toHaveLength(4);
    expect(new Set(externalIds).size).toBe(4);
    for (const row of rows) {
      const reported = stack.b24.sentEvents.filter((event) => event.eventToken === row.event_token);
      expect(reported).toHaveLength(1);
      expect(reported[0]?.returnValues.status).toBe('sent');
      // The result names the one message this run sent (its external_id is b24-<the job's public id>).
      const message = stack.c2d.account().messages.find((item) => item.external_id === `b24-${row.public_id}`);
      expect(String(reported[0]?.returnValues.message_id)).toBe(String(message?.id));
    }
  });

  it("recovers a portal whose refresh token was refused from its installer's next robot call, and delivers the result", async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    stack.b24.expireAccessTokens();
    stack.b24.expireRefreshTokens();
    await expect(stack.server.rest.call(stack.b24.memberId, 'user.current', {}, { idempotent: true })).rejects.toThrow(/reinstall/);
    const [token] = await fireRobots(stack, 1); // carries a fresh pair of the installer (user 1)
    await allReported(stack, [token!]);
    expect((await stack.server.portals.get(stack.b24.memberId))?.status).toBe('active');
    expect(stack.b24.sentEvents[0]?.returnValues.status).toBe('sent');
  });

  it('recovers from the next robot call also when calls were acknowledged before the refresh token was refused', async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    const [before] = await fireRobots(stack, 1); // authenticated while the portal was active
    await allReported(stack, [before!]);
    stack.b24.expireAccessTokens();
    stack.b24.expireRefreshTokens();
    await expect(stack.server.rest.call(stack.b24.memberId, 'user.current', {}, { idempotent: true })).rejects.toThrow(/reinstall/);
    const [after] = await fireRobots(stack, 1);
    await allReported(stack, [after!]);
    expect((await stack.server.portals.get(stack.b24.memberId))?.status).toBe('active');
    expect(stack.b24.sentEvents.find((event) => event.eventToken === after)?.returnValues.status).toBe('sent');
  });

  it('stays inside the portal rate limit when it knows the limit', async () => {
    // The Enterprise figures' rate with a small burst: the install's requests and 9 calls right after
    // them overflow the burst and need the leak; none of them may be refused.
    stack = await startStack({ b24: { rateLimit: { drainPerSecond: 5, burst: 5 } }, env: { B24_RATE_PER_SECOND: '5', B24_RATE_BURST: '5' } });
    await install(stack);
    await Promise.all(Array.from({ length: 9 }, () => stack.server.rest.call(stack.b24.memberId, 'user.current', {}, { idempotent: true })));
    expect(stack.b24.calls.filter((call) => call.method === 'user.current' && call.status === 200)).toHaveLength(9);
    expect(stack.b24.calls.filter((call) => call.error === 'QUERY_LIMIT_EXCEEDED')).toHaveLength(0);
  });

  it('backs off and finishes every call when the portal limit is lower than configured', async () => {
    // The rate is right, the burst is not: the portal allows 3 where we assume 50.
    stack = await startStack({ b24: { rateLimit: { drainPerSecond: 4, burst: 3 } }, env: { B24_RATE_PER_SECOND: '4' } });
    await install(stack);
    const results = await Promise.all(Array.from({ length: 10 }, () => stack.server.rest.call(stack.b24.memberId, 'user.current', {}, { idempotent: true })));
    expect(results).toHaveLength(10);
    expect(stack.b24.calls.filter((call) => call.error === 'QUERY_LIMIT_EXCEEDED').length).toBeGreaterThan(0);
  });

  it('finishes every job once Chat2Desk comes back, without duplicates', async () => {
    const clock = new TestClock();
    stack = await startStack({ clock, retrySleep: noRetryWait });
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    stack.c2d.setDown(true);
    const tokens = await fireRobots(stack, 10);
    // Twice as many refused requests as runs: the runs went on retrying past their first 503, and
    // none finished (a run that gave up would be reporting or done, and report `failed` below).
    await eventually(() => stack.c2d.calls.length >= 20, 10_000, 'retries while down');
    expect(Object.keys(await stack.server.jobs.countByState()).filter((state) => state !== 'queued' && state !== 'running')).toEqual([]);
    expect(stack.b24.sentEvents).toHaveLength(0);
    stack.c2d.setDown(false);
    await allReported(stack, tokens, 30_000, clock);
    const externalIds = sentMessages(stack).map((call) => (call.body as { external_id: string }).external_id);
    expect(externalIds).toHaveLength(10);
    expect(new Set(externalIds).size).toBe(10);
    expect(stack.b24.sentEvents).toHaveLength(10);
    for (const event of stack.b24.sentEvents) expect(event.returnValues.status).toBe('sent');
  });

  it('looks for the message by external_id before sending again after a failed send', async () => {
    const clock = new TestClock();
    stack = await startStack({ clock });
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    stack.c2d.failNext({ method: 'POST', path: '/messages' }, 'network');
    const [token] = await fireRobots(stack, 1);
    await allReported(stack, [token!], 20_000, clock);
    const lookups = stack.c2d.calls.filter((call) => call.method === 'GET' && call.path === '/messages');
    expect(lookups.length).toBeGreaterThan(0);
    expect(sentMessages(stack)).toHaveLength(1);
    expect(stack.b24.sentEvents[0]?.returnValues.status).toBe('sent');
  });

  it('fails the run with the reason when the deadline passes', async () => {
    stack = await startStack({ env: { ROBOT_DEADLINE_SECONDS: '1' } });
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    const unavailable = '<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>';
    stack.c2d.failNext({ method: 'POST', path: '/messages' }, { status: 503, body: unavailable });
    const refused = stack.c2d.holdNext({ method: 'POST', path: '/messages' });
    const [token] = await fireRobots(stack, 1);
    await refused.arrived;
    const job = (await stack.db.row<{ id: number; created_at: number; deadline_at: number }>('select id, created_at, deadline_at from jobs where event_token = ?', token))!;
    expect(Math.round((job.deadline_at - job.created_at) / 1000)).toBe(5); // ROBOT_DEADLINE_SECONDS under the 5 s floor is raised to it
    // The deadline passes while the first attempt waits for its answer (moved, rather than waited out).
    await stack.db.run('update jobs set deadline_at = ? where id = ?', Date.now() - 1, job.id);
    refused.release();
    const event = await eventually(() => stack.b24.sentEvents.find((item) => item.eventToken === token), 10_000, 'failed result');
    expect(event.returnValues.status).toBe('failed');
    expect(String(event.returnValues.error)).toMatch(/^gave up/);
    expect(String(event.returnValues.error)).toContain('HTTP 503');
    // Given up after a send in doubt: it looked for the message first, and did not send again.
    expect(stack.c2d.calls.filter((call) => call.method === 'GET' && call.path === '/messages').length).toBeGreaterThan(0);
    expect(stack.c2d.calls.filter((call) => call.method === 'POST' && call.path === '/messages')).toHaveLength(1);
  });

  it('finishes with a readable error when Chat2Desk is not configured', async () => {
    stack = await startStack();
    await install(stack);
    const [token] = await fireRobots(stack, 1);
    const event = await eventually(() => stack.b24.sentEvents.find((item) => item.eventToken === token), 10_000, 'failed result');
    expect(event.returnValues).toMatchObject({
      status: 'failed',
      error: 'Chat2Desk is not configured for this portal: an admin must enter the Chat2Desk API token in the app settings',
    });
  });

  it('retries result delivery when Bitrix24 is overloaded, and gives up on a workflow that no longer waits', async () => {
    const clock = new TestClock();
    stack = await startStack({ clock, retrySleep: noRetryWait });
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    stack.b24.failNext('batch', { status: 500, error: 'INTERNAL_SERVER_ERROR', error_description: 'Internal server error' }, 2);
    const [token] = await fireRobots(stack, 1);
    await allReported(stack, [token!], 20_000, clock);

    stack.b24.failNext('bizproc.event.send', { status: 403, error: 'ACCESS_DENIED', error_description: 'Access denied!' }, 1);
    const [lost] = await fireRobots(stack, 1);
    await eventually(async () => (await stack.server.jobs.countByState()).done === 2, 10_000, 'second job done');
    const row = (await stack.db.row('select report_error from jobs where event_token = ?', lost)) as { report_error: string };
    expect(row.report_error).toBe('Bitrix24 refused the result: the workflow no longer waits for it');
    expect(sentMessages(stack)).toHaveLength(2);
  });
});
