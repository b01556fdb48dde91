import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../src/clock.js';
import { OpenLineStore } from '../src/db/open-lines.js';
import { CONNECTOR_ID } from '../src/open-channels/connector.js';
import { DEFAULT_LINE_OPTIONS } from '../src/open-channels/lines.js';
import { noRetryWait } from './support/clock.js';
import { eventually, installAndConfigure, startStack, type Stack, writeStoredSetting } from './support/stack.js';

type Row = Record<string, unknown>;

/**
 * Inbound messages of one portal and line share imconnector.send.messages calls
 * (src/open-channels/inbound-sends.ts): end to end, Chat2Desk webhooks over HTTP to our server, our
 * server to the fake portal at its real limits (2/s, burst 50). A held call stands for one on its way:
 * what the other conversations send meanwhile goes in the next call.
 */
describe('Open Channels inbound: messages share send.messages calls', () => {
  let stack: Stack;

  beforeEach(async () => {
    stack = await startStack({ env: { OPEN_CHANNELS_HOLD_RECHECK_SECONDS: '1' }, retrySleep: noRetryWait });
    await installAndConfigure(stack);
    await writeStoredSetting(stack, 'integrationType', 'open_channels');
    stack.b24.openLines.set(1, { id: 1, name: 'Line 1', active: true });
    await stack.server.rest.call(stack.b24.memberId, 'imconnector.register', {
      ID: CONNECTOR_ID,
      NAME: 'Chat2Desk',
      ICON: { DATA_IMAGE: 'data:image/svg+xml,%3Csvg/%3E' },
      PLACEMENT_HANDLER: `${stack.server.url}/connector`,
    });
    await stack.server.rest.call(stack.b24.memberId, 'imconnector.activate', { CONNECTOR: CONNECTOR_ID, LINE: 1, ACTIVE: 1 });
    await new OpenLineStore(stack.server.database, systemClock).save(stack.b24.memberId, 1, DEFAULT_LINE_OPTIONS);
    stack.b24.resetCalls();
  });
  afterEach(() => stack.close());

  const sendCalls = () => stack.b24.calls.filter((call) => call.method === 'imconnector.send.messages');
  /** The external message ids one call carried, in its order. */
  const carried = (call: { params: Row }) => Object.values(call.params.MESSAGES as Row).map((item) => String((item as { message: Row }).message.id));
  const chatTexts = (clientId: number) => {
    try {
      return stack.b24.openLineMessages(1, `c${clientId}`).map((item) => item.text);
    } catch {
      return [];
    }
  };
  const inboundJobs = async () => (await stack.db.rows("select state, return_values from jobs where kind = 'ol_inbound' order by id")) as Row[];
  /** Jobs that claimed their ledger entry: from there each one's message goes straight to the shared call. */
  const claimed = async () => ((await stack.db.row("select count(*) as n from effects where effect_key like 'ol_in:%' and state = 'claimed'")) as { n: number }).n;

  /** `count` conversations, each with `each` messages "c<n> m<k>", delivered as Chat2Desk inbox webhooks; the first message of the first conversation comes alone first. */
  async function conversations(count: number, each: number, beforeTheRest: () => Promise<void> = async () => {}) {
    const clients: number[] = [];
    const webhooks: Row[][] = [];
    for (let n = 1; n <= count; n++) {
      const first = stack.c2d.receiveMessage({ phone: `7916555${String(n).padStart(4, '0')}`, text: `c${n} m1` });
      const clientId = Number(first.message.client_id);
      clients.push(clientId);
      webhooks.push([first.webhook, ...Array.from({ length: each - 1 }, (_, k) => stack.c2d.receiveMessage({ clientId, text: `c${n} m${k + 2}` }).webhook)]);
    }
    const deliver = async (body: Row) => expect(await stack.c2d.deliverWebhook(body)).toEqual([200]);
    await deliver(webhooks[0]![0]!);
    await beforeTheRest();
    for (let k = 0; k < each; k++) for (let n = 0; n < count; n++) if (n > 0 || k > 0) await deliver(webhooks[n]![k]!);
    return clients;
  }

  it('a burst over several conversations costs far fewer calls than messages, each conversation in order', async () => {
    const held = stack.b24.hold({ rest: 'imconnector.send.messages' });
    const clients = await conversations(6, 5, async () => {
      await held.arrived;
    });
    // The other five conversations' first messages wait while the first call is on its way.
    await eventually(async () => (await claimed()) === 6, 15_000, 'six messages claimed');
    held.release();
    await eventually(async () => (await inboundJobs()).length === 30 && (await inboundJobs()).every((job) => job.state === 'done'), 30_000, 'thirty messages sent');
    for (const [index, clientId] of clients.entries()) expect(chatTexts(clientId)).toEqual([1, 2, 3, 4, 5].map((k) => `c${index + 1} m${k}`));
    const calls = sendCalls();
    expect(carried(calls[0]!)).toHaveLength(1);
    expect(carried(calls[1]!)).toHaveLength(5);
    // Five rounds at least (a conversation has one message in flight); far fewer than thirty.
    expect(calls.length).toBeLessThanOrEqual(15);
    expect(calls.flatMap(carried)).toHaveLength(30);
  }, 60_000);

  it('one message refused in its entry of a shared call fails only its job', async () => {
    const held = stack.b24.hold({ rest: 'imconnector.send.messages' });
    const clients = await conversations(4, 1, async () => {
      await held.arrived;
    });
    const third = stack.c2d.account().messages.find((message) => message.client_id === clients[2] && message.text === 'c3 m1')!;
    const refusedId = String(third.id);
    stack.b24.refuseClientMessage(refusedId, { code: 'CONNECTOR_PROXY_NO_USER_IM', message: 'Messenger user ID not received' });
    await eventually(async () => (await claimed()) === 4, 15_000, 'four messages claimed');
    held.release();
    await eventually(async () => (await inboundJobs()).length === 4 && (await inboundJobs()).every((job) => job.state === 'done'), 30_000, 'four finished');
    const calls = sendCalls();
    expect(calls).toHaveLength(2);
    expect(carried(calls[1]!)).toContain(refusedId);
    expect(chatTexts(clients[0]!)).toEqual(['c1 m1']);
    expect(chatTexts(clients[1]!)).toEqual(['c2 m1']);
    expect(chatTexts(clients[2]!)).toEqual([]);
    expect(chatTexts(clients[3]!)).toEqual(['c4 m1']);
    const results = (await inboundJobs()).map((job) => JSON.parse(String(job.return_values)) as Row);
    expect(results.filter((result) => result.status === 'sent')).toHaveLength(3);
    const failed = results.filter((result) => result.status === 'failed');
    expect(failed).toHaveLength(1);
    expect(String(failed[0]!.error)).toMatch(/Bitrix24 refused the message .*CONNECTOR_PROXY_NO_USER_IM/);
  }, 60_000);

  it('an answer lost for a shared call: none of its messages is sent twice, and each conversation goes on', async () => {
    const held = stack.b24.hold({ rest: 'imconnector.send.messages' });
    // Both the held call and the shared one after it run in the portal, and their answers are lost.
    stack.b24.failNext('imconnector.send.messages', { status: 500, error: 'INTERNAL_SERVER_ERROR', error_description: 'answer lost', afterRunning: true }, 2);
    const clients = await conversations(4, 2, async () => {
      await held.arrived;
    });
    await eventually(async () => (await claimed()) === 4, 15_000, 'four messages claimed');
    held.release();
    await eventually(async () => (await inboundJobs()).length === 8 && (await inboundJobs()).every((job) => job.state === 'done'), 30_000, 'eight finished');
    const calls = sendCalls();
    expect(carried(calls[1]!)).toHaveLength(3);
    const sent = calls.flatMap(carried);
    expect(new Set(sent).size).toBe(sent.length);
    for (const [index, clientId] of clients.entries()) expect(chatTexts(clientId)).toEqual([`c${index + 1} m1`, `c${index + 1} m2`]);
    const results = (await inboundJobs()).map((job) => JSON.parse(String(job.return_values)) as Row);
    const inDoubt = results.filter((result) => result.status === 'failed');
    expect(inDoubt).toHaveLength(4);
    for (const result of inDoubt) expect(String(result.error)).toMatch(/may already have been sent to the Open Channel/);
  }, 60_000);
});
