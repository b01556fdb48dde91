/**
 * 1,000 Chat2Desk episodes closed at once, half of them clients the CRM already has as contacts:
 * drain time against the bound the fakes' limits allow, and Bitrix24 requests per episode (README
 * "Closed dialogs → CRM records"). Our server runs in a child process (bench/child.ts); the fakes
 * and the load (Chat2Desk's webhook deliveries) stay here.
 */
import { performance } from 'node:perf_hooks';
import { eventually, putSettings } from '../test/support/stack.js';
import { STANDARD_LIMITS, startLimitedChildStack } from './child.js';
import { fmt, type Section, verdict } from './table.js';

const EPISODES = 1_000;
/** The fakes' limits (bench/child.ts STANDARD_LIMITS: Chat2Desk publishes none, docs/protocols.md C1; Bitrix24's standard plan, B4). */
const { c2d: C2D_LIMIT, b24: B24_LIMIT } = STANDARD_LIMITS;
/** Chat2Desk delivers webhooks this many at a time. */
const DELIVERY_CONCURRENCY = 16;

export async function episodesBenchmark(): Promise<Section> {
  const stack = await startLimitedChildStack('episodes');
  const settings = await putSettings({ b24: stack.b24, c2d: stack.c2d, server: { url: stack.server.url } }, { defaultCountry: 'RU', episodesEnabled: true });
  if (settings.status !== 200) throw new Error(`episodes: settings failed: ${settings.status} ${await settings.text()}`);
  await stack.server.command('idle');
  await new Promise((resolve) => setTimeout(resolve, 1_500)); // let the set-up's requests leave both buckets

  // Half the clients are contacts already (the comment goes there), half are new (a lead is created).
  const closes = Array.from({ length: EPISODES }, (_, i) => {
    const phone = `7916${String(3_000_000 + i)}`;
    if (i % 2 === 0) stack.b24.seedContact({ phones: [`+${phone}`] });
    const { client, dialog } = stack.c2d.seedClient({ phone, name: `Client ${i}`, transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    stack.c2d.receiveMessage({ clientId: client.id as number, text: 'Where is my order?' });
    return stack.c2d.closeDialog(dialog!.id as number);
  });
  stack.c2d.resetCalls();
  stack.b24.resetCalls();
  await stack.server.command('measure');
  const started = performance.now();
  let next = 0;
  const refusedDeliveries: number[][] = [];
  await Promise.all(
    Array.from({ length: DELIVERY_CONCURRENCY }, async () => {
      while (next < closes.length) {
        const status = await stack.c2d.deliverWebhook(closes[next++]!.closeRequest);
        if (status.join() !== '200') refusedDeliveries.push(status);
      }
    }),
  );
  const delivered = performance.now();
  const fired = () => stack.b24.calls.filter((call) => call.method === 'crm.automation.trigger.execute' && call.status === 200).length;
  // Done: every episode's comment pinned and its "dialog closed" trigger fired (the episode's last request).
  await eventually(() => stack.b24.timelineComments.length >= EPISODES && fired() >= EPISODES, 15 * 60_000, 'episodes drained');
  const drainSeconds = (performance.now() - started) / 1000;
  const { bitrix24Requests, cpuMicros } = await stack.server.report();
  const commands = stack.b24.calls.filter((call) => call.method.startsWith('crm.') && call.status === 200).length;
  const leads = stack.b24.calls.filter((call) => call.method === 'crm.lead.add' && call.status === 200).length;
  const b24Refused = stack.b24.calls.filter((call) => call.error === 'QUERY_LIMIT_EXCEEDED').length;
  const c2dRequests = stack.c2d.calls.length;
  const c2dRefused = stack.c2d.calls.filter((call) => call.status === 429).length;
  const comments = stack.b24.timelineComments.length;
  await stack.close();
  if (refusedDeliveries.length > 0 || comments !== EPISODES || leads !== EPISODES / 2)
    throw new Error(`episodes: ${refusedDeliveries.length} deliveries refused, ${comments} comments, ${leads} leads created`);

  // Lower bound: Bitrix24 must take every command the episodes need (look-ups, creations, comments,
  // triggers) in batches of 50, beyond its burst at its rate; Chat2Desk must answer each episode's two
  // reads (the client, the dialog's messages) within its window limit. The slower of the two bounds the drain.
  const b24Needed = Math.ceil(commands / 50);
  const b24Bound = Math.max(0, b24Needed - B24_LIMIT.burst) / B24_LIMIT.drainPerSecond;
  const c2dBound = (EPISODES * 2) / (C2D_LIMIT.requests / (C2D_LIMIT.perMs / 1000));
  const bound = Math.max(b24Bound, c2dBound);
  const ratio = drainSeconds / bound;
  const perEpisode = bitrix24Requests / EPISODES;
  return {
    rows: [
      {
        figure: `drain of ${EPISODES} episodes closed at once (half matching existing contacts)`,
        ours: `${fmt(drainSeconds)} s`,
        baseline: `lower bound from the fakes' limits: ${fmt(bound)} s`,
        ratio: `${fmt(ratio)}×`,
        target: '—',
      },
      {
        figure: 'Bitrix24 requests per closed episode (look-ups, creation, comment, trigger)',
        ours: `${fmt(perEpisode, 3)} (${bitrix24Requests} requests)`,
        baseline: `one request per command: ${fmt(commands / EPISODES, 2)}`,
        ratio: `${fmt(bitrix24Requests / commands, 3)}×`,
        target: `≤ 0.15 (${verdict(perEpisode <= 0.15)})`,
      },
    ],
    notes: [
      `Episodes: fake Bitrix24 ${B24_LIMIT.drainPerSecond}/s burst ${B24_LIMIT.burst}, fake Chat2Desk ${C2D_LIMIT.requests} requests per ${C2D_LIMIT.perMs} ms (the client told 94% of it); ` +
        `close webhooks delivered ${DELIVERY_CONCURRENCY} at a time from the bench process (all in ${fmt((delivered - started) / 1000)} s). ` +
        `Bitrix24: ${commands} commands in ${bitrix24Requests} requests (${fmt(commands / bitrix24Requests, 1)} per request; at least ${b24Needed} needed, bound ${fmt(b24Bound)} s), ${b24Refused} refused; ` +
        `Chat2Desk: ${c2dRequests} requests (bound ${fmt(c2dBound)} s), ${c2dRefused} refused with 429. ` +
        `The server spent ${fmt(cpuMicros / 1000 / EPISODES, 2)} ms of CPU per episode (${fmt((cpuMicros / 1e6 / drainSeconds) * 100, 0)}% of one core over the drain).`,
    ],
  };
}
