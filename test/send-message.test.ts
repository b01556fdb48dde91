import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { eventually, installAndConfigure, postForm, sentMessages, startStack, type Stack } from './support/stack.js';

describe('Send Chat2Desk message robot', () => {
  let stack: Stack;
  beforeEach(async () => {
    stack = await startStack();
    await installAndConfigure(stack, { defaultCountry: 'RU' });
  });
  afterEach(() => stack.close());

  it('sends to a known client and returns the ids to the workflow', async () => {
    const { client } = stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '+7 (916) 123-45-67', text: 'Your order is ready' } });
    expect(call.status).toBe(200);

    const sent = await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 10_000, 'event.send');
    const [message] = sentMessages(stack);
    expect(message?.body).toMatchObject({ client_id: client.id, text: 'Your order is ready', open_dialog: true });
    expect(String((message?.body as { external_id: string } | undefined)?.external_id)).toMatch(/^b24-/);
    const stored = stack.c2d.account().messages.at(-1)!;
    expect(sent.returnValues).toMatchObject({
      status: 'sent',
      error: '',
      // Values travel form-encoded inside batch, so Bitrix24 sees strings (docs/protocols.md B0).
      message_id: String(stored.id),
      client_id: String(client.id),
      dialog_id: String(stored.dialog_id),
      channel_id: '17404',
      transport: 'whatsapp',
    });
    expect(sent.logMessage).toContain(`Chat2Desk message ${stored.id} sent`);
    expect(stack.c2d.calls.some((c) => c.method === 'POST' && c.path === '/clients')).toBe(false);
  });

  it('looks the client up once: a second message to the same number costs only the send', async () => {
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    const first = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'one' } });
    await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === first.eventToken), 10_000, 'first result');
    stack.c2d.resetCalls();
    const second = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '+7 916 123 45 67', text: 'two' } });
    await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === second.eventToken), 10_000, 'second result');
    expect(stack.c2d.calls.map((call) => `${call.method} ${call.path}`)).toEqual(['POST /messages']);
  });

  it('writes first: creates the client on the default channel, then sends', async () => {
    const call = await stack.b24.callRobot({
      code: 'c2d_send_message',
      properties: { phone: ['8 916 765-43-21'], text: 'Hello! We have an offer for you', transport: 'whatsapp' },
    });
    const sent = await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 10_000, 'event.send');
    const created = stack.c2d.calls.find((c) => c.method === 'POST' && c.path === '/clients');
    expect(created?.body).toMatchObject({ phone: '79167654321', transport: 'whatsapp', channel_id: 17404 });
    // The first message takes the same route: a new client has no last message to take it from.
    expect(sentMessages(stack)[0]?.body).toMatchObject({ transport: 'whatsapp', channel_id: 17404 });
    const client = stack.c2d.account().clients.find((item) => item.phone === '79167654321');
    expect(client).toBeDefined();
    expect(sent.returnValues).toMatchObject({ status: 'sent', client_id: String(client!.id), transport: 'whatsapp', channel_id: '17404' });
    expect(sentMessages(stack)).toHaveLength(1);
  });

  it('runs as the business-process activity twin too', async () => {
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    const call = await stack.b24.callRobot({ code: 'c2d_send_message_bp', properties: { phone: '79161234567', text: 'From a BP' } });
    const sent = await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 10_000, 'event.send');
    expect(sent.returnValues.status).toBe('sent');
  });

  it('acknowledges a call delivered three times at once and sends one message', async () => {
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    const { body, eventToken } = stack.b24.robotCallBody({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'once' } });
    const answers = await Promise.all([1, 2, 3].map(() => postForm(`${stack.server.url}/bitrix24/robot`, body)));
    expect(answers.map((answer) => answer.status)).toEqual([200, 200, 200]);
    const states = await Promise.all(answers.map(async (answer) => ((await answer.json()) as { status: string }).status));
    expect(states.sort()).toEqual(['accepted', 'duplicate', 'duplicate']);
    await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === eventToken), 10_000, 'event.send');
    // The one job is done and no other was stored: nothing is left that could send again.
    await eventually(async () => ((await stack.server.jobs.countByState()).done ?? 0) >= 1, 10_000, 'job done');
    expect(await stack.server.jobs.countByState()).toEqual({ done: 1 });
    expect(sentMessages(stack)).toHaveLength(1);
    expect(stack.b24.sentEvents.filter((event) => event.eventToken === eventToken)).toHaveLength(1);
  });

  it('finishes with a readable error when the phone is not a number', async () => {
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: 'call me maybe', text: 'hi' } });
    const sent = await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 10_000, 'event.send');
    expect(sent.returnValues).toMatchObject({ status: 'failed' });
    expect(String(sent.returnValues.error)).toContain('"call me maybe" is not a valid phone number');
    expect(sentMessages(stack)).toHaveLength(0);
  });

  it('finishes with a readable error when required input is missing', async () => {
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567' } });
    const sent = await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 10_000, 'event.send');
    expect(sent.returnValues.status).toBe('failed');
    expect(sent.returnValues.error).toBe('Send Chat2Desk message: text is required unless an attachment is given');
    expect(stack.c2d.calls).toHaveLength(0);
  });

  it("finishes with Chat2Desk's reason when Chat2Desk refuses the message", async () => {
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    stack.c2d.failNext({ method: 'POST', path: '/messages' }, { status: 400, body: { status: 'error', message: 'Write-first is not enabled for this channel' } });
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'hi' } });
    const sent = await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 10_000, 'event.send');
    expect(sent.returnValues).toMatchObject({ status: 'failed', error: 'Chat2Desk refused the message: Write-first is not enabled for this channel' });
  });

  it('refuses a call with a forged application token and stores nothing', async () => {
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'hi' }, applicationToken: 'f'.repeat(32) });
    expect(call.status).toBe(401);
    expect(await stack.server.jobs.countByState()).toEqual({});
    // A genuine call after it runs to the end; by then anything the forged one set going would have too.
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    const genuine = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'genuine' } });
    await eventually(async () => ((await stack.server.jobs.countByState()).done ?? 0) >= 1, 10_000, 'genuine call done');
    await stack.server.idle();
    expect(await stack.server.jobs.countByState()).toEqual({ done: 1 });
    expect(sentMessages(stack).map((call) => (call.body as { text: string }).text)).toEqual(['genuine']);
    expect(stack.b24.sentEvents.map((event) => event.eventToken)).toEqual([genuine.eventToken]);
  });

  it('answers malformed and oversized bodies with 4xx and stays healthy', async () => {
    const url = `${stack.server.url}/bitrix24/robot`;
    const { body } = stack.b24.robotCallBody({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'x' } });
    const withoutToken = body.replace(/(^|&)event_token=[^&]*/, '');
    expect((await postForm(url, withoutToken)).status).toBe(400);
    expect((await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).status).toBe(415);
    expect((await postForm(url, '%%%&&&[[[')).status).toBe(401);
    const huge = `${body}&properties[text]=${'a'.repeat(400_000)}`;
    expect((await postForm(url, huge)).status).toBe(413);
    // Without a Content-Length (chunked), the limit is counted as the bytes arrive.
    const chunked = new Blob([huge]).stream();
    const streamed = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: chunked, duplex: 'half' } as RequestInit);
    expect(streamed.status).toBe(413);
    const deep = `${body}&${'x'.repeat(10)}${'[a]'.repeat(500)}=1`;
    expect((await postForm(url, deep)).status).toBeLessThan(500);
    const health = await fetch(`${stack.server.url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok', database: true, workers: true });
  });

  it('reports 503 on /healthz when the workers are not running, with the queue depth', async () => {
    await stack.server.worker.stop();
    await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'waits' } });
    const health = await fetch(`${stack.server.url}/healthz`);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({
      status: 'unavailable',
      database: true,
      databaseKind: stack.db.kind,
      workers: false,
      queue: { queued: 1, running: 0, reporting: 0 },
      work: { windowMs: 300_000, finishedHere: 0, share: null },
    });
  });

  it('never writes a secret to the log', async () => {
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'hi' } });
    await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 10_000, 'event.send');
    const logText = stack.logs.join('');
    expect(logText.length).toBeGreaterThan(0);
    for (const secret of [stack.c2d.token, stack.b24.clientSecret, stack.b24.applicationToken]) expect(logText).not.toContain(secret);
    for (const c of stack.b24.calls) if (c.accessToken) expect(logText).not.toContain(c.accessToken);
  });
});
