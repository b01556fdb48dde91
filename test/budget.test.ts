import { randomUUID } from 'node:crypto';
import { systemClock } from '../src/clock.js';
import { TestClock } from './support/clock.js';
import { request } from 'node:http';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { BitrixUsers } from '../src/bitrix24/users.js';
import { LeakyBucket } from '../src/rate-limit.js';
import { adminHeaders, eventually, install, postForm, startStack, type Stack } from './support/stack.js';

/** The callers' share of the portal's bucket at the test's (default) plan: 20% of a burst of 50. */
const CALLER_CHECK_SHARE = 10;

/** A form POST from another loopback address: the server bounds install attempts per TCP peer. */
function postFormFrom(localAddress: string, url: string, body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const outgoing = request(url, { method: 'POST', localAddress, headers: { 'content-type': 'application/x-www-form-urlencoded' } }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        text += chunk;
      });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, text }));
    });
    outgoing.on('error', reject);
    outgoing.end(body);
  });
}

describe("the portal's REST budget under unauthenticated traffic", () => {
  let stack: Stack;
  afterEach(() => stack.close());

  const settingsUrl = () => `${stack.server.url}/api/settings`;
  const profileCalls = () => stack.b24.calls.filter((call) => call.method === 'profile');
  const randomBearer = () => ({ authorization: `Bearer ${randomUUID()}`, 'x-bitrix24-member-id': stack.b24.memberId });

  it('refuses a flood of unverified settings requests at once, beyond the callers share, and robot results still go out first', async () => {
    stack = await startStack();
    await install(stack);
    stack.b24.resetCalls();

    const flood = Array.from({ length: 200 }, () => fetch(settingsUrl(), { headers: randomBearer() }));
    const robot = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: 'call me maybe', text: 'hi' } });
    expect(robot.status).toBe(200);
    const sent = await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === robot.eventToken), 15_000, 'event.send');
    expect(sent.returnValues).toMatchObject({ status: 'failed' });
    const eventSendAt = stack.b24.calls.findIndex((call) => call.method === 'bizproc.event.send');
    expect(stack.b24.calls.slice(0, eventSendAt).filter((call) => call.method === 'profile').length).toBeLessThanOrEqual(CALLER_CHECK_SHARE);

    const answers = await Promise.all(flood);
    const refused = answers.filter((answer) => answer.status === 429);
    expect(refused.length).toBeGreaterThanOrEqual(200 - CALLER_CHECK_SHARE);
    expect(answers.filter((answer) => answer.status !== 429).every((answer) => answer.status === 401)).toBe(true);
    const retryAfter = Number(refused[0]!.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(0);
    expect(await refused[0]!.json()).toEqual({ error: `Too many unverified requests for this portal; retry in ${retryAfter} s` });
    // Only the share ever reached the portal (the installer's check spent one of it too).
    expect(profileCalls().length).toBeLessThanOrEqual(CALLER_CHECK_SHARE);
  });

  it('lets a reinstall through while bogus bearer tokens have used up the callers share', async () => {
    stack = await startStack();
    await install(stack);
    const flood = await Promise.all(Array.from({ length: 50 }, () => fetch(settingsUrl(), { headers: randomBearer() })));
    expect(flood.some((answer) => answer.status === 429)).toBe(true);
    // Bitrix24 does not retry the install callback: its admin check must not wait for the share.
    const reinstall = await postForm(`${stack.server.url}/install`, stack.b24.installEventBody());
    expect(reinstall.status).toBe(200);
    expect(await reinstall.json()).toEqual({ status: 'success' });
  });

  it('serves a token verified within the minute without asking the portal again, even while unverified callers are refused', async () => {
    stack = await startStack();
    await install(stack);
    stack.b24.resetCalls();
    const token = stack.b24.issueAuth(1).access_token;
    const admin = { authorization: `Bearer ${token}`, 'x-bitrix24-member-id': stack.b24.memberId };
    const asked = () => profileCalls().filter((call) => call.accessToken === token);

    // Requests with the same new token at once share one question.
    const first = await Promise.all(Array.from({ length: 5 }, () => fetch(settingsUrl(), { headers: admin })));
    expect(first.map((answer) => answer.status)).toEqual([200, 200, 200, 200, 200]);
    expect(asked()).toHaveLength(1);

    const flood = await Promise.all(Array.from({ length: 50 }, () => fetch(settingsUrl(), { headers: randomBearer() })));
    expect(flood.some((answer) => answer.status === 429)).toBe(true);
    const newcomer = await fetch(settingsUrl(), { headers: adminHeaders(stack) });
    expect(newcomer.status).toBe(429);

    for (let i = 0; i < 3; i++) expect((await fetch(settingsUrl(), { headers: admin })).status).toBe(200);
    expect(asked()).toHaveLength(1);
  });

  it('asks the portal again once the minute a verdict is remembered has passed by the clock', async () => {
    const clock = new TestClock();
    stack = await startStack({ clock });
    await install(stack);
    stack.b24.resetCalls();
    const token = stack.b24.issueAuth(1).access_token;
    const admin = { authorization: `Bearer ${token}`, 'x-bitrix24-member-id': stack.b24.memberId };
    const asked = () => profileCalls().filter((call) => call.accessToken === token);

    expect((await fetch(settingsUrl(), { headers: admin })).status).toBe(200);
    clock.advance(59_000);
    expect((await fetch(settingsUrl(), { headers: admin })).status).toBe(200);
    expect(asked()).toHaveLength(1);
    clock.advance(2_000);
    expect((await fetch(settingsUrl(), { headers: admin })).status).toBe(200);
    expect(asked()).toHaveLength(2);
  });

  it('remembers a refused token too, so repeating a guess costs the portal nothing', async () => {
    stack = await startStack();
    await install(stack);
    stack.b24.resetCalls();
    const guess = randomBearer();
    const answers = await Promise.all(Array.from({ length: 5 }, () => fetch(settingsUrl(), { headers: guess })));
    expect(answers.map((answer) => answer.status)).toEqual([401, 401, 401, 401, 401]);
    expect((await fetch(settingsUrl(), { headers: guess })).status).toBe(401);
    expect(profileCalls()).toHaveLength(1);
  });
});

describe('the leaky bucket', () => {
  it('gives a freed slot to robot work before caller checks that were waiting longer', async () => {
    let now = 0;
    const sleeping: Array<() => void> = [];
    const sleep = (ms: number) =>
      new Promise<void>((resolve) =>
        sleeping.push(() => {
          now += ms;
          resolve();
        }),
      );
    const bucket = new LeakyBucket(1, 1, () => now, sleep);
    await bucket.acquire('work');
    const served: string[] = [];
    const waiters = [
      bucket.acquire('check').then(() => served.push('check 1')),
      bucket.acquire('check').then(() => served.push('check 2')),
      bucket.acquire('work').then(() => served.push('work')),
    ];
    for (let slot = 0; slot < 3; slot++) {
      await vi.waitFor(() => expect(sleeping).toHaveLength(1));
      sleeping.shift()!();
      await vi.waitFor(() => expect(served).toHaveLength(slot + 1));
    }
    await Promise.all(waiters);
    expect(served).toEqual(['work', 'check 1', 'check 2']);
  });
});

describe('Bitrix24 user lookups', () => {
  let stack: Stack;
  afterEach(() => stack.close());

  const userGets = (id: number) => stack.b24.calls.filter((call) => call.method === 'user.get' && (call.params.FILTER as { ID?: unknown } | undefined)?.ID === id);

  it('sends one user.get for lookups of the same user that miss at once', async () => {
    stack = await startStack();
    await install(stack);
    stack.b24.resetCalls();
    const users = new BitrixUsers(stack.server.rest, systemClock);
    const found = await Promise.all(Array.from({ length: 8 }, () => users.byId(stack.b24.memberId, 2)));
    expect(found.map((user) => user?.EMAIL)).toEqual(Array(8).fill('manager@example.com'));
    expect(userGets(2)).toHaveLength(1);
    expect(await users.byId(stack.b24.memberId, 2)).toMatchObject({ ID: '2' });
    expect(userGets(2)).toHaveLength(1);
  });

  it('asks Bitrix24 again once an answer is older than the TTL by the clock', async () => {
    stack = await startStack();
    await install(stack);
    stack.b24.resetCalls();
    const clock = new TestClock();
    const users = new BitrixUsers(stack.server.rest, clock, { ttlMs: 60_000 });
    await users.byId(stack.b24.memberId, 2);
    clock.advance(59_000);
    await users.byId(stack.b24.memberId, 2);
    expect(userGets(2)).toHaveLength(1);
    clock.advance(2_000);
    expect(await users.byId(stack.b24.memberId, 2)).toMatchObject({ ID: '2' });
    expect(userGets(2)).toHaveLength(2);
  });

  it('keeps at most the configured number of answers, dropping the least recently used', async () => {
    stack = await startStack();
    await install(stack);
    stack.b24.resetCalls();
    const users = new BitrixUsers(stack.server.rest, systemClock, { max: 2 });
    const memberId = stack.b24.memberId;
    await users.byId(memberId, 2);
    await users.byId(memberId, 1);
    await users.byId(memberId, 1);
    expect(await users.byId(memberId, 404)).toBeUndefined();
    expect(userGets(1)).toHaveLength(1);
    await users.byId(memberId, 2);
    expect(userGets(2)).toHaveLength(2);
  });
});

describe('install attempts', () => {
  let stack: Stack;
  afterEach(() => stack.close());

  const appInfoCalls = () => stack.b24.oauthCalls.filter((call) => call.method === 'app.info');

  it('lets only the per-address bound of forged installs reach the authorization server, and a real install from elsewhere still works', async () => {
    stack = await startStack();
    const forged = stack.b24.installEventBody({ accessToken: 'forged-token' });
    const answers = await Promise.all(Array.from({ length: 300 }, () => postForm(`${stack.server.url}/install`, forged)));

    const perAddress = stack.config.installAttemptsPerMinute.perAddress;
    expect(appInfoCalls().length).toBeLessThanOrEqual(perAddress);
    const refused = answers.filter((answer) => answer.status === 429);
    expect(refused).toHaveLength(300 - appInfoCalls().length);
    const retryAfter = Number(refused[0]!.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(0);
    expect(await refused[0]!.json()).toEqual({ status: 'error', error: `Too many install attempts from your address; retry in ${retryAfter} s` });
    expect(await stack.server.portals.get(stack.b24.memberId)).toBeUndefined();

    const real = await postFormFrom('127.0.0.2', `${stack.server.url}/install`, stack.b24.installEventBody());
    expect(real.status).toBe(200);
    expect((await stack.server.portals.get(stack.b24.memberId))?.status).toBe('active');
  });

  it('bounds install attempts from all addresses together', async () => {
    stack = await startStack({ env: { INSTALL_ATTEMPTS_PER_ADDRESS_PER_MINUTE: '5', INSTALL_ATTEMPTS_PER_MINUTE: '12' } });
    const forged = stack.b24.installEventBody({ accessToken: 'forged-token' });
    const url = `${stack.server.url}/install`;
    for (const address of ['127.0.0.2', '127.0.0.3']) {
      const answers = await Promise.all(Array.from({ length: 20 }, () => postFormFrom(address, url, forged)));
      expect(answers.filter((answer) => answer.status === 429)).toHaveLength(15);
    }
    expect(appInfoCalls()).toHaveLength(10);
    const third = await Promise.all(Array.from({ length: 20 }, () => postFormFrom('127.0.0.4', url, forged)));
    expect(third.filter((answer) => answer.status === 429)).toHaveLength(18);
    expect(appInfoCalls()).toHaveLength(12);

    const real = await postFormFrom('127.0.0.5', url, stack.b24.installEventBody());
    expect(real.status).toBe(429);
    expect(JSON.parse(real.text).error).toMatch(/^Too many install attempts on this server; retry in \d+ s$/);
    expect(await stack.server.portals.get(stack.b24.memberId)).toBeUndefined();
  });
});
