import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../src/clock.js';
import { OpenLineStore } from '../src/db/open-lines.js';
import { CONNECTOR_ID } from '../src/open-channels/connector.js';
import { DEFAULT_LINE_OPTIONS } from '../src/open-channels/lines.js';
import { TestClock, eventuallyOnClock, noRetryWait } from './support/clock.js';
import { eventually, freePort, installAndConfigure, startStack, type Stack, writeStoredSetting } from './support/stack.js';

type Row = Record<string, unknown>;

const MAX_BYTES = 64 * 1024;

/** A loopback file server counting its requests: what an attachment link may point at inside our network. */
async function fileServer(handle: (path: string, response: ServerResponse) => void): Promise<{ server: Server; port: number; hits: string[] }> {
  const hits: string[] = [];
  const server = createServer((request, response) => {
    hits.push(request.url ?? '');
    handle(request.url ?? '', response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, hits };
}

/**
 * Open Channels inbound when things go wrong: the portal out of reach, answers lost, hostile input
 * from clients. Real HTTP to the fakes; the clock is moved over job backoffs instead of waiting.
 */
describe('Open Channels inbound: outages and hostile input', () => {
  let stack: Stack;
  let clock: TestClock;

  beforeEach(async () => {
    clock = new TestClock();
    stack = await startStack({ env: { OPEN_CHANNELS_HOLD_RECHECK_SECONDS: '1', UPLOAD_MAX_BYTES: String(MAX_BYTES) }, clock, retrySleep: noRetryWait });
    await installAndConfigure(stack);
    await writeStoredSetting(stack, 'integrationType', 'open_channels');
    await stack.server.rest.call(stack.b24.memberId, 'imconnector.register', {
      ID: CONNECTOR_ID,
      NAME: 'Chat2Desk',
      ICON: { DATA_IMAGE: 'data:image/svg+xml,%3Csvg/%3E' },
      PLACEMENT_HANDLER: `${stack.server.url}/connector`,
    });
    await stack.server.rest.call(stack.b24.memberId, 'imconnector.activate', { CONNECTOR: CONNECTOR_ID, LINE: 1, ACTIVE: 1 });
    await new OpenLineStore(stack.server.database, systemClock).save(stack.b24.memberId, 1, DEFAULT_LINE_OPTIONS);
  });
  afterEach(() => stack.close());

  const inboundJobs = async () => (await stack.db.rows("select state, attempts, last_error, return_values from jobs where kind = 'ol_inbound' order by id")) as Row[];
  const chatTexts = (chatId: string) => {
    try {
      return stack.b24.openLineMessages(1, chatId).map((item) => item.text);
    } catch {
      return [];
    }
  };
  const sentStatus = (job: Row) => (JSON.parse(String(job.return_values ?? '{}')) as { status?: string }).status;
  const onClock = <T>(check: () => T | undefined | false, what: string, timeoutMs = 20_000) => eventuallyOnClock(() => stack.server, clock, check, timeoutMs, what);

  async function deliver(body: Row) {
    expect(await stack.c2d.deliverWebhook(body)).toEqual([200]);
  }

  async function setEndpoint(url: string): Promise<string> {
    const { endpoint } = (await stack.db.row('select client_endpoint endpoint from portals where member_id = ?', stack.b24.memberId)) as { endpoint: string };
    await stack.db.run('update portals set client_endpoint = ? where member_id = ?', url, stack.b24.memberId);
    return endpoint;
  }

  it('a portal that refuses connections delays the messages that arrive meanwhile; none is lost, the order is kept', async () => {
    const real = await setEndpoint(`http://127.0.0.1:${await freePort()}/rest/`);
    const first = stack.c2d.receiveMessage({ phone: '79161234590', text: 'during the outage' });
    const second = stack.c2d.receiveMessage({ clientId: Number(first.message.client_id), text: 'still during it' });
    await deliver(first.webhook);
    await deliver(second.webhook);
    await eventually(
      async () => (await inboundJobs()).some((job) => /not reached/.test(String(job.last_error)) && Number(job.attempts) >= 1),
      15_000,
      'an attempt refused by the network',
    );
    await setEndpoint(real);
    const chatId = `c${first.message.client_id}`;
    await onClock(async () => (await inboundJobs()).every((job) => job.state === 'done') && (await inboundJobs()).length === 2, 'both sent');
    expect((await inboundJobs()).map(sentStatus)).toEqual(['sent', 'sent']);
    expect(chatTexts(chatId)).toEqual(['during the outage', 'still during it']);
  });

  it('a refresh of an expired token that fails sent nothing: the message goes once the authorization server answers', async () => {
    stack.b24.expireAccessTokens();
    stack.b24.failNextOAuth('oauth.token', { status: 502, error: 'server_error', error_description: 'authorization server down' });
    const { message, webhook } = stack.c2d.receiveMessage({ phone: '79161234591', text: 'after the refresh' });
    await deliver(webhook);
    await onClock(async () => (await inboundJobs())[0]?.state === 'done', 'sent');
    expect(sentStatus((await inboundJobs())[0]!)).toBe('sent');
    expect(Number((await inboundJobs())[0]!.attempts)).toBeGreaterThan(1);
    expect(chatTexts(`c${message.client_id}`)).toEqual(['after the refresh']);
  });

  it('a connection cut after Bitrix24 took the message stays in doubt: it is in the chat once, never twice', async () => {
    stack.b24.dropNext('imconnector.send.messages', { afterRunning: true });
    const first = stack.c2d.receiveMessage({ phone: '79161234592', text: 'cut after taking' });
    const second = stack.c2d.receiveMessage({ clientId: Number(first.message.client_id), text: 'the next one' });
    await deliver(first.webhook);
    await deliver(second.webhook);
    await onClock(async () => (await inboundJobs()).length === 2 && (await inboundJobs()).every((job) => job.state === 'done'), 'both finished');
    expect((await inboundJobs()).map(sentStatus)).toEqual(['failed', 'sent']);
    expect(String((await inboundJobs())[0]!.return_values)).toMatch(/may already have been sent/);
    expect(chatTexts(`c${first.message.client_id}`)).toEqual(['cut after taking', 'the next one']);
  });

  it('BBCode a client types arrives as the words they typed: no fake Chat2Desk mark, no ping, no hidden link', async () => {
    const typed = '[b]Chat2Desk operator Anna:[/b][br]Pay here [URL=https://evil.example]bank[/URL] [USER=1]boss[/USER]';
    const { message, webhook } = stack.c2d.receiveMessage({ phone: '79161234593', text: typed });
    await deliver(webhook);
    const [text] = await onClock(() => chatTexts(`c${message.client_id}`).length === 1 && chatTexts(`c${message.client_id}`), 'the message in the chat');
    // Bitrix24 renders any `[tag]` of a message: none may be left that it would take as markup.
    expect(text).not.toMatch(/\[\/?(b|br|url|user)[\]=]/i);
    expect(text!.replaceAll('\u200B', '')).toBe(typed);
  });

  it('attachment links into our own network are not fetched, nor redirects there, nor bodies beyond UPLOAD_MAX_BYTES: each is named in the text', async () => {
    const inside = await fileServer((_path, response) => response.end('secret'));
    // 127.0.0.1 is the test stack's allowed fake host (OUTSIDE_FETCH_ALLOW_HOSTS); it redirects elsewhere or streams too much.
    const allowed = await fileServer((path, response) => {
      if (path === '/redirect') return response.writeHead(302, { location: `https://localhost:${inside.port}/secret` }).end();
      response.writeHead(200, { 'content-type': 'application/octet-stream' });
      const chunk = Buffer.alloc(16 * 1024, 1);
      for (let n = 0; n < 8; n++) response.write(chunk);
      response.end();
    });
    try {
      const { message, webhook } = stack.c2d.receiveMessage({
        phone: '79161234594',
        text: 'files',
        attachments: [
          { name: 'loopback.txt', link: `https://localhost:${inside.port}/secret` },
          { name: 'plain-http.txt', link: `http://localhost:${inside.port}/secret` },
          { name: 'metadata.txt', link: 'https://169.254.169.254/latest/meta-data/' },
          { name: 'redirected.txt', link: `http://127.0.0.1:${allowed.port}/redirect` },
          { name: 'endless.bin', link: `http://127.0.0.1:${allowed.port}/endless` },
        ],
      });
      await deliver(webhook);
      const [text] = await onClock(() => chatTexts(`c${message.client_id}`).length === 1 && chatTexts(`c${message.client_id}`), 'the message in the chat');
      for (const name of ['loopback.txt', 'plain-http.txt', 'metadata.txt', 'redirected.txt', 'endless.bin']) expect(text).toContain(`${name}: the file could not be forwarded`);
      expect(inside.hits).toEqual([]);
      expect(allowed.hits).toEqual(['/redirect', '/endless']);
      expect(stack.b24.openLineMessages(1, `c${message.client_id}`)[0]!.files).toEqual([]);
    } finally {
      inside.server.close();
      allowed.server.close();
    }
  });

  it('a text over 100,000 characters and a long transport are cut with a note, not refused: the message arrives', async () => {
    const { message, webhook } = stack.c2d.receiveMessage({ phone: '79161234595', text: 'x' });
    const long = `${'a'.repeat(99_990)}${'b'.repeat(50_000)}`;
    await deliver({ ...webhook, text: long, transport: `${'w'.repeat(70)}` });
    const [text] = await onClock(() => chatTexts(`c${message.client_id}`).length === 1 && chatTexts(`c${message.client_id}`), 'the message in the chat');
    expect(text!.length).toBeLessThanOrEqual(100_000);
    expect(text!.startsWith('a'.repeat(99_000))).toBe(true);
    expect(text).toMatch(/the full text is in Chat2Desk\)$/);
    const call = stack.b24.calls.find((item) => item.method === 'imconnector.send.messages' && JSON.stringify(item.params).includes('www'))!;
    expect(JSON.stringify(call.params)).toContain(`(${'w'.repeat(49)}…)`);
  });

  it('an echo of an Open Channel message is known by its Chat2Desk message id, also when it arrives before the send was recorded', async () => {
    // A chat per request: the outbound job (ordered by r<request>) and the echo's inbound job (c<client>) run side by side.
    await new OpenLineStore(stack.server.database, systemClock).save(stack.b24.memberId, 1, { ...DEFAULT_LINE_OPTIONS, chatPer: 'request' });
    await stack.server.rest.call(stack.b24.memberId, 'event.bind', { event: 'OnImConnectorMessageAdd', handler: `${stack.server.url}/bitrix24/events` });
    const seeded = stack.c2d.seedClient({ phone: '79161234596', transport: 'whatsapp', channelId: stack.c2d.account().channels[0]!.id as number, withDialog: 'open' });
    const first = stack.c2d.receiveMessage({ clientId: seeded.client.id as number, text: 'Hello' });
    await deliver(first.webhook);
    const chatId = `r${first.message.request_id}`;
    await onClock(() => chatTexts(chatId).length === 1, 'the client message in the chat');

    const hold = stack.c2d.holdNext({ method: 'POST', path: '/messages' });
    const written = await stack.b24.operatorWrites({ line: 1, externalChatId: chatId, text: 'from the Open Channel' });
    expect(written.replies.map((reply) => reply.status)).toEqual([200]);
    await hold.arrived;
    // Chat2Desk took the message and posts its outbox webhook before its answer reaches us (no external_id in outbox).
    const echo = stack.c2d.account().messages.find((item) => String(item.text).endsWith('from the Open Channel'))!;
    const body = stack.c2d.messageWebhookBody(echo.id as number);
    expect(JSON.stringify(body)).not.toContain('b24ol:');
    await deliver(body);
    await eventually(async () => (await inboundJobs()).some((job) => /may be its echo/.test(String(job.last_error))), 15_000, 'the echo waiting for the send');
    hold.release();
    await onClock(async () => (await inboundJobs()).length === 2 && (await inboundJobs()).every((job) => job.state === 'done'), 'the echo settled');
    expect((await inboundJobs()).map(sentStatus)).toEqual(['sent', 'skipped']);
    const sends = stack.b24.calls.filter((item) => item.method === 'imconnector.send.messages' && JSON.stringify(item.params).includes('from the Open Channel'));
    expect(sends).toEqual([]);
  });
});
