/**
 * npm run bench: speed and memory figures, each a ratio against a baseline measured in the same run.
 *  (a) robot-call acknowledgement vs a bare Hono route that parses the same body;
 *  (b) a burst of 1,000 robot calls against the fakes' rate limits: drain time vs the lower bound
 *      those limits allow, and Bitrix24 requests per robot run.
 * The figures are printed and written into README.md between the bench markers.
 */
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseFormBody } from '../src/bitrix24/form-body.js';
import { eventually, installAndConfigure, startStack } from '../test/support/stack.js';
import { findDialogsBenchmark } from './find-dialogs.js';
import { median, postAll, type LoadResult } from './load.js';
import { unknownLimitBenchmark } from './unknown-limit.js';

const ACK_REQUESTS = 3_000;
const ACK_CONCURRENCY = 32;
const ACK_ROUNDS = 3;
const BURST = 1_000;
/** The fake Chat2Desk's limit for the burst; Chat2Desk publishes none (protocols/chat2desk.md §1). */
const C2D_LIMIT = { requests: 100, perMs: 1_000 };
/** Bitrix24's standard plan (protocols/bitrix24.md §4). */
const B24_LIMIT = { drainPerSecond: 2, burst: 50 };

async function ackBenchmark() {
  const stack = await startStack({ env: { LOG_LEVEL: 'silent' } });
  await installAndConfigure(stack);
  // Acknowledgement alone: the workers would compete for the same CPU with the load generator.
  await stack.server.worker.stop();
  const bodies = (n: number) =>
    Array.from(
      { length: n },
      (_, i) =>
        stack.b24.robotCallBody({
          code: 'c2d_send_message',
          properties: { phone: '+7 916 123-45-67', text: `Your order #${i} is ready` },
          documentId: ['crm', 'CCrmDocumentDeal', 'DEAL_1'],
        }).body,
    );

  const bare = new Hono().post('/robot', async (c) => {
    parseFormBody(await c.req.text());
    return c.json({ status: 'accepted', job: 0 });
  });
  const bareServer = await new Promise<ReturnType<typeof serve>>((resolve) => {
    const s = serve({ fetch: bare.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
  });
  const bareUrl = `http://127.0.0.1:${(bareServer.address() as AddressInfo).port}/robot`;
  const oursUrl = `${stack.server.url}/bitrix24/robot`;

  await postAll(bareUrl, bodies(300), ACK_CONCURRENCY);
  await postAll(oursUrl, bodies(300), ACK_CONCURRENCY);
  const bareRuns: LoadResult[] = [];
  const ourRuns: LoadResult[] = [];
  for (let round = 0; round < ACK_ROUNDS; round++) {
    bareRuns.push(await postAll(bareUrl, bodies(ACK_REQUESTS), ACK_CONCURRENCY));
    ourRuns.push(await postAll(oursUrl, bodies(ACK_REQUESTS), ACK_CONCURRENCY));
  }
  const accepted = stack.server.jobs.countByState().queued ?? 0;
  await new Promise<void>((resolve) => bareServer.close(() => resolve()));
  await stack.close();
  const expected = 300 + ACK_REQUESTS * ACK_ROUNDS;
  if (accepted !== expected) throw new Error(`ack benchmark lost calls: ${accepted} of ${expected} stored`);
  return {
    bare: { perSecond: median(bareRuns.map((r) => r.perSecond)), p99Ms: median(bareRuns.map((r) => r.p99Ms)) },
    ours: { perSecond: median(ourRuns.map((r) => r.perSecond)), p99Ms: median(ourRuns.map((r) => r.p99Ms)) },
    statuses: ourRuns.map((r) => r.statuses),
  };
}

async function burstBenchmark() {
  const stack = await startStack({
    b24: { rateLimit: B24_LIMIT },
    c2d: { rateLimit: C2D_LIMIT },
    env: {
      LOG_LEVEL: 'silent',
      B24_RATE_PER_SECOND: String(B24_LIMIT.drainPerSecond),
      B24_RATE_BURST: String(B24_LIMIT.burst),
      // Our client's rate at 94% of the fake's window limit: its burst (1/20 s) + drain stay inside the window.
      CHAT2DESK_REQUESTS_PER_MINUTE: String(Math.floor((C2D_LIMIT.requests * 60_000 * 0.94) / C2D_LIMIT.perMs)),
      CHAT2DESK_CONCURRENCY: '8',
    },
    reportLingerMs: 1_000,
  });
  await installAndConfigure(stack);
  await new Promise((resolve) => setTimeout(resolve, 1_500)); // let the set-up's requests leave both buckets
  const phones = Array.from({ length: BURST }, (_, i) => `7916${String(10_000_000 + i).slice(1)}`);
  for (const phone of phones) stack.c2d.seedClient({ phone, transport: 'whatsapp', channelId: 17404 });
  const calls = phones.map((phone) =>
    stack.b24.robotCallBody({ code: 'c2d_send_message', properties: { phone, text: 'Your deal moved to the next stage' }, documentId: ['crm', 'CCrmDocumentDeal', 'DEAL_1'] }),
  );
  stack.c2d.resetCalls();
  stack.b24.resetCalls();
  const b24Before = stack.server.rest.requestsSent.get(stack.b24.memberId) ?? 0;
  // A collected heap as the baseline, so the ratio shows what the burst itself holds.
  (globalThis as { gc?: () => void }).gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  const started = performance.now();
  const ack = await postAll(
    `${stack.server.url}/bitrix24/robot`,
    calls.map((call) => call.body),
    32,
  );
  const tokens = new Set(calls.map((call) => call.eventToken));
  let peakHeap = heapBefore;
  await eventually(
    () => {
      peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed);
      return stack.b24.sentEvents.filter((event) => tokens.has(event.eventToken)).length === BURST;
    },
    10 * 60_000,
    'burst drained',
  );
  const drainSeconds = (performance.now() - started) / 1000;
  const b24Requests = (stack.server.rest.requestsSent.get(stack.b24.memberId) ?? 0) - b24Before;
  const c2dRequests = stack.c2d.calls.length;
  const c2dRefused = stack.c2d.calls.filter((call) => call.status === 429).length;
  const b24Refused = stack.b24.calls.filter((call) => call.error === 'QUERY_LIMIT_EXCEEDED').length;
  const sent = stack.c2d.calls.filter((call) => call.method === 'POST' && call.path === '/messages' && call.status === 200).length;
  const failed = stack.b24.sentEvents.filter((event) => tokens.has(event.eventToken) && event.returnValues.status !== 'sent');
  await stack.close();
  if (sent !== BURST || failed.length !== 0) throw new Error(`burst: ${sent} messages sent, ${failed.length} failed runs, e.g. ${String(failed[0]?.returnValues.error)}`);

  // Lower bound: every run needs a lookup of the client by phone and the send itself, and Chat2Desk
  // lets C2D_LIMIT.requests through per window; Bitrix24 needs ceil(BURST/50) event.send batches
  // beyond its burst. The slower of the two bounds the drain.
  const c2dBound = (BURST * 2) / (C2D_LIMIT.requests / (C2D_LIMIT.perMs / 1000));
  const batches = Math.ceil(BURST / 50);
  const b24Bound = Math.max(0, batches - B24_LIMIT.burst) / B24_LIMIT.drainPerSecond;
  const bound = Math.max(c2dBound, b24Bound);
  return { ack, drainSeconds, bound, b24Requests, c2dRequests, c2dRefused, b24Refused, heapBefore, peakHeap };
}

function fmt(value: number, digits = 2): string {
  return value.toFixed(digits);
}

const ack = await ackBenchmark();
const burst = await burstBenchmark();
const find = await findDialogsBenchmark();
const unknownLimit = await unknownLimitBenchmark();
const ackRatio = ack.ours.perSecond / ack.bare.perSecond;
const drainRatio = burst.drainSeconds / burst.bound;
const perRun = burst.b24Requests / BURST;
const verdict = (ok: boolean) => (ok ? 'met' : 'MISSED');
const table = [
  `Measured ${new Date().toISOString().slice(0, 10)} on ${process.platform}/${process.arch}, Node ${process.version}; both sides of every ratio in the same run.`,
  '',
  '| figure | ours | baseline | ratio | target |',
  '|---|---|---|---|---|',
  `| robot-call acknowledgements per second (${ACK_CONCURRENCY} concurrent, median of ${ACK_ROUNDS}×${ACK_REQUESTS}) | ${fmt(ack.ours.perSecond, 0)} | bare Hono route parsing the same body: ${fmt(ack.bare.perSecond, 0)} | ${fmt(ackRatio)}× | ≥ 0.5× (${verdict(ackRatio >= 0.5)}) |`,
  `| acknowledgement p99 | ${fmt(ack.ours.p99Ms)} ms | bare Hono: ${fmt(ack.bare.p99Ms)} ms | ${fmt(ack.ours.p99Ms / ack.bare.p99Ms)}× | — |`,
  `| drain of a burst of ${BURST} robot calls (distinct clients) | ${fmt(burst.drainSeconds)} s | lower bound from the fakes' limits: ${fmt(burst.bound)} s | ${fmt(drainRatio)}× | ≤ 1.25× (${verdict(drainRatio <= 1.25)}) |`,
  ...unknownLimit,
  `| Bitrix24 requests per robot run in the burst | ${fmt(perRun, 3)} (${burst.b24Requests} requests) | one request per run: 1 | ${fmt(perRun, 3)}× | ≤ 0.05 (${verdict(perRun <= 0.05)}) |`,
  `| Chat2Desk API calls per "Find dialogs" run (${find.runs} runs, ${find.phones} Zipf phones, ${find.changes} changes by webhook) | ${fmt(find.callsPerRun, 3)} (${find.apiCalls} calls) | uncached: 2 per run | ${fmt(find.callsPerRun / 2, 3)}× | ≤ 0.1 per run (${verdict(find.callsPerRun <= 0.1)}) |`,
  `| stale "Find dialogs" answers | ${find.stale} of ${find.runs} | — | — | 0 (${verdict(find.stale === 0)}) |`,
  `| cached dialog lookup p99, in process | ${fmt(find.cachedP99Ms, 3)} ms | the same lookup from the Chat2Desk API: ${fmt(find.uncachedP99Ms, 3)} ms | ${fmt(find.cachedP99Ms / find.uncachedP99Ms, 3)}× | — |`,
  `| heap during the burst | peak ${fmt(burst.peakHeap / 2 ** 20, 1)} MiB | before the burst: ${fmt(burst.heapBefore / 2 ** 20, 1)} MiB | ${fmt(burst.peakHeap / burst.heapBefore)}× | — |`,
  '',
  `Limits in the burst: fake Bitrix24 ${B24_LIMIT.drainPerSecond}/s burst ${B24_LIMIT.burst}; fake Chat2Desk ${C2D_LIMIT.requests} requests per ${C2D_LIMIT.perMs} ms. ` +
    `Chat2Desk requests: ${burst.c2dRequests} (${burst.c2dRefused} refused with 429); Bitrix24 refusals: ${burst.b24Refused}. ` +
    `The burst's acknowledgements ran at ${fmt(burst.ack.perSecond, 0)}/s, p99 ${fmt(burst.ack.p99Ms)} ms, while the workers drained it.`,
].join('\n');
console.log(table);

const readmePath = new URL('../README.md', import.meta.url);
try {
  const readme = readFileSync(readmePath, 'utf8');
  const start = '<!-- bench:start -->';
  const end = '<!-- bench:end -->';
  if (readme.includes(start) && readme.includes(end)) {
    writeFileSync(readmePath, `${readme.slice(0, readme.indexOf(start) + start.length)}\n${table}\n${readme.slice(readme.indexOf(end))}`);
    console.log('\nREADME.md updated.');
  }
} catch {
  // No README next to the bench (e.g. a partial checkout): the printed table is the result.
}
process.exit(0);
