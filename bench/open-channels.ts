/**
 * Open Channels inbound: a burst of 1,000 Chat2Desk `inbox` webhooks over 100 conversations (README
 * "Open Channels mode" → Inbound): drain time against the bound the fakes' limits allow, Bitrix24 and
 * Chat2Desk requests per message, and order violations. Our server runs in a child process
 * (bench/child.ts); the fakes and the load (Chat2Desk's webhook deliveries) stay here.
 */
import { performance } from 'node:perf_hooks';
import { DEFAULT_LINE_OPTIONS } from '../src/open-channels/lines.js';
import { SEND_MESSAGES_LIMIT } from '../src/open-channels/inbound-sends.js';
import { eventually, postForm, putSettings } from '../test/support/stack.js';
import { STANDARD_LIMITS, startLimitedChildStack } from './child.js';
import { fmt, type Section, verdict } from './table.js';

const CONVERSATIONS = 100;
const PER_CONVERSATION = 10;
const MESSAGES = CONVERSATIONS * PER_CONVERSATION;
/** The fakes' limits (bench/child.ts STANDARD_LIMITS: Chat2Desk publishes none, docs/protocols.md C1; Bitrix24's standard plan, B4). */
const { c2d: C2D_LIMIT, b24: B24_LIMIT } = STANDARD_LIMITS;
/** Chat2Desk delivers webhooks this many at a time; one conversation's one after another (each after the last was answered). */
const DELIVERY_CONCURRENCY = 16;
const LINE = 1;

export async function openChannelsBenchmark(): Promise<Section> {
  const stack = await startLimitedChildStack('open-channels');
  const { b24, c2d, server } = stack;
  // The admin switches to Open Channels and connects line 1 in the connector's page (as scripts/demo.ts).
  const switched = await putSettings({ b24, c2d, server }, { integrationType: 'open_channels' });
  if (switched.status !== 200) throw new Error(`open-channels: switching mode failed: ${switched.status} ${await switched.text()}`);
  const page = b24.settingConnectorPageRequest({ line: LINE, connector: 'chat2desk' }, { accessToken: b24.issueAuth(1).access_token });
  const html = await (await postForm(`${server.url}/connector`, page.body, page.query)).text();
  const token = String((JSON.parse(/<script type="application\/json" id="page-data">([\s\S]*?)<\/script>/.exec(html)?.[1] ?? '{}') as { token?: unknown }).token ?? '');
  const connected = await fetch(`${server.url}/api/connector/lines/${LINE}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ options: DEFAULT_LINE_OPTIONS }),
  });
  if (connected.status !== 200) throw new Error(`open-channels: connecting line ${LINE} failed: ${connected.status} ${await connected.text()}`);
  await server.command('idle');
  // Let the set-up's requests leave both portal buckets (the fake's and our client's): the burst starts with the whole burst allowance.
  await new Promise((resolve) => setTimeout(resolve, 1_000 + (b24.calls.length / B24_LIMIT.drainPerSecond) * 1000));

  const conversations = Array.from({ length: CONVERSATIONS }, (_, n) => {
    const { client } = c2d.seedClient({ phone: `7916${String(4_000_000 + n)}`, name: `Client ${n}`, transport: 'whatsapp', withDialog: 'open' });
    const clientId = client.id as number;
    const webhooks = Array.from({ length: PER_CONVERSATION }, (_, k) => c2d.receiveMessage({ clientId, text: `message ${k + 1}` }).webhook);
    return { clientId, webhooks };
  });
  c2d.resetCalls();
  b24.resetCalls();
  await server.command('measure');
  const started = performance.now();
  let free = DELIVERY_CONCURRENCY;
  const waiting: Array<() => void> = [];
  const slot = async () => {
    if (free > 0) free -= 1;
    else await new Promise<void>((resolve) => waiting.push(resolve));
  };
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else free += 1;
  };
  const refusedDeliveries: number[][] = [];
  const latencies: number[] = [];
  let redelivered = 0;
  // Rounds: every conversation's first message, then every second one, ... each conversation in its own order.
  await Promise.all(
    conversations.map(async ({ webhooks }) => {
      for (const webhook of webhooks) {
        await slot();
        const sentAt = performance.now();
        try {
          let status = await c2d.deliverWebhook(webhook);
          latencies.push(performance.now() - sentAt);
          // Not answered in the fake's 5 s (or refused): Chat2Desk delivers it again (C7), before the conversation's next.
          for (let retry = 0; retry < 3 && status.join() !== '200'; retry++) {
            redelivered += 1;
            status = await c2d.deliverWebhook(webhook);
          }
          if (status.join() !== '200') refusedDeliveries.push(status);
        } finally {
          release();
        }
      }
    }),
  );
  const ingestSeconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const latency = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  const arrived = () => b24.openLineChats(LINE).reduce((sum, chat) => sum + chat.messages.length, 0);
  await eventually(() => arrived() >= MESSAGES, 10 * 60_000, 'inbound messages drained');
  const drainSeconds = (performance.now() - started) / 1000;
  const { bitrix24Requests, cpuMicros } = await server.report();
  const sendCalls = b24.calls.filter((call) => call.method === 'imconnector.send.messages');
  const sent = sendCalls.filter((call) => call.status === 200);
  const perCall = sent.map((call) => Object.keys(call.params.MESSAGES as object).length);
  const batches = b24.calls.filter((call) => call.method === 'batch').length;
  const b24Refused = b24.calls.filter((call) => call.error === 'QUERY_LIMIT_EXCEEDED').length;
  const c2dRequests = c2d.calls.length;
  const tally = (names: string[]) => {
    const counts = new Map<string, number>();
    for (const name of names) counts.set(name, (counts.get(name) ?? 0) + 1);
    return [...counts].map(([name, count]) => `${name} ${count}`).join(', ');
  };
  const b24ByMethod = tally(b24.calls.map((call) => call.method));
  const c2dByPath = tally(c2d.calls.map((call) => `${call.method} ${call.path.replace(/\/\d+/g, '/:id')}`));
  const c2dRefused = c2d.calls.filter((call) => call.status === 429).length;
  // Order: each conversation's chat must hold "message 1" … "message 10", each once, in that order.
  let violations = 0;
  let missingOrTwice = 0;
  for (const { clientId } of conversations) {
    const texts = b24.openLineMessages(LINE, `c${clientId}`).map((message) => Number(message.text.replace('message ', '')));
    for (let i = 1; i < texts.length; i++) if (texts[i]! < texts[i - 1]!) violations += 1;
    missingOrTwice += Math.abs(texts.length - PER_CONVERSATION) + (texts.length - new Set(texts).size);
  }
  await stack.close();
  if (refusedDeliveries.length > 0 || missingOrTwice > 0)
    throw new Error(
      `open-channels: ${refusedDeliveries.length} deliveries refused (${JSON.stringify(refusedDeliveries.slice(0, 5))}), ${missingOrTwice} messages missing or twice`,
    );

  // Lower bound: a call carries at most SEND_MESSAGES_LIMIT messages and one message per conversation
  // (its next is sent once the last is answered), so at least max(messages / limit, rounds × ⌈conversations
  // / limit⌉) calls; those beyond the portal's burst go at its rate. Chat2Desk: the requests an inbound
  // message needs (none: the webhook carries it) at its rate. And nothing drains before it came in: the
  // webhooks' ingest (measured). The slowest of the three bounds the drain.
  const callsNeeded = Math.max(Math.ceil(MESSAGES / SEND_MESSAGES_LIMIT), PER_CONVERSATION * Math.ceil(CONVERSATIONS / SEND_MESSAGES_LIMIT));
  const b24Bound = Math.max(0, callsNeeded - B24_LIMIT.burst) / B24_LIMIT.drainPerSecond;
  const c2dBound = 0;
  const bound = Math.max(b24Bound, c2dBound, ingestSeconds);
  const perMessage = bitrix24Requests / MESSAGES;
  return {
    rows: [
      {
        figure: `drain of ${MESSAGES} inbound Chat2Desk messages over ${CONVERSATIONS} conversations (Open Channels)`,
        ours: `${fmt(drainSeconds)} s`,
        baseline: `lower bound: ingest of the webhooks ${fmt(ingestSeconds)} s (Bitrix24 ${fmt(b24Bound)} s at least ${callsNeeded} calls)`,
        ratio: `${fmt(drainSeconds / bound)}×`,
        target: '—',
      },
      {
        figure: 'Bitrix24 requests per inbound message (imconnector.send.messages shared by the conversations; and the "client wrote" trigger)',
        ours: `${fmt(perMessage, 3)} (${bitrix24Requests} requests: ${sent.length} send.messages, ${fmt(sent.length / MESSAGES, 3)} per message; ${batches} batches of the trigger's look-ups)`,
        baseline: `send.messages one per message: 1; the fewest the API and the order allow: ${fmt(callsNeeded / MESSAGES, 3)}`,
        ratio: `${fmt(sent.length / MESSAGES, 3)}× (send.messages)`,
        target: '—',
      },
      {
        figure: 'Chat2Desk requests per inbound message (the trigger reading each new client once)',
        ours: `${fmt(c2dRequests / MESSAGES, 3)} (${c2dRequests} requests)`,
        baseline: '—',
        ratio: '—',
        target: '—',
      },
      {
        figure: 'order violations (a conversation message in the Open Channel before an earlier one)',
        ours: `${violations} of ${MESSAGES}`,
        baseline: '—',
        ratio: '—',
        target: `0 (${verdict(violations === 0)})`,
      },
    ],
    notes: [
      `Open Channels inbound: fake Bitrix24 ${B24_LIMIT.drainPerSecond}/s burst ${B24_LIMIT.burst}, fake Chat2Desk ${C2D_LIMIT.requests} requests per ${C2D_LIMIT.perMs} ms; ` +
        `${MESSAGES} inbox webhooks delivered ${DELIVERY_CONCURRENCY} at a time from the bench process, each conversation's in order (all in ${fmt(ingestSeconds)} s; answered in p50 ${fmt(latency(0.5), 0)} ms, p99 ${fmt(latency(0.99), 0)} ms; ${redelivered} delivered again after no answer in 5 s). ` +
        `imconnector.send.messages: ${sent.length} calls (${sendCalls.length - sent.length} refused; ${b24Refused} refused for load in all), ` +
        `${fmt(MESSAGES / Math.max(1, sent.length), 1)} messages per call (at most ${Math.max(0, ...perCall)}, limit ${SEND_MESSAGES_LIMIT}); ` +
        `Bitrix24 requests by method: ${b24ByMethod}. Chat2Desk: ${c2dRequests} requests (${c2dByPath}), ${c2dRefused} refused with 429. ` +
        `The server spent ${fmt(cpuMicros / 1000 / MESSAGES, 2)} ms of CPU per message (${fmt((cpuMicros / 1e6 / drainSeconds) * 100, 0)}% of one core over the drain).`,
    ],
  };
}
