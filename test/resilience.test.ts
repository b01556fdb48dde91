import { afterEach, describe, expect, it } from 'vitest';
import { eventually, installAndConfigure, sentMessages, startStack, type Stack } from './support/stack.js';

async function fireRobots(stack: Stack, count: number, phone = '79161234567') {
  const calls = await Promise.all(Array.from({ length: count }, (_, i) => stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone, text: `message ${i}` } })));
  for (const call of calls) expect(call.status).toBe(200);
  return calls.map((call) => call.eventToken);
}

async function allReported(stack: Stack, tokens: string[], timeoutMs = 20_000) {
  return eventually(() => tokens.every((token) => stack.b24.sentEvents.some((event) => event.eventToken === token)), timeoutMs, 'every result reported');
}

describe('resilience', () => {
  let stack: Stack;
  afterEach(() => stack.close());

  it('refreshes an expired token exactly once for 20 jobs and keeps the new pair across a restart', async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    stack.b24.expireAccessTokens();

    const tokens = await fireRobots(stack, 20);
    const concurrent = await Promise.all(Array.from({ length: 20 }, () => stack.server.rest.call(stack.b24.memberId, 'user.current', {}, { idempotent: true })));
    expect(concurrent).toHaveLength(20);
    await allReported(stack, tokens);
    expect(stack.b24.oauthCalls.filter((call) => call.method === 'oauth.token')).toHaveLength(1);
    expect(stack.b24.calls.filter((call) => call.error === 'expired_token').length).toBeGreaterThan(0);

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
    stack = await startStack();
    await installAndConfigure(stack);
    stack.b24.expireAccessTokens();
    stack.b24.expireRefreshTokens();
    await expect(stack.server.rest.call(stack.b24.memberId, 'user.current', {}, { idempotent: true })).rejects.toThrow(/reinstall/);
    expect(stack.server.portals.get(stack.b24.memberId)?.status).toBe('reauth_required');
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
    expect(stack.server.portals.get(stack.b24.memberId)?.status).toBe('active');
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
    expect(stack.server.portals.get(stack.b24.memberId)?.status).toBe('active');
    expect(stack.b24.sentEvents.find((event) => event.eventToken === after)?.returnValues.status).toBe('sent');
  });

  it('stays inside the portal rate limit when it knows the limit', async () => {
    stack = await startStack({ b24: { rateLimit: { drainPerSecond: 2, burst: 5 } }, env: { B24_RATE_PER_SECOND: '2', B24_RATE_BURST: '5' } });
    await installAndConfigure(stack);
    await new Promise((resolve) => setTimeout(resolve, 2_500)); // let the install's requests drain
    await Promise.all(Array.from({ length: 9 }, () => stack.server.rest.call(stack.b24.memberId, 'user.current', {}, { idempotent: true })));
    expect(stack.b24.calls.filter((call) => call.error === 'QUERY_LIMIT_EXCEEDED')).toHaveLength(0);
  });

  it('backs off and finishes every call when the portal limit is lower than configured', async () => {
    stack = await startStack({ b24: { rateLimit: { drainPerSecond: 4, burst: 3 } } });
    const { install } = await import('./support/stack.js');
    await install(stack);
    const results = await Promise.all(Array.from({ length: 10 }, () => stack.server.rest.call(stack.b24.memberId, 'user.current', {}, { idempotent: true })));
    expect(results).toHaveLength(10);
    expect(stack.b24.calls.filter((call) => call.error === 'QUERY_LIMIT_EXCEEDED').length).toBeGreaterThan(0);
  });

  it('finishes every job once Chat2Desk comes back, without duplicates', async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    stack.c2d.setDown(true);
    const tokens = await fireRobots(stack, 10);
    await eventually(() => stack.c2d.calls.length >= 10, 5_000, 'attempts while down');
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(stack.b24.sentEvents).toHaveLength(0);
    stack.c2d.setDown(false);
    await allReported(stack, tokens, 30_000);
    const externalIds = sentMessages(stack).map((call) => (call.body as { external_id: string }).external_id);
    expect(externalIds).toHaveLength(10);
    expect(new Set(externalIds).size).toBe(10);
    for (const event of stack.b24.sentEvents) expect(event.returnValues.status).toBe('sent');
  });

  it('looks for the message by external_id before sending again after a failed send', async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    stack.c2d.failNext({ method: 'POST', path: '/messages' }, 'network');
    const [token] = await fireRobots(stack, 1);
    await allReported(stack, [token!]);
    const lookups = stack.c2d.calls.filter((call) => call.method === 'GET' && call.path === '/messages');
    expect(lookups.length).toBeGreaterThan(0);
    expect(sentMessages(stack)).toHaveLength(1);
    expect(stack.b24.sentEvents[0]?.returnValues.status).toBe('sent');
  });

  it('fails the run with the reason when the deadline passes', async () => {
    stack = await startStack({ env: { ROBOT_DEADLINE_SECONDS: '1' } });
    await installAndConfigure(stack);
    stack.c2d.setDown(true);
    const [token] = await fireRobots(stack, 1);
    const event = await eventually(() => stack.b24.sentEvents.find((item) => item.eventToken === token), 25_000, 'failed result');
    expect(event.returnValues.status).toBe('failed');
    expect(String(event.returnValues.error)).toMatch(/^gave up/);
    expect(String(event.returnValues.error)).toContain('HTTP 503');
  });

  it('finishes with a readable error when Chat2Desk is not configured', async () => {
    stack = await startStack();
    const { install } = await import('./support/stack.js');
    await install(stack);
    const [token] = await fireRobots(stack, 1);
    const event = await eventually(() => stack.b24.sentEvents.find((item) => item.eventToken === token), 10_000, 'failed result');
    expect(event.returnValues).toMatchObject({
      status: 'failed',
      error: 'Chat2Desk is not configured for this portal: an admin must enter the Chat2Desk API token in the app settings',
    });
  });

  it('retries result delivery when Bitrix24 is overloaded, and gives up on a workflow that no longer waits', async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    stack.b24.failNext('batch', { status: 500, error: 'INTERNAL_SERVER_ERROR', error_description: 'Internal server error' }, 2);
    const [token] = await fireRobots(stack, 1);
    await allReported(stack, [token!]);

    stack.b24.failNext('bizproc.event.send', { status: 403, error: 'ACCESS_DENIED', error_description: 'Access denied!' }, 1);
    const [lost] = await fireRobots(stack, 1);
    await eventually(() => stack.server.jobs.countByState().done === 2, 10_000, 'second job done');
    const row = stack.server.database.sqlite.prepare('select report_error from jobs where event_token = ?').get(lost) as { report_error: string };
    expect(row.report_error).toBe('Bitrix24 refused the result: the workflow no longer waits for it');
    expect(sentMessages(stack)).toHaveLength(2);
  });
});
