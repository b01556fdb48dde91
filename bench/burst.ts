/**
 * A burst of 1,000 robot calls against the fakes' rate limits: drain time against the lower bound
 * those limits allow, Bitrix24 requests per robot run, and the heap while the workers drain it.
 * Our server runs in a child process (bench/child.ts); the fakes and the load generator stay here,
 * as Bitrix24 and Chat2Desk are remote in production. The heap figure is the server's.
 */
import { performance } from 'node:perf_hooks';
import { eventually } from '../test/support/stack.js';
import { startChildStack } from './child.js';
import { postAll } from './load.js';
import { fmt, type Section, verdict } from './table.js';

const BURST = 1_000;
/** The fake Chat2Desk's limit for the burst; Chat2Desk publishes none (docs/protocols.md C1). */
const C2D_LIMIT = { requests: 100, perMs: 1_000 };
/** Bitrix24's standard plan (docs/protocols.md B4). */
const B24_LIMIT = { drainPerSecond: 2, burst: 50 };

export async function burstBenchmark(): Promise<Section> {
  const KNOWN_RATE_PER_MINUTE = Math.floor((C2D_LIMIT.requests * 60_000 * 0.94) / C2D_LIMIT.perMs);
  const stack = await startChildStack({
    label: 'burst',
    b24: { rateLimit: B24_LIMIT },
    c2d: { rateLimit: C2D_LIMIT },
    env: {
      LOG_LEVEL: 'silent',
      B24_RATE_PER_SECOND: String(B24_LIMIT.drainPerSecond),
      B24_RATE_BURST: String(B24_LIMIT.burst),
      // The client is told the limit here (the unknown-limit figures are bench/unknown-limit.ts): it
      // starts at 94% of the fake's window limit and its learned rate may not grow past that.
      CHAT2DESK_REQUESTS_PER_MINUTE: String(KNOWN_RATE_PER_MINUTE),
      CHAT2DESK_MAX_REQUESTS_PER_MINUTE: String(KNOWN_RATE_PER_MINUTE),
      CHAT2DESK_CONCURRENCY: '8',
    },
  });
  await new Promise((resolve) => setTimeout(resolve, 1_500)); // let the set-up's requests leave both buckets
  const phones = Array.from({ length: BURST }, (_, i) => `7916${String(10_000_000 + i).slice(1)}`);
  for (const phone of phones) stack.c2d.seedClient({ phone, transport: 'whatsapp', channelId: 17404 });
  const calls = phones.map((phone) =>
    stack.b24.robotCallBody({ code: 'c2d_send_message', properties: { phone, text: 'Your deal moved to the next stage' }, documentId: ['crm', 'CCrmDocumentDeal', 'DEAL_1'] }),
  );
  stack.c2d.resetCalls();
  stack.b24.resetCalls();
  // From here the child counts CPU, Bitrix24 requests and the heap (from a collected heap, so the
  // ratio shows what the burst itself holds).
  await stack.server.command('measure');
  const started = performance.now();
  const ack = await postAll(
    `${stack.server.url}/bitrix24/robot`,
    calls.map((call) => call.body),
    32,
  );
  const tokens = new Set(calls.map((call) => call.eventToken));
  await eventually(() => stack.b24.sentEvents.filter((event) => tokens.has(event.eventToken)).length === BURST, 10 * 60_000, 'burst drained');
  const drainSeconds = (performance.now() - started) / 1000;
  const { bitrix24Requests: b24Requests, heapBefore, heapPeak: peakHeap, cpuMicros } = await stack.server.report();
  const c2dRequests = stack.c2d.calls.length;
  const c2dRefused = stack.c2d.calls.filter((call) => call.status === 429).length;
  const b24Refused = stack.b24.calls.filter((call) => call.error === 'QUERY_LIMIT_EXCEEDED').length;
  const sent = stack.c2d.calls.filter((call) => call.method === 'POST' && call.path === '/messages' && call.status === 200).length;
  const failed = stack.b24.sentEvents.filter((event) => tokens.has(event.eventToken) && event.returnValues.status !== 'sent');
  await stack.close();
  if (sent !== BURST || failed.length !== 0) throw new Error(`burst: ${sent} messages sent, ${failed.length} failed runs, e.g. ${String(failed[0]?.returnValues.error)}`);

  // Lower bound: every run needs a lookup of the client by phone and the send itself, and Chat2Desk
  // lets C2D_LIMIT.requests through per window; Bitrix24 needs ceil(BURST/50) activity.log batches
  // (confirmation) and as many event.send batches beyond its burst. The slower of the two bounds the drain.
  const c2dBound = (BURST * 2) / (C2D_LIMIT.requests / (C2D_LIMIT.perMs / 1000));
  const batches = 2 * Math.ceil(BURST / 50);
  const b24Bound = Math.max(0, batches - B24_LIMIT.burst) / B24_LIMIT.drainPerSecond;
  const bound = Math.max(c2dBound, b24Bound);
  const drainRatio = drainSeconds / bound;
  const perRun = b24Requests / BURST;
  return {
    rows: [
      {
        figure: `drain of a burst of ${BURST} robot calls (distinct clients)`,
        ours: `${fmt(drainSeconds)} s`,
        baseline: `lower bound from the fakes' limits: ${fmt(bound)} s`,
        ratio: `${fmt(drainRatio)}×`,
        target: `≤ 1.25× (${verdict(drainRatio <= 1.25)})`,
      },
      {
        figure: 'Bitrix24 requests per robot run in the burst',
        ours: `${fmt(perRun, 3)} (${b24Requests} requests)`,
        baseline: 'one request per run: 1',
        ratio: `${fmt(perRun, 3)}×`,
        target: `≤ 0.05 (${verdict(perRun <= 0.05)})`,
      },
      {
        figure: 'heap during the burst',
        ours: `peak ${fmt(peakHeap / 2 ** 20, 1)} MiB`,
        baseline: `before the burst: ${fmt(heapBefore / 2 ** 20, 1)} MiB`,
        ratio: `${fmt(peakHeap / heapBefore)}×`,
        target: '—',
      },
    ],
    notes: [
      `Limits in the burst: fake Bitrix24 ${B24_LIMIT.drainPerSecond}/s burst ${B24_LIMIT.burst}; fake Chat2Desk ${C2D_LIMIT.requests} requests per ${C2D_LIMIT.perMs} ms. ` +
        `Chat2Desk requests: ${c2dRequests} (${c2dRefused} refused with 429); Bitrix24 refusals: ${b24Refused}. ` +
        `The burst's acknowledgements (load generator in the bench process, server in its own) ran at ${fmt(ack.perSecond, 0)}/s, p99 ${fmt(ack.p99Ms)} ms, while the workers drained it; ` +
        `the server spent ${fmt(cpuMicros / 1000 / BURST, 2)} ms of CPU per run (${fmt((cpuMicros / 1e6 / drainSeconds) * 100, 0)}% of one core over the drain).`,
    ],
  };
}
