import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TabTokens } from '../src/dialogs/tab-token.js';
import type { LiveTimers } from '../src/live/stream.js';
import { PageTokens } from '../src/pages/page-token.js';
import { TestClock } from './support/clock.js';
import { connectOpenLine } from './support/open-channels.js';
import { APP_SECRET, eventually, installAndConfigure, postForm, putSettings, startStack, type Stack } from './support/stack.js';

/** Sleeps that end when the test fires them: pings and the token's end come without waiting 25 s. */
class FiredTimers implements LiveTimers {
  readonly #sleepers = new Set<() => void>();
  #waiting: Array<() => void> = [];

  sleep(_ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        this.#sleepers.delete(wake);
        resolve();
      };
      this.#sleepers.add(wake);
      signal.addEventListener('abort', wake, { once: true });
      for (const waiter of this.#waiting.splice(0)) waiter();
    });
  }

  /** Resolves once some stream is waiting for its next ping. */
  someoneSleeping(): Promise<void> {
    return this.#sleepers.size > 0 ? Promise.resolve() : new Promise((resolve) => this.#waiting.push(resolve));
  }

  fire(): void {
    for (const wake of [...this.#sleepers]) wake();
  }
}

interface OpenStream {
  response: Response;
  /** The next SSE block (an event or a comment), or undefined when the server ended the stream. */
  next(): Promise<string | undefined>;
  /** The next `event: dialog`, skipping comments. */
  nextEvent(): Promise<{ event: string; data: unknown } | undefined>;
  close(): void;
}

const VISIBLE_PHONE = '79161234567';
const OTHER_PHONE = '79265550001';
const OPERATOR = 311416;

describe('live updates: single-use tickets and the SSE stream fed by Chat2Desk webhooks', () => {
  let stack: Stack;
  let clock: TestClock;
  let timers: FiredTimers;
  let visible: { clientId: number; dialogId: number };
  let other: { clientId: number; dialogId: number };
  let generation: number;
  const streams: OpenStream[] = [];

  beforeEach(async () => {
    clock = new TestClock();
    timers = new FiredTimers();
    stack = await startStack({ clock, liveTimers: timers, env: { LIVE_STREAMS_PER_USER: '3', LIVE_STREAMS_PER_PORTAL: '4' } });
    const seed = (phone: string) => {
      const { client, dialog } = stack.c2d.seedClient({ phone, transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
      return { clientId: client.id as number, dialogId: dialog!.id as number };
    };
    visible = seed(VISIBLE_PHONE);
    other = seed(OTHER_PHONE);
    // User 2 is mapped to an operator: the workspace shows them that operator's dialogs.
    await installAndConfigure(stack, { operatorMap: { [String(OPERATOR)]: 2 } });
    generation = (await stack.server.portals.get(stack.b24.memberId))!.installedAt;
  });
  afterEach(async () => {
    for (const stream of streams.splice(0)) stream.close();
    await stack.close();
  });

  const tabToken = (phones = [VISIBLE_PHONE], userId = 1) =>
    new TabTokens(APP_SECRET, clock).issue({
      memberId: stack.b24.memberId,
      userId,
      generation,
      admin: false,
      checkedAt: clock.now(),
      scope: { kind: 'record', entityTypeId: 2, entityId: 7, phones },
    }).token;
  const pageToken = (userId: number, admin: boolean) =>
    new PageTokens(APP_SECRET, clock).issue({ memberId: stack.b24.memberId, userId, generation, admin, checkedAt: clock.now() }).token;

  const askTicket = (bearer?: string) =>
    fetch(`${stack.server.url}/api/live/ticket`, { method: 'POST', headers: bearer === undefined ? {} : { authorization: `Bearer ${bearer}` } });

  async function ticketFor(bearer: string): Promise<string> {
    const response = await askTicket(bearer);
    expect(response.status).toBe(200);
    const body = (await response.json()) as { ticket: string; expiresAt: number };
    expect(body.ticket).toMatch(/^[A-Za-z0-9_-]{43}$/);
    return body.ticket;
  }

  const getStream = (ticket: string, signal?: AbortSignal) => fetch(`${stack.server.url}/api/live?ticket=${encodeURIComponent(ticket)}`, { signal });

  async function openStream(ticket: string): Promise<OpenStream> {
    const aborter = new AbortController();
    const response = await getStream(ticket, aborter.signal);
    expect(response.status).toBe(200);
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    const next = async (): Promise<string | undefined> => {
      for (;;) {
        const end = buffer.indexOf('\n\n');
        if (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          return block;
        }
        const read = await reader.read().catch(() => ({ done: true as const, value: undefined }));
        if (read.done) return undefined;
        buffer += read.value;
      }
    };
    const stream: OpenStream = {
      response,
      next,
      async nextEvent() {
        for (;;) {
          const block = await next();
          if (block === undefined) return undefined;
          if (block.startsWith(':')) continue;
          const lines = Object.fromEntries(block.split('\n').map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 2)]));
          return { event: lines.event!, data: JSON.parse(lines.data!) };
        }
      },
      close: () => aborter.abort(),
    };
    streams.push(stream);
    // The server writes a comment at once: the stream is subscribed before this resolves.
    expect(await next()).toBe(': connected');
    return stream;
  }

  const messageOf = (clientId: number, text: string) => stack.c2d.receiveMessage({ clientId, text }).webhook;
  const transfer = (dialogId: number, clientId: number, operatorId: number, at: string) =>
    stack.c2d.deliverWebhook({ hook_type: 'dialog_transferred', dialog_id: dialogId, client_id: clientId, operator_id: operatorId, event_time: at });

  it('a ticket opens a stream, and a message webhook for a client of the record arrives as a dialog event', async () => {
    const stream = await openStream(await ticketFor(tabToken()));
    expect(stream.response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(stream.response.headers.get('cache-control')).toBe('no-store');
    expect(stream.response.headers.get('x-accel-buffering')).toBe('no');
    expect(await stack.c2d.deliverWebhook(messageOf(visible.clientId, 'Where is my order?'))).toEqual([200]);
    expect(await stream.nextEvent()).toEqual({ event: 'dialog', data: { dialogId: visible.dialogId, clientId: visible.clientId, what: 'message' } });
  });

  it('a change of a client outside the record scope never arrives: the later visible change comes first', async () => {
    const stream = await openStream(await ticketFor(tabToken()));
    await stack.c2d.deliverWebhook(messageOf(other.clientId, 'not for this card'));
    // Bodies without a client object: the client's phones are looked up (cache, then Chat2Desk).
    await transfer(other.dialogId, other.clientId, OPERATOR, '2026-12-02T08:00:00Z');
    await stack.c2d.deliverWebhook({ hook_type: 'add_tag_to_client', client_id: other.clientId, tag_id: 1, event_time: '2026-12-02T08:00:01Z' });
    await stack.c2d.deliverWebhook(stack.c2d.closeDialog(visible.dialogId).closeDialog);
    expect(await stream.nextEvent()).toEqual({ event: 'dialog', data: { dialogId: visible.dialogId, clientId: visible.clientId, what: 'state' } });
  });

  it('the workspace: an operator sees the dialogs of their operator only, an admin sees all', async () => {
    const mine = await openStream(await ticketFor(pageToken(2, false)));
    const admin = await openStream(await ticketFor(pageToken(1, true)));
    await transfer(other.dialogId, other.clientId, 999, '2026-12-02T08:00:00Z');
    await transfer(visible.dialogId, visible.clientId, OPERATOR, '2026-12-02T08:00:01Z');
    expect(await mine.nextEvent()).toEqual({ event: 'dialog', data: { dialogId: visible.dialogId, clientId: visible.clientId, what: 'operator' } });
    expect((await admin.nextEvent())?.data).toEqual({ dialogId: other.dialogId, clientId: other.clientId, what: 'operator' });
    expect((await admin.nextEvent())?.data).toEqual({ dialogId: visible.dialogId, clientId: visible.clientId, what: 'operator' });
  });

  it("in Open Channels mode, a client's Open Channel chat becoming known reaches the open pages", async () => {
    expect((await putSettings(stack, { integrationType: 'open_channels' })).status).toBe(200);
    await connectOpenLine(stack, 1);
    const admin = await openStream(await ticketFor(pageToken(1, true)));
    expect(await stack.c2d.deliverWebhook(messageOf(visible.clientId, 'Is it shipped?'))).toEqual([200]);
    expect((await admin.nextEvent())?.data).toEqual({ dialogId: visible.dialogId, clientId: visible.clientId, what: 'message' });
    // Bitrix24 took the message and named its chat (after the delivery's own event): pages read the client's dialog again.
    expect((await admin.nextEvent())?.data).toEqual({ dialogId: null, clientId: visible.clientId, what: 'open_channel' });
    expect(await stack.db.rows('select client_id from open_channel_chats')).toEqual([{ client_id: visible.clientId }]);
  });

  it('a retried delivery is published once', async () => {
    const stream = await openStream(await ticketFor(tabToken()));
    const webhook = messageOf(visible.clientId, 'once');
    expect(await stack.c2d.deliverWebhook(webhook)).toEqual([200]);
    expect(await stack.c2d.deliverWebhook(webhook)).toEqual([200]);
    await transfer(visible.dialogId, visible.clientId, OPERATOR, '2026-12-02T08:00:00Z');
    expect((await stream.nextEvent())?.data).toMatchObject({ what: 'message' });
    expect((await stream.nextEvent())?.data).toMatchObject({ what: 'operator' });
  });

  it('a ticket opens one stream only: the second use is a 401 JSON answer, never a stream', async () => {
    const ticket = await ticketFor(tabToken());
    await openStream(ticket);
    const again = await getStream(ticket);
    expect(again.status).toBe(401);
    expect(again.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await again.json()).toEqual({ error: expect.stringContaining('ask for a new one') });
  });

  it('a ticket expires after a minute by the clock', async () => {
    const ticket = await ticketFor(tabToken());
    clock.advance(60_000);
    const late = await getStream(ticket);
    expect(late.status).toBe(401);
    expect(late.headers.get('content-type')).toMatch(/^application\/json/);
  });

  it('tickets need a tab or page token of ours, and neither token opens a stream itself', async () => {
    const token = tabToken();
    expect((await askTicket()).status).toBe(401);
    const forged = `${token.slice(0, -4)}AAAA`;
    const refused = await askTicket(forged);
    expect(refused.status).toBe(401);
    expect(await refused.json()).toMatchObject({ renew: true });
    expect((await askTicket(pageToken(1, true).replace('c2dp.', 'c2dt.'))).status).toBe(401);
    const expired = tabToken();
    clock.advance(15 * 60_000);
    expect((await askTicket(expired)).status).toBe(401);
    expect((await getStream(tabToken())).status).toBe(401);
    expect((await getStream('')).status).toBe(401);
  });

  it('behind a proxy a ticket is asked for with the public address as Origin, as every other dialog write is', async () => {
    // PUBLIC_URL differs from the address the server sees (a TLS-terminating proxy): the page's own
    // POST names the public origin, which the dialog writes accept (src/dialogs/viewer.ts sameOriginWrites).
    const proxied = await startStack({ clock, liveTimers: timers, env: { PUBLIC_URL: 'https://chat.example.com' } });
    try {
      await installAndConfigure(proxied);
      const installedAt = (await proxied.server.portals.get(proxied.b24.memberId))!.installedAt;
      const token = new PageTokens(APP_SECRET, clock).issue({ memberId: proxied.b24.memberId, userId: 1, generation: installedAt, admin: true, checkedAt: clock.now() }).token;
      const ask = (origin: string) => fetch(`${proxied.server.url}/api/live/ticket`, { method: 'POST', headers: { authorization: `Bearer ${token}`, origin } });
      const own = await ask('https://chat.example.com');
      expect(own.status, await own.clone().text()).toBe(200);
      expect((await ask('https://evil.example')).status).toBe(403);
    } finally {
      await proxied.close();
    }
  });

  it('pings every interval and ends the stream when the token expires', async () => {
    const stream = await openStream(await ticketFor(tabToken()));
    await timers.someoneSleeping();
    timers.fire();
    expect(await stream.next()).toBe(': ping');
    await timers.someoneSleeping();
    clock.advance(15 * 60_000);
    timers.fire();
    expect(await stream.next()).toBeUndefined();
  });

  it('a workspace stream ends when its app page token expires', async () => {
    const stream = await openStream(await ticketFor(pageToken(1, true)));
    await timers.someoneSleeping();
    clock.advance(15 * 60_000);
    timers.fire();
    expect(await stream.next()).toBeUndefined();
  });

  it('a stopping server ends its open streams instead of waiting for their tokens to expire', async () => {
    const stream = await openStream(await ticketFor(tabToken()));
    await stack.restart();
    expect(await stream.next()).toBeUndefined();
  });

  it('an uninstall and a reinstall end the streams opened before them', async () => {
    const stream = await openStream(await ticketFor(tabToken()));
    expect((await postForm(`${stack.server.url}/bitrix24/events`, stack.b24.uninstallEventBody())).status).toBe(200);
    await eventually(async () => (await stack.server.portals.get(stack.b24.memberId))?.status === 'uninstalled', 15_000, 'the uninstall');
    clock.advance(1000);
    await installAndConfigure(stack);
    await stack.c2d.deliverWebhook(messageOf(visible.clientId, 'after the reinstall'));
    expect(await stream.next()).toBeUndefined();
  });

  it('caps open streams per user and per portal', async () => {
    const first = await openStream(await ticketFor(tabToken()));
    await openStream(await ticketFor(tabToken()));
    await openStream(await ticketFor(pageToken(1, true)));
    const overUser = await getStream(await ticketFor(tabToken()));
    expect(overUser.status).toBe(429);
    expect(await overUser.json()).toEqual({ error: expect.stringContaining('You already have 3 live streams open') });
    await openStream(await ticketFor(pageToken(2, false)));
    const overPortal = await getStream(await ticketFor(pageToken(2, false)));
    expect(overPortal.status).toBe(429);
    expect(await overPortal.json()).toEqual({ error: expect.stringContaining('This portal already has 4 live streams open') });
    // A closed stream frees its place.
    first.close();
    for (let attempt = 0; ; attempt += 1) {
      const retry = await getStream(await ticketFor(tabToken()));
      if (retry.status === 200) {
        await retry.body?.cancel();
        break;
      }
      expect(attempt).toBeLessThan(20);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  });
});
