import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { OpenLineMessage } from './fakes/bitrix24.js';
import { startChildStack, type ChildStack } from './support/child-server.js';
import { adminHeaders, eventually, installAndConfigure, postForm, putSettings } from './support/stack.js';

/**
 * Open Channels mode and kill -9 (issue 10): the server runs as a child process on its SQLite file
 * and is killed at each moment where a message was acknowledged upstream but not yet forwarded, or
 * forwarded but not yet recorded, in each direction; then started again on the same file. Nothing
 * acknowledged is lost, nothing is sent twice, and what cannot be told is reported in doubt.
 *
 * Inbound: Chat2Desk webhook → ol_inbound → imconnector.send.messages (Bitrix24 has no look-up by our
 * id, so a send whose answer was lost is never repeated: docs/protocols.md B22).
 * Outbound: OnImConnectorMessageAdd → ol_outbound → Chat2Desk POST /messages (settled by external_id)
 * → imconnector.send.status.delivery (B23).
 */

type LogEntry = { title: string; status: string; summary: string; error: { message: string; nextStep: string } | null };

const CHANNEL = 17404;
const IN_DOUBT = /may already have been sent to the Open Channel/;

describe('Open Channels and kill -9', () => {
  const cleanup: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step();
  });

  /** A child server installed, connected to Chat2Desk, in Open Channels mode with line 1 connected (as the connector page does it). */
  async function openChannelsChild(): Promise<ChildStack> {
    // The portal's REST rate raised on both sides so a burst is not paced at the production 2/s.
    const stack = await startChildStack({ env: { B24_RATE_PER_SECOND: '200', B24_RATE_BURST: '250' }, b24: { rateLimit: { drainPerSecond: 200, burst: 250 } } });
    cleanup.push(() => stack.close());
    await installAndConfigure(stack);
    const switched = await putSettings(stack, { integrationType: 'open_channels' });
    expect(switched.status).toBe(200);
    const auth = stack.b24.issueAuth(1);
    const page = stack.b24.settingConnectorPageRequest({ line: 1, connector: 'chat2desk' }, { accessToken: auth.access_token });
    const html = await (await postForm(`${stack.server.url}/connector`, page.body, page.query)).text();
    const data = JSON.parse(/<script type="application\/json" id="page-data">(.*?)<\/script>/s.exec(html)![1]!) as { token: string; options: unknown };
    const connected = await fetch(`${stack.server.url}/api/connector/lines/1`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${data.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ options: data.options }),
    });
    expect(connected.status).toBe(200);
    return stack;
  }

  const chatOf = (stack: ChildStack, clientId: number): OpenLineMessage[] => {
    try {
      return stack.b24.openLineMessages(1, `c${clientId}`);
    } catch {
      return [];
    }
  };
  const clientTexts = (stack: ChildStack, clientId: number) =>
    chatOf(stack, clientId)
      .filter((message) => message.from === 'client')
      .map((message) => message.text);

  /** The event log's entries of inbound messages (src/event-log.ts titles them). */
  async function inboundLog(stack: ChildStack): Promise<LogEntry[]> {
    const response = await fetch(`${stack.server.url}/api/event-log?limit=100&kind=open_channels`, { headers: adminHeaders(stack) });
    expect(response.status).toBe(200);
    return ((await response.json()) as { entries: LogEntry[] }).entries.filter((entry) => entry.title === 'Chat2Desk message to Open Channels');
  }

  async function deliver(stack: ChildStack, webhook: Record<string, unknown>) {
    expect(await stack.c2d.deliverWebhook(webhook)).toEqual([200]);
  }

  /** A file store of Chat2Desk's whose first download waits at a gate: the job is stopped before it sends anything. */
  async function gatedStorage() {
    let first = true;
    let arrive = () => {};
    const arrived = new Promise<void>((resolve) => {
      arrive = resolve;
    });
    let open = () => {};
    const opened = new Promise<void>((resolve) => {
      open = resolve;
    });
    const storage = createServer((_request: IncomingMessage, response: ServerResponse) => {
      const answer = () => response.writeHead(200, { 'content-type': 'application/pdf' }).end('%PDF-1.4\n% a contract\n');
      if (!first) return answer();
      first = false;
      arrive();
      void opened.then(answer);
    });
    await new Promise<void>((resolve) => storage.listen(0, '127.0.0.1', resolve));
    cleanup.push(async () => {
      open();
      storage.closeAllConnections();
      await new Promise((resolve) => storage.close(resolve));
    });
    return { link: `http://127.0.0.1:${(storage.address() as AddressInfo).port}/storage/contract.pdf`, arrived };
  }

  describe('inbound (Chat2Desk → Open Channel)', () => {
    it('killed after the webhook was acknowledged, before the message went to Bitrix24: sent once after the restart, and a repeated delivery adds nothing', async () => {
      const stack = await openChannelsChild();
      const storage = await gatedStorage();
      const { message, webhook } = stack.c2d.receiveMessage({ phone: '79161234567', text: 'the contract', attachments: [{ name: 'contract.pdf', link: storage.link }] });
      const clientId = Number(message.client_id);
      await deliver(stack, webhook);
      // The job is fetching the client's file, before anything goes to Bitrix24.
      await storage.arrived;
      await stack.kill();
      expect(stack.b24.calls.filter((call) => call.method === 'imconnector.send.messages')).toHaveLength(0);

      await stack.restart();
      const [arrived] = await eventually(() => chatOf(stack, clientId).length > 0 && chatOf(stack, clientId), 30_000, 'the message after the restart');
      expect(arrived!.text).toBe('the contract');
      expect(arrived!.files.map((file) => file.name)).toEqual(['contract.pdf']);
      // Chat2Desk delivers the same webhook again (its retry after our missing answer, or a replay); then the client writes on.
      await deliver(stack, webhook);
      await deliver(stack, stack.c2d.receiveMessage({ clientId, text: 'and one more' }).webhook);
      await eventually(() => clientTexts(stack, clientId).includes('and one more'), 30_000, 'the next message');
      expect(clientTexts(stack, clientId)).toEqual(['the contract', 'and one more']);
    }, 60_000);

    it('killed after Bitrix24 took the message, before its answer reached us: not sent again, the event log says it may be there, the conversation goes on', async () => {
      const stack = await openChannelsChild();
      const answer = stack.b24.hold({ rest: 'imconnector.send.messages', afterRunning: true });
      cleanup.push(() => answer.release());
      const first = stack.c2d.receiveMessage({ phone: '79161234568', text: 'taken, answer lost' });
      const clientId = Number(first.message.client_id);
      await deliver(stack, first.webhook);
      await answer.arrived;
      expect(clientTexts(stack, clientId)).toEqual(['taken, answer lost']);
      await stack.kill();

      await stack.restart();
      const failed = await eventually(async () => (await inboundLog(stack)).find((entry) => entry.status === 'failed'), 30_000, 'the message reported in doubt');
      expect(failed.error!.message).toMatch(IN_DOUBT);
      expect(failed.error!.nextStep).toMatch(/Open Channel chat in Bitrix24/);
      // A repeated delivery of the same webhook, and the next message of the conversation.
      await deliver(stack, first.webhook);
      await deliver(stack, stack.c2d.receiveMessage({ clientId, text: 'next one' }).webhook);
      await eventually(() => clientTexts(stack, clientId).includes('next one'), 30_000, 'the next message');
      expect(clientTexts(stack, clientId)).toEqual(['taken, answer lost', 'next one']);
      expect(stack.b24.calls.filter((call) => call.method === 'imconnector.send.messages')).toHaveLength(2);
    }, 60_000);

    it('a burst of 30 messages over 3 conversations killed mid-way: each arrives once or is reported in doubt, each conversation in order, redeliveries add nothing', async () => {
      const stack = await openChannelsChild();
      const clients = ['79161230001', '79161230002', '79161230003'].map((phone) => Number(stack.c2d.seedClient({ phone, transport: 'whatsapp', channelId: CHANNEL }).client.id));
      const text = (clientId: number, n: number) => `client ${clientId} message ${n}`;
      const webhooks: Array<Record<string, unknown>> = [];
      for (let n = 1; n <= 10; n++) for (const clientId of clients) webhooks.push(stack.c2d.receiveMessage({ clientId, text: text(clientId, n) }).webhook);
      // The first twelve go through; then Bitrix24 takes the next call (the next message of one, two or all
      // three conversations: messages of one line share a call, src/open-channels/inbound-sends.ts) and its
      // answer is held; the rest queue behind it.
      for (const webhook of webhooks.slice(0, 12)) await deliver(stack, webhook);
      await eventually(() => clients.every((clientId) => clientTexts(stack, clientId).length === 4), 30_000, 'the first twelve');
      const sendsBefore = stack.b24.calls.filter((call) => call.method === 'imconnector.send.messages').length;
      const answer = stack.b24.hold({ rest: 'imconnector.send.messages', afterRunning: true });
      cleanup.push(() => answer.release());
      for (const webhook of webhooks.slice(12)) await deliver(stack, webhook);
      await answer.arrived;
      await stack.kill();
      const heldCall = stack.b24.calls.filter((call) => call.method === 'imconnector.send.messages')[sendsBefore]!;
      const taken = (heldCall.params.MESSAGES as unknown[]).length;
      expect(taken).toBeGreaterThanOrEqual(1);
      expect(taken).toBeLessThanOrEqual(3);
      // One message per conversation is in flight at most: the held call took the fifth message of `taken` conversations.
      expect(clients.map((clientId) => clientTexts(stack, clientId).length).sort()).toEqual([4, 4, 4].map((count, index) => (index >= 3 - taken ? count + 1 : count)));

      await stack.restart();
      // Chat2Desk delivers everything again (its retries, or a replay): stored once already, nothing more.
      for (const webhook of webhooks) await deliver(stack, webhook);
      // A last message per conversation: once it is in, everything before it in that conversation was decided.
      for (const clientId of clients) await deliver(stack, stack.c2d.receiveMessage({ clientId, text: text(clientId, 11) }).webhook);
      await eventually(() => clients.every((clientId) => clientTexts(stack, clientId).length >= 11), 60_000, 'every conversation to its last message');

      for (const clientId of clients) {
        expect(clientTexts(stack, clientId)).toEqual(Array.from({ length: 11 }, (_, index) => text(clientId, index + 1)));
      }
      // The messages whose answer was lost are not sent again: Bitrix24 has them, and the event log says they may be there.
      const entries = await inboundLog(stack);
      const failed = entries.filter((entry) => entry.status === 'failed');
      expect(failed).toHaveLength(taken);
      for (const entry of failed) expect(entry.error!.message).toMatch(IN_DOUBT);
      expect(entries.filter((entry) => entry.status === 'done')).toHaveLength(33 - taken);
      // Every message went to Bitrix24 in exactly one call.
      const sent = stack.b24.calls
        .filter((call) => call.method === 'imconnector.send.messages')
        .flatMap((call) => (call.params.MESSAGES as Array<{ message: { id: string } }>).map((entry) => entry.message.id));
      expect(sent).toHaveLength(33);
      expect(new Set(sent).size).toBe(33);
    }, 120_000);
  });

  describe('outbound (Open Channel → Chat2Desk)', () => {
    /** A conversation in the Open Channel: the client wrote from WhatsApp and the message arrived in chat c<client id>. */
    async function conversation(stack: ChildStack, phone: string): Promise<number> {
      const seeded = stack.c2d.seedClient({ phone, transport: 'whatsapp', channelId: CHANNEL, withDialog: 'open' });
      const clientId = Number(seeded.client.id);
      await deliver(stack, stack.c2d.receiveMessage({ clientId, text: 'Hello' }).webhook);
      await eventually(() => chatOf(stack, clientId).length === 1, 30_000, 'the client in the Open Channel');
      return clientId;
    }

    async function operatorWrites(stack: ChildStack, clientId: number, text: string): Promise<number> {
      const written = await stack.b24.operatorWrites({ line: 1, externalChatId: `c${clientId}`, text });
      expect(written.replies.map((reply) => reply.status)).toEqual([200]);
      return written.imMessageId;
    }

    /** What Chat2Desk holds of one Open Channel message (its external_id), in the order it took them. */
    const atChat2Desk = (stack: ChildStack, imMessageId: number) => stack.c2d.account().messages.filter((message) => message.external_id === `b24ol:${imMessageId}`);
    const statusReports = (stack: ChildStack, imMessageId: number) =>
      stack.b24.connectorStatusReports.flatMap((report) => report.messages).filter((message) => message.imMessageId === imMessageId);
    const operatorMessage = (stack: ChildStack, clientId: number, imMessageId: number) => chatOf(stack, clientId).find((message) => message.imMessageId === imMessageId)!;
    const delivered = (stack: ChildStack, clientId: number, imMessageId: number) =>
      eventually(() => operatorMessage(stack, clientId, imMessageId).delivery === 'delivered', 30_000, `message ${imMessageId} delivered`);
    /** Bitrix24 delivers the same OnImConnectorMessageAdd again: answered as a duplicate, nothing queued. */
    async function repeatEvent(stack: ChildStack, imMessageId: number) {
      const names = (body: string) => [...new URLSearchParams(body)].filter(([key]) => key.endsWith('[im][message_id]')).map(([, value]) => Number(value));
      const add = stack.b24.deliveries.find(
        (delivery) => delivery.kind === 'event' && delivery.body.includes('ONIMCONNECTORMESSAGEADD') && names(delivery.body).includes(imMessageId),
      );
      expect(add).toBeDefined();
      const again = await postForm(`${stack.server.url}/bitrix24/events`, add!.body);
      expect(again.status).toBe(200);
      expect(await again.json()).toMatchObject({ queued: 0, duplicates: 1 });
    }

    it('killed after the event was acknowledged, before the message went to Chat2Desk: sent once after the restart, delivered, a repeated event adds nothing', async () => {
      const stack = await openChannelsChild();
      const clientId = await conversation(stack, '79161234571');
      // The job asks Chat2Desk for the client's dialogs (its channel and messenger) before sending: held there.
      const lookUp = stack.c2d.holdNext({ method: 'GET', path: /^\/clients\/\d+\/dialogs$/ });
      cleanup.push(() => lookUp.release());
      const id = await operatorWrites(stack, clientId, 'before the crash');
      await lookUp.arrived;
      await stack.kill();
      expect(atChat2Desk(stack, id)).toHaveLength(0);

      await stack.restart();
      await delivered(stack, clientId, id);
      expect(atChat2Desk(stack, id)).toHaveLength(1);
      expect(statusReports(stack, id)).toHaveLength(1);
      await repeatEvent(stack, id);
      const next = await operatorWrites(stack, clientId, 'after the repeat');
      await delivered(stack, clientId, next);
      expect(atChat2Desk(stack, id)).toHaveLength(1);
      expect(statusReports(stack, id)).toHaveLength(1);
    }, 60_000);

    it('killed after Chat2Desk took the message, before its answer reached us: found by external_id, not sent again, the delivery status reaches Bitrix24 with its id', async () => {
      const stack = await openChannelsChild();
      const clientId = await conversation(stack, '79161234572');
      const answer = stack.c2d.holdNext({ method: 'POST', path: '/messages' });
      cleanup.push(() => answer.release());
      const id = await operatorWrites(stack, clientId, 'taken, answer lost');
      await answer.arrived;
      expect(atChat2Desk(stack, id)).toHaveLength(1);
      await stack.kill();

      await stack.restart();
      await delivered(stack, clientId, id);
      const [taken] = atChat2Desk(stack, id);
      expect(atChat2Desk(stack, id)).toHaveLength(1);
      expect(operatorMessage(stack, clientId, id).externalIds).toEqual([String(taken!.id)]);
      expect(statusReports(stack, id)).toHaveLength(1);
      await repeatEvent(stack, id);
      await delivered(stack, clientId, await operatorWrites(stack, clientId, 'after the repeat'));
      expect(atChat2Desk(stack, id)).toHaveLength(1);
    }, 60_000);

    it('killed after the message was sent, before the delivery status: the status is sent once after the restart, the message not again', async () => {
      const stack = await openChannelsChild();
      const clientId = await conversation(stack, '79161234573');
      const status = stack.b24.hold({ rest: 'imconnector.send.status.delivery' });
      cleanup.push(() => status.release());
      const id = await operatorWrites(stack, clientId, 'sent, status pending');
      await status.arrived;
      expect(atChat2Desk(stack, id)).toHaveLength(1);
      await stack.kill();
      // The held status never ran: Bitrix24 has no report for the message.
      expect(statusReports(stack, id)).toHaveLength(0);

      await stack.restart();
      await delivered(stack, clientId, id);
      expect(statusReports(stack, id)).toHaveLength(1);
      expect(atChat2Desk(stack, id)).toHaveLength(1);
      expect(operatorMessage(stack, clientId, id).externalIds).toEqual([String(atChat2Desk(stack, id)[0]!.id)]);
    }, 60_000);

    it('a burst of 30 messages over 3 conversations killed mid-way: each reaches Chat2Desk once, in its conversation order, and is delivered once', async () => {
      const stack = await openChannelsChild();
      const clients: number[] = [];
      for (const phone of ['79161230011', '79161230012', '79161230013']) clients.push(await conversation(stack, phone));
      const text = (clientId: number, n: number) => `client ${clientId} answer ${n}`;
      const written = new Map<number, number[]>(clients.map((clientId) => [clientId, []]));
      const write = async (n: number) => {
        for (const clientId of clients) written.get(clientId)!.push(await operatorWrites(stack, clientId, text(clientId, n)));
      };
      for (let n = 1; n <= 4; n++) await write(n);
      await Promise.all(clients.flatMap((clientId) => written.get(clientId)!.map((id) => delivered(stack, clientId, id))));
      // Chat2Desk takes the next message of each conversation and holds its answer; the rest queue behind them.
      const answers = [1, 2, 3].map(() => stack.c2d.holdNext({ method: 'POST', path: '/messages' }));
      cleanup.push(() => {
        for (const answer of answers) answer.release();
      });
      for (let n = 5; n <= 10; n++) await write(n);
      await Promise.all(answers.map((answer) => answer.arrived));
      await stack.kill();

      await stack.restart();
      const ids = clients.flatMap((clientId) => written.get(clientId)!.map((id) => ({ clientId, id })));
      await Promise.all(ids.map(({ clientId, id }) => delivered(stack, clientId, id)));
      for (const { id } of ids) {
        expect(atChat2Desk(stack, id)).toHaveLength(1);
        expect(statusReports(stack, id)).toHaveLength(1);
      }
      // The order each client gets them in: the order Chat2Desk took them (its message ids).
      for (const clientId of clients) {
        const taken = stack.c2d
          .account()
          .messages.filter((message) => message.type === 'to_client' && message.client_id === clientId)
          .sort((a, b) => (a.id as number) - (b.id as number));
        expect(taken.map((message) => message.text)).toEqual(Array.from({ length: 10 }, (_, index) => `Anna Admin: ${text(clientId, index + 1)}`));
      }
      for (const { id } of ids) await repeatEvent(stack, id);
    }, 120_000);
  });
});
