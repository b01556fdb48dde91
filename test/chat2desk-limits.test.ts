import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../src/clock.js';
import { accountKey } from '../src/chat2desk/client.js';
import { loadConfig } from '../src/config.js';
import { Chat2DeskRateStore } from '../src/db/chat2desk-rates.js';
import { eventually, installAndConfigure, sentMessages, startStack, type Stack } from './support/stack.js';

/** Fires one "Send message" robot per phone, all at once, and waits until every result is back in Bitrix24. */
async function sendToEach(stack: Stack, phones: string[], timeoutMs = 30_000): Promise<void> {
  const calls = await Promise.all(phones.map((phone) => stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone, text: 'Your order is ready' } })));
  for (const call of calls) expect(call.status).toBe(200);
  const tokens = new Set(calls.map((call) => call.eventToken));
  await eventually(() => stack.b24.sentEvents.filter((event) => tokens.has(event.eventToken)).length === phones.length, timeoutMs, 'every result reported');
  const statuses = stack.b24.sentEvents.filter((event) => tokens.has(event.eventToken)).map((event) => event.returnValues.status);
  expect(statuses.every((status) => status === 'sent')).toBe(true);
}

function seedClients(stack: Stack, count: number, prefix = '7916'): string[] {
  const phones = Array.from({ length: count }, (_, i) => `${prefix}${String(1_000_000 + i).padStart(7, '0')}`);
  for (const phone of phones) stack.c2d.seedClient({ phone, transport: 'whatsapp', channelId: 17404 });
  return phones;
}

describe('Chat2Desk concurrency per account', () => {
  let stack: Stack;
  afterEach(() => stack.close());

  it('never has more than CHAT2DESK_CONCURRENCY requests in flight for one account, with many robot runs at once', async () => {
    stack = await startStack({ env: { CHAT2DESK_CONCURRENCY: '2', PORTAL_CONCURRENCY: '8' } });
    await installAndConfigure(stack);
    const phones = seedClients(stack, 24);
    // Slow answers keep requests in flight long enough for the runs to contend for the two slots.
    stack.c2d.delayNext({}, 30, 1_000);

    await sendToEach(stack, phones);

    expect(sentMessages(stack)).toHaveLength(24);
    expect(stack.c2d.maxInFlight()).toBe(2);
  });
});

/** What the server stored as learned for the fake's account. */
function storedRate(stack: Stack) {
  return new Chat2DeskRateStore(stack.server.database, systemClock).get(accountKey(stack.c2d.url, stack.c2d.token));
}

const refusals = (stack: Stack) => stack.c2d.calls.filter((call) => call.status === 429).length;

describe('Chat2Desk rate learned per account', () => {
  let stack: Stack;
  afterEach(() => stack.close());

  it('climbs above the configured rate when Chat2Desk allows more, and stores what it learned', async () => {
    stack = await startStack({ c2d: { rateLimit: { requests: 100, perMs: 1_000 } }, env: { CHAT2DESK_REQUESTS_PER_MINUTE: '300' } });
    await installAndConfigure(stack);
    const phones = seedClients(stack, 40);

    await sendToEach(stack, phones);

    await stack.restart(); // the learned rate is stored at shutdown at the latest
    const stored = await storedRate(stack);
    expect(stored?.perMinute).toBeGreaterThan(600);
    expect(refusals(stack)).toBeLessThanOrEqual(2);
  });

  it('backs off when Chat2Desk allows less than configured, keeps its refusals few, and resumes from the learned rate after a restart', async () => {
    // Told 80/s; the fake allows 20 per second. Real time (the pacing waits real time on purpose), so
    // the fake's limit is high enough that the bursts below take a few seconds, not ten.
    stack = await startStack({ c2d: { rateLimit: { requests: 20, perMs: 1_000 } }, env: { CHAT2DESK_REQUESTS_PER_MINUTE: '4800' } });
    await installAndConfigure(stack);
    const phones = seedClients(stack, 60);
    // The fake's one-second window, and our client's own window of accepted requests (real time), forget the set-up: the burst starts on an empty window.
    await new Promise((resolve) => setTimeout(resolve, 1_100));

    await sendToEach(stack, phones.slice(0, 40));

    expect(sentMessages(stack)).toHaveLength(40);
    const refusedBefore = refusals(stack);
    expect(refusedBefore).toBeGreaterThan(0);
    expect(refusedBefore).toBeLessThanOrEqual(8);
    await stack.restart();
    const stored = await storedRate(stack);
    // Near the fake's 1,200 a minute, far from the 4,800 configured (a loaded machine's pacing learned 985 once).
    expect(stored?.limitPerMinute).toBeGreaterThanOrEqual(900);
    expect(stored?.limitPerMinute).toBeLessThanOrEqual(1_400);
    expect(stored?.perMinute).toBeLessThanOrEqual(1_400);

    // The fake's one-second window forgets the first burst; the restarted server starts from ~20/s, not 80/s.
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    stack.c2d.resetCalls();
    await sendToEach(stack, phones.slice(40));
    expect(sentMessages(stack)).toHaveLength(20);
    expect(refusals(stack)).toBeLessThanOrEqual(1);
  });
});

describe('Chat2Desk rate configuration', () => {
  it('starts from CHAT2DESK_REQUESTS_PER_MINUTE and caps the learned rate at CHAT2DESK_MAX_REQUESTS_PER_MINUTE', () => {
    expect(loadConfig({}).chat2desk).toMatchObject({ requestsPerMinute: 300, maxRequestsPerMinute: 6000 });
    expect(loadConfig({ CHAT2DESK_REQUESTS_PER_MINUTE: '9000' }).chat2desk.maxRequestsPerMinute).toBe(9000);
    expect(loadConfig({ CHAT2DESK_MAX_REQUESTS_PER_MINUTE: '1200' }).chat2desk.maxRequestsPerMinute).toBe(1200);
  });

  it('refuses a ceiling below the starting rate, naming the variable', () => {
    expect(() => loadConfig({ CHAT2DESK_REQUESTS_PER_MINUTE: '600', CHAT2DESK_MAX_REQUESTS_PER_MINUTE: '300' })).toThrow(/CHAT2DESK_MAX_REQUESTS_PER_MINUTE/);
    expect(() => loadConfig({ CHAT2DESK_MAX_REQUESTS_PER_MINUTE: 'fast' })).toThrow(/CHAT2DESK_MAX_REQUESTS_PER_MINUTE/);
  });
});
