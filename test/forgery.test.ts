import { randomBytes } from 'node:crypto';
import qs from 'qs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CONFIRMATION_LOG_MESSAGE, NOT_CONFIRMED } from '../src/jobs/confirmations.js';
import { eventuallyOnClock, noRetryWait, TestClock } from './support/clock.js';
import { eventually, installAndConfigure, postForm, sentMessages, startStack, type Stack } from './support/stack.js';

/**
 * Issue 6: Bitrix24 puts APPLICATION_TOKEN into every page it opens for the app, so any employee
 * who opens it can read the token (and gets their own valid tokens with it). These tests forge
 * calls with exactly what such a page POST carries.
 */
interface PageLoot {
  applicationToken: string;
  accessToken: string;
  refreshToken: string;
  memberId: string;
}

/** An employee (user 2, not an admin) opens the app's tab in a deal card and reads the POST. */
function openAppAsEmployee(stack: Stack): PageLoot {
  const employee = stack.b24.issueAuth(2);
  const page = new URLSearchParams(stack.b24.placementPageRequest('CRM_DEAL_DETAIL_TAB', { ID: '301' }, { accessToken: employee.access_token }).body);
  return { applicationToken: page.get('APPLICATION_TOKEN')!, accessToken: page.get('AUTH_ID')!, refreshToken: employee.refresh_token, memberId: page.get('member_id')! };
}

function forgedAuth(stack: Stack, loot: PageLoot, userId: string) {
  return {
    access_token: loot.accessToken,
    refresh_token: loot.refreshToken,
    expires: String(Math.floor(Date.now() / 1000) + 3600),
    expires_in: '3600',
    scope: stack.b24.scope,
    domain: stack.b24.domain,
    server_endpoint: `${stack.b24.oauthUrl}/rest/`,
    client_endpoint: stack.b24.clientEndpoint,
    member_id: loot.memberId,
    user_id: userId,
    status: 'L',
    application_token: loot.applicationToken,
  };
}

/** A robot call the portal never made: the event token is made up, everything else is from the page. */
function forgedRobotCall(stack: Stack, loot: PageLoot, options: { userId?: string; useSubscription?: 'Y' | 'N'; text?: string } = {}) {
  const workflowId = `${randomBytes(7).toString('hex')}.${randomBytes(4).toString('hex')}`;
  const eventToken = `${workflowId}|A1|${randomBytes(16).toString('hex')}.${randomBytes(32).toString('hex')}`;
  const body = qs.stringify({
    workflow_id: workflowId,
    code: 'c2d_send_message',
    document_id: ['crm', 'CCrmDocumentDeal', 'DEAL_301'],
    document_type: ['crm', 'CCrmDocumentDeal', 'DEAL'],
    event_token: eventToken,
    properties: { phone: '79161234567', text: options.text ?? 'Pay to this card: 4111 1111 1111 1111' },
    use_subscription: options.useSubscription ?? 'Y',
    timeout_duration: '0',
    ts: String(Math.floor(Date.now() / 1000)),
    auth: forgedAuth(stack, loot, options.userId ?? '2'),
  });
  return { body, eventToken };
}

async function portalRow(stack: Stack): Promise<Record<string, unknown>> {
  return (await stack.db.row('select * from portals where member_id = ?', stack.b24.memberId)) as Record<string, unknown>;
}

async function jobRow(stack: Stack, eventToken: string): Promise<Record<string, unknown>> {
  return (await stack.db.row('select * from jobs where event_token = ?', eventToken)) as Record<string, unknown>;
}

describe('calls forged with the application token from a page of the app', () => {
  let stack: Stack;
  beforeEach(async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
  });
  afterEach(() => stack.close());

  it.each([
    ['as the employee who opened the page', '2'],
    ["claiming the installer's user id", '1'],
  ])('a forged robot call (%s) sends nothing to Chat2Desk and ends refused without a result', async (_label, userId) => {
    const forged = forgedRobotCall(stack, openAppAsEmployee(stack), { userId });
    const response = await postForm(`${stack.server.url}/bitrix24/robot`, forged.body);
    expect(response.status).toBe(200); // stored like any call: only the portal can tell

    const job = await eventually(async () => {
      const row = await jobRow(stack, forged.eventToken);
      return row.state === 'done' ? row : undefined;
    }, 10_000);
    expect(job).toMatchObject({ last_error: NOT_CONFIRMED, return_values: null, attempts: 0 });
    expect(stack.c2d.calls).toHaveLength(0);
    expect(stack.b24.sentEvents).toHaveLength(0);
    expect(stack.b24.calls.filter((call) => call.method === 'bizproc.event.send')).toHaveLength(0);
    expect(stack.b24.calls.filter((call) => call.method === 'bizproc.activity.log').map((call) => call.error)).toEqual(['ACCESS_DENIED']);
    expect(stack.logs.join('')).toContain('robot calls refused: Bitrix24 did not confirm their event tokens');
  });

  it('a forged robot call that does not wait for its result is refused at once and stores nothing', async () => {
    const forged = forgedRobotCall(stack, openAppAsEmployee(stack), { useSubscription: 'N' });
    const response = await postForm(`${stack.server.url}/bitrix24/robot`, forged.body);
    expect(response.status).toBe(422);
    expect(await response.json()).toEqual({ error: 'A robot call that does not wait for its result (use_subscription=N) cannot be confirmed by Bitrix24 and is not run' });
    expect(await stack.server.jobs.countByState()).toEqual({});
  });

  it('confirms genuine calls and refuses the forged one among them', async () => {
    const loot = openAppAsEmployee(stack);
    const genuine = Array.from({ length: 5 }, (_, i) => stack.b24.robotCallBody({ code: 'c2d_send_message', properties: { phone: '79161234567', text: `genuine ${i}` } }));
    const forged = forgedRobotCall(stack, loot);
    const replies = await Promise.all([...genuine, forged].map((call) => postForm(`${stack.server.url}/bitrix24/robot`, call.body)));
    for (const reply of replies) expect(reply.status).toBe(200);

    await eventually(() => genuine.every((call) => stack.b24.sentEvents.some((event) => event.eventToken === call.eventToken)), 15_000, 'genuine results');
    await eventually(async () => (await jobRow(stack, forged.eventToken)).state === 'done', 10_000, 'forged call refused');
    expect((await jobRow(stack, forged.eventToken)).last_error).toBe(NOT_CONFIRMED);
    expect(
      sentMessages(stack)
        .map((call) => (call.body as { text: string }).text)
        .sort(),
    ).toEqual(genuine.map((_, i) => `genuine ${i}`));
    for (const call of genuine) expect((await jobRow(stack, call.eventToken)).confirmed_at).not.toBeNull();
    expect(
      stack.b24.activityLog
        .filter((entry) => entry.message === CONFIRMATION_LOG_MESSAGE)
        .map((entry) => entry.eventToken)
        .sort(),
    ).toEqual(genuine.map((call) => call.eventToken).sort());
  });

  it("runs a genuine call when an admin changed the robot's run-as user, whose tokens the call carries", async () => {
    await stack.server.rest.call(stack.b24.memberId, 'bizproc.robot.update', { CODE: 'c2d_send_message', FIELDS: { AUTH_USER_ID: 2 } });
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'run as a manager' } });
    expect(call.status).toBe(200);
    const delivered = qs.parse(stack.b24.deliveries.at(-1)!.body) as { auth: { user_id: string } };
    expect(delivered.auth.user_id).toBe('2');

    const sent = await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 10_000, 'result');
    expect(sent.returnValues.status).toBe('sent');
    expect(sentMessages(stack)).toHaveLength(1);
    expect(stack.b24.activityLog).toEqual([{ eventToken: call.eventToken, message: CONFIRMATION_LOG_MESSAGE }]);
  });

  it('a forged ONAPPUNINSTALL changes nothing: the portal stays active, its secrets stay, robots still run', async () => {
    const loot = openAppAsEmployee(stack);
    const before = await portalRow(stack);
    const forged = forgedUninstall(stack, loot);
    const response = await postForm(`${stack.server.url}/bitrix24/events`, forged);
    expect(response.status).toBe(401);
    expect(await response.json()).toEqual({ error: 'The portal still accepts this app: the uninstall did not come from Bitrix24 and changed nothing' });

    const after = await portalRow(stack);
    expect(after).toMatchObject({ status: 'active', uninstall_requested_at: null, uninstall_check_at: null });
    for (const secret of ['access_token', 'refresh_token', 'chat2desk_token', 'application_token_digest']) expect(after[secret]).toBe(before[secret]);
    expect(stack.c2d.account().webhooks).toHaveLength(1);
    expect(stack.logs.join('')).toContain('ONAPPUNINSTALL not acted on');

    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'still here' } });
    const sent = await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 10_000, 'result');
    expect(sent.returnValues.status).toBe('sent');
  });

  it("does not take a reauthorising portal's tokens from a forged call that claims the installer's user id", async () => {
    stack.b24.expireAccessTokens();
    stack.b24.expireRefreshTokens();
    await expect(stack.server.rest.call(stack.b24.memberId, 'user.current', {}, { idempotent: true })).rejects.toThrow(/reinstall/);
    const before = await portalRow(stack);
    const forged = forgedRobotCall(stack, openAppAsEmployee(stack), { userId: '1' });
    expect((await postForm(`${stack.server.url}/bitrix24/robot`, forged.body)).status).toBe(200);
    await stack.server.idle(); // the proof runs after the answer

    expect(stack.b24.oauthCalls.filter((call) => call.method === 'app.info').map((call) => call.status)).toEqual([200]);
    expect(await portalRow(stack)).toMatchObject({ status: 'reauth_required', access_token: before.access_token, refresh_token: before.refresh_token });
    expect(stack.logs.join('')).toContain('they belong to another user than the installer');
    expect(stack.c2d.calls).toHaveLength(0);
  });

  it("keeps the stored tokens when a forged ONAPPUPDATE carries an employee's pair", async () => {
    const loot = openAppAsEmployee(stack);
    const before = await portalRow(stack);
    const forged = qs.stringify({
      event: 'ONAPPUPDATE',
      data: { VERSION: '2', PREVIOUS_VERSION: '1', LANGUAGE_ID: 'en' },
      ts: String(Math.floor(Date.now() / 1000)),
      auth: forgedAuth(stack, loot, '1'),
    });
    expect((await postForm(`${stack.server.url}/bitrix24/events`, forged)).status).toBe(200);
    await stack.server.idle();
    expect(await portalRow(stack)).toMatchObject({ access_token: before.access_token, refresh_token: before.refresh_token, token_generation: before.token_generation });
    // Registration still ran with our own tokens: the installer can still register robots.
    expect(stack.b24.calls.some((call) => call.method === 'bizproc.robot.update' && call.status === 200)).toBe(true);
  });
});

describe('an uninstall the portal cannot confirm yet', () => {
  let stack: Stack;
  let clock: TestClock;
  beforeEach(async () => {
    clock = new TestClock();
    // An unreachable portal is retried by the REST client; those retries need not wait real backoffs.
    stack = await startStack({ clock, retrySleep: noRetryWait });
    await installAndConfigure(stack);
  });
  afterEach(() => stack.close());

  /** Points our REST calls at a closed port: the portal cannot be reached (network failure). */
  async function cutThePortalOff(): Promise<() => Promise<void>> {
    const { client_endpoint: endpoint } = (await portalRow(stack)) as { client_endpoint: string };
    await stack.db.run('update portals set client_endpoint = ?', 'http://127.0.0.1:9/rest/');
    return async () => await stack.db.run('update portals set client_endpoint = ?', endpoint);
  }

  it('is recorded, survives a restart and is acted on once the portal refuses our tokens', async () => {
    const reconnect = await cutThePortalOff();
    const response = await postForm(`${stack.server.url}/bitrix24/events`, stack.b24.uninstallEventBody());
    expect(response.status).toBe(202);
    expect(await portalRow(stack)).toMatchObject({ status: 'active', chat2desk_token: expect.any(String) });
    expect((await portalRow(stack)).uninstall_requested_at).not.toBeNull();

    await reconnect();
    await stack.restart();
    await stack.server.idle(); // the first pass after a start asks about every pending uninstall
    expect(await portalRow(stack)).toMatchObject({ status: 'uninstalled', access_token: null, refresh_token: null, chat2desk_token: null, uninstall_requested_at: null });
    expect(stack.c2d.account().webhooks).toHaveLength(0);
  });

  it('is dropped once the portal answers and still accepts our tokens', async () => {
    const loot = openAppAsEmployee(stack);
    const reconnect = await cutThePortalOff();
    const forged = forgedUninstall(stack, loot);
    expect((await postForm(`${stack.server.url}/bitrix24/events`, forged)).status).toBe(202);
    const pending = await portalRow(stack);
    expect(pending.uninstall_check_at).toBeGreaterThan(clock.now());

    await reconnect();
    // Asked again when the check falls due by the clock, without a restart.
    clock.advance((pending.uninstall_check_at as number) - clock.now());
    await eventually(async () => (await portalRow(stack)).uninstall_requested_at === null, 5_000, 'uninstall dropped');
    expect(await portalRow(stack)).toMatchObject({ status: 'active', access_token: pending.access_token, chat2desk_token: pending.chat2desk_token });
  });
});

describe('confirmation when Bitrix24 cannot answer at once', () => {
  let stack: Stack;
  afterEach(() => stack.close());

  const overloaded = { status: 503, error: 'QUERY_LIMIT_EXCEEDED', error_description: 'Too many requests' };

  it('asks again and then runs the call once', async () => {
    const clock = new TestClock();
    stack = await startStack({ clock });
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    stack.b24.failNext('bizproc.activity.log', overloaded, 2);
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'after a pause' } });
    // Asked again when the backoff has passed by the clock, not after waiting it out.
    const sent = await eventuallyOnClock(
      () => stack.server,
      clock,
      () => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken),
      15_000,
      'result',
    );
    expect(sent.returnValues.status).toBe('sent');
    expect(stack.b24.calls.filter((item) => item.method === 'bizproc.activity.log').map((item) => item.error ?? 'ok')).toEqual([
      'QUERY_LIMIT_EXCEEDED',
      'QUERY_LIMIT_EXCEEDED',
      'ok',
    ]);
    expect(sentMessages(stack)).toHaveLength(1);
    expect(await jobRow(stack, call.eventToken)).toMatchObject({ confirm_attempts: 2, attempts: 1 });
  });

  it('finishes the call failed, with nothing run, when its deadline passes unconfirmed', async () => {
    const clock = new TestClock();
    stack = await startStack({ clock, env: { ROBOT_DEADLINE_SECONDS: '1' } }); // the shortest deadline allowed is 5 s
    await installAndConfigure(stack);
    stack.b24.failNext('bizproc.activity.log', overloaded, 100);
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'never confirmed' } });
    await eventually(async () => Number((await jobRow(stack, call.eventToken))?.confirm_attempts) >= 1, 10_000, 'a refused confirmation');
    // Past the deadline by the server's clock, instead of waiting five seconds.
    clock.advance(6_000);
    stack.server.worker.wake();
    const sent = await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 10_000, 'failed result');
    expect(sent.returnValues.status).toBe('failed');
    expect(String(sent.returnValues.error)).toMatch(/^Bitrix24 could not confirm this robot call before its deadline: Bitrix24 could not confirm the call: QUERY_LIMIT_EXCEEDED/);
    expect(stack.c2d.calls).toHaveLength(0);
    expect(await jobRow(stack, call.eventToken)).toMatchObject({ attempts: 0, confirmed_at: null });
  });
});

/** ONAPPUNINSTALL with what a page POST carries (the event itself carries no tokens, docs/protocols.md B1). */
function forgedUninstall(stack: Stack, loot: PageLoot): string {
  return qs.stringify({
    event: 'ONAPPUNINSTALL',
    data: { LANGUAGE_ID: 'en', CLEAN: '1' },
    ts: String(Math.floor(Date.now() / 1000)),
    auth: {
      domain: stack.b24.domain,
      server_endpoint: `${stack.b24.oauthUrl}/rest/`,
      client_endpoint: stack.b24.clientEndpoint,
      member_id: loot.memberId,
      application_token: loot.applicationToken,
    },
  });
}

/** A fetch for our server that holds the answers to `method` calls until the gate opens (the portal has already answered). */
function answerGate(method: string) {
  let open = () => {};
  let arrive = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  const arrived = new Promise<void>((resolve) => {
    arrive = resolve;
  });
  let armed = true;
  const gated: typeof fetch = async (input, init) => {
    const response = await fetch(input, init);
    if (armed && String(input).endsWith(`/${method}`)) {
      armed = false;
      arrive();
      await opened;
    }
    return response;
  };
  return { fetch: gated, arrived, open };
}

describe('forged lifecycle events against a portal that cannot or will not answer plainly', () => {
  let stack: Stack;
  afterEach(() => stack.close());

  const appInfoCalls = () => stack.b24.calls.filter((call) => call.method === 'app.info');

  it('keeps a portal waiting for reauthorisation: its old refusal proves no uninstall', async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    stack.b24.expireAccessTokens();
    stack.b24.expireRefreshTokens();
    await expect(stack.server.rest.call(stack.b24.memberId, 'user.current', {}, { idempotent: true })).rejects.toThrow(/reinstall/);
    const before = await portalRow(stack);

    const response = await postForm(`${stack.server.url}/bitrix24/events`, forgedUninstall(stack, openAppAsEmployee(stack)));
    expect(response.status).toBe(202);
    expect(await portalRow(stack)).toMatchObject({ status: 'reauth_required', access_token: before.access_token, chat2desk_token: before.chat2desk_token });
    expect((await portalRow(stack)).uninstall_requested_at).not.toBeNull();
    expect(stack.c2d.account().webhooks).toHaveLength(1);
  });

  it('keeps the portal when the refresh is refused with invalid_client (our own wrong client secret)', async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    const loot = openAppAsEmployee(stack);
    stack.b24.expireAccessTokens();
    stack.b24.failNextOAuth('oauth.token', { status: 401, error: 'invalid_client', error_description: 'Invalid client credentials' });
    const response = await postForm(`${stack.server.url}/bitrix24/events`, forgedUninstall(stack, loot));
    expect(response.status).toBe(202);
    expect(await portalRow(stack)).toMatchObject({ status: 'reauth_required', chat2desk_token: expect.any(String) });
    expect((await portalRow(stack)).access_token).not.toBeNull();
  });

  it.each([
    [403, 'ACCESS_DENIED', 'REST API is available only on commercial plans'],
    [403, 'user_access_error', 'The user does not have access to the application'],
    [403, 'INVALID_CREDENTIALS', 'Invalid request credentials'],
    [403, 'insufficient_scope', 'The request requires higher privileges than provided by the access token'],
  ])('keeps the portal when app.info answers %i %s: not what an uninstalled app gets', async (status, error, description) => {
    stack = await startStack();
    await installAndConfigure(stack);
    const loot = openAppAsEmployee(stack);
    stack.b24.failNext('app.info', { status, error, error_description: description });
    const response = await postForm(`${stack.server.url}/bitrix24/events`, forgedUninstall(stack, loot));
    expect(response.status).toBe(202);
    expect(await portalRow(stack)).toMatchObject({ status: 'active', chat2desk_token: expect.any(String) });
    expect((await portalRow(stack)).uninstall_requested_at).not.toBeNull();
  });

  it('keeps a portal reinstalled while the uninstall check was asking', async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    const held = stack.b24.hold({ rest: 'app.info' });
    const uninstall = postForm(`${stack.server.url}/bitrix24/events`, stack.b24.uninstallEventBody());
    await held.arrived;
    // The admin installs again before the portal's answer (for the old tokens) reaches the check.
    const reinstall = await postForm(`${stack.server.url}/install`, stack.b24.installEventBody());
    expect(reinstall.status).toBe(200);
    held.release();
    expect((await uninstall).status).toBe(401);
    await stack.server.idle();
    expect(await portalRow(stack)).toMatchObject({ status: 'active', uninstall_requested_at: null });
    expect((await portalRow(stack)).access_token).not.toBeNull();
    expect(await stack.server.rest.call(stack.b24.memberId, 'app.info', {}, { idempotent: true })).toBeTruthy();
  });

  it('acts on a genuine uninstall that came while a forged one was being checked', async () => {
    const gate = answerGate('app.info');
    stack = await startStack({ fetch: gate.fetch });
    await installAndConfigure(stack);
    const forged = postForm(`${stack.server.url}/bitrix24/events`, forgedUninstall(stack, openAppAsEmployee(stack)));
    await gate.arrived; // the portal said "still installed"; the answer has not reached the check yet
    const forgedAt = (await portalRow(stack)).uninstall_requested_at;
    const genuine = postForm(`${stack.server.url}/bitrix24/events`, stack.b24.uninstallEventBody());
    await eventually(async () => (await portalRow(stack)).uninstall_requested_at !== forgedAt, 5_000, 'genuine request recorded');
    gate.open();
    await Promise.all([forged, genuine]);
    await eventually(async () => (await portalRow(stack)).status === 'uninstalled', 10_000, 'portal uninstalled');
    expect(await portalRow(stack)).toMatchObject({ access_token: null, chat2desk_token: null, uninstall_requested_at: null });
  });

  it('asks the portal once for a burst of forged ONAPPUNINSTALL and answers the rest from that verdict', async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    const loot = openAppAsEmployee(stack);
    for (let i = 0; i < 5; i++) {
      const response = await postForm(`${stack.server.url}/bitrix24/events`, forgedUninstall(stack, loot));
      expect(response.status).toBe(401);
    }
    expect(appInfoCalls()).toHaveLength(1);
    expect(await portalRow(stack)).toMatchObject({ status: 'active', chat2desk_token: expect.any(String) });
  });

  it("asks about a forged ONAPPUNINSTALL only after the portal's robot work waiting for the same budget", async () => {
    stack = await startStack({ env: { B24_RATE_PER_SECOND: '5', B24_RATE_BURST: '2' } });
    await installAndConfigure(stack);
    const work = () => stack.server.rest.call(stack.b24.memberId, 'user.current', {}, { idempotent: true });
    const before = [work(), work(), work()];
    const forged = postForm(`${stack.server.url}/bitrix24/events`, forgedUninstall(stack, openAppAsEmployee(stack)));
    // Recording the request and queueing its app.info for the portal's bucket happen in one step.
    await eventually(async () => (await portalRow(stack)).uninstall_requested_at !== null, 5_000, 'uninstall recorded');
    const after = [work(), work(), work()];
    await Promise.all([...before, ...after]);
    expect((await forged).status).toBe(401);
    expect(stack.b24.calls.map((call) => call.method).filter((method) => method === 'user.current' || method === 'app.info')).toEqual([
      ...Array(6).fill('user.current'),
      'app.info',
    ]);
  });

  it('registers once for a burst of forged ONAPPUPDATE', async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    const loot = openAppAsEmployee(stack);
    for (let i = 0; i < 5; i++) {
      const forged = qs.stringify({ event: 'ONAPPUPDATE', data: { VERSION: '2', PREVIOUS_VERSION: '1', LANGUAGE_ID: 'en' }, auth: forgedAuth(stack, loot, '2') });
      expect((await postForm(`${stack.server.url}/bitrix24/events`, forged)).status).toBe(200);
      await stack.server.idle();
    }
    const registrations = stack.b24.calls.filter((call) => call.method === 'batch').length;
    expect(registrations).toBeGreaterThan(0);
    expect(registrations).toBeLessThanOrEqual(2); // one registration: two batch requests
  });
});

describe('robot calls Bitrix24 has not confirmed yet', () => {
  let stack: Stack;
  afterEach(() => stack.close());

  it('stores no more than the limit per portal; beyond it answers 503 and stores nothing', async () => {
    stack = await startStack({ env: { MAX_UNCONFIRMED_CALLS_PER_PORTAL: '3' } });
    await installAndConfigure(stack);
    const held = stack.b24.hold({ rest: 'batch', command: 'bizproc.activity.log' });
    const loot = openAppAsEmployee(stack);
    for (let i = 0; i < 3; i++) expect((await postForm(`${stack.server.url}/bitrix24/robot`, forgedRobotCall(stack, loot).body)).status).toBe(200);
    const over = forgedRobotCall(stack, loot);
    const refused = await postForm(`${stack.server.url}/bitrix24/robot`, over.body);
    expect(refused.status).toBe(503);
    expect(await refused.json()).toEqual({
      error: 'Too many robot calls of this portal (3) are waiting for Bitrix24 to confirm them; this call was not stored, run the robot again later',
    });
    expect(await jobRow(stack, over.eventToken)).toBeUndefined();
    // The confirmation pass reads what it needs, never the stored properties.
    const due = await stack.server.jobs.dueConfirmations(10);
    expect(due).toHaveLength(3);
    for (const row of due) expect(Object.keys(row).sort()).toEqual(['confirmAttempts', 'deadlineAt', 'eventToken', 'id', 'lastError', 'memberId', 'robotCode', 'runAt']);
    held.release();
  });

  it('does not run a call whose confirmation is missing from the batch answer; it asks again', async () => {
    let stripped = false;
    // The batch answer loses the command's result once (neither result nor error for it).
    const stripping: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      if (stripped || !String(input).endsWith('/batch') || !String(init?.body).includes('bizproc.activity.log')) return response;
      stripped = true;
      const body = (await response.json()) as { result: { result: unknown; result_error: unknown } };
      body.result.result = [];
      body.result.result_error = [];
      return new Response(JSON.stringify(body), { status: response.status, headers: { 'content-type': 'application/json' } });
    };
    const clock = new TestClock();
    stack = await startStack({ fetch: stripping, clock });
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'confirmed twice' } });
    const sent = await eventuallyOnClock(
      () => stack.server,
      clock,
      () => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken),
      15_000,
      'result',
    );
    expect(sent.returnValues.status).toBe('sent');
    expect(stripped).toBe(true);
    expect(await jobRow(stack, call.eventToken)).toMatchObject({ confirm_attempts: 1, attempts: 1 });
    expect(stack.b24.calls.filter((item) => item.method === 'batch' && JSON.stringify(item).includes('bizproc.activity.log'))).toHaveLength(2);
  });
});
