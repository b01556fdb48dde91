/**
 * The burst of 1,000 "Send message" runs against a fake Chat2Desk whose limit the client is NOT told:
 * it starts from the default CHAT2DESK_REQUESTS_PER_MINUTE (300, i.e. 5/s) and has to learn the limit
 * (src/chat2desk/adaptive-rate.ts). Figures: drain time against the bound the limit allows, and the
 * share of requests Chat2Desk refused; plus the same burst with no limit at all, which shows what the
 * machine itself allows. Our server runs in a child process (bench/child.ts), the fakes and the load
 * generator here. Returns rows for the README table (see bench/run.ts).
 */
import { performance } from 'node:perf_hooks';
import { accountKey } from '../src/chat2desk/client.js';
import { systemClock } from '../src/clock.js';
import { Chat2DeskRateStore } from '../src/db/chat2desk-rates.js';
import { openDatabase } from '../src/db/database.js';
import { eventually } from '../test/support/stack.js';
import { startChildStack } from './child.js';
import { postAll } from './load.js';
import { fmt, type Row, type Section, verdict } from './table.js';

const BURST = 1_000;
/** Chat2Desk requests per run at the least: the client lookup by phone and the send. */
const REQUESTS_PER_RUN = 2;
/** Limits the client is not told, as the fake counts them: `requests` per sliding `perMs` window. */
const LIMITS = [
  { requests: 20, perMs: 1_000 },
  { requests: 200, perMs: 1_000 },
];
const DRAIN_TARGET = 1.3;
/** BENCH_UNKNOWN_LIMITS=200,none runs only those bursts (per second, or `none`), for quick comparisons; all by default. */
const chosen = (name: string) => !process.env.BENCH_UNKNOWN_LIMITS || process.env.BENCH_UNKNOWN_LIMITS.split(',').includes(name);
const REFUSED_TARGET = 0.02;

/** Posts the robot calls; the in-process postAll unless the caller has a load generator of its own. */
export type PostBurst = (url: string, bodies: string[]) => Promise<unknown>;

interface BurstRun {
  drainSeconds: number;
  requests: number;
  refused: number;
  learnedPerMinute: number | undefined;
  /** The server's CPU time over the drain, in seconds. */
  cpuSeconds: number;
}

async function burstAgainst(limit: { requests: number; perMs: number } | false, post: PostBurst): Promise<BurstRun> {
  const stack = await startChildStack({
    label: `unknown-limit-${limit ? (limit.requests * 1000) / limit.perMs : 'none'}`,
    c2d: { rateLimit: limit },
    b24: { rateLimit: { drainPerSecond: 2, burst: 50 } },
    env: {
      LOG_LEVEL: 'silent',
      B24_RATE_PER_SECOND: '2',
      B24_RATE_BURST: '50',
      // Not told the limit: the production default start, and a ceiling high enough not to be the cap.
      CHAT2DESK_REQUESTS_PER_MINUTE: '300',
      CHAT2DESK_MAX_REQUESTS_PER_MINUTE: '60000',
      CHAT2DESK_CONCURRENCY: '16',
      PORTAL_CONCURRENCY: '16',
    },
  });
  try {
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // let the set-up's requests leave the fake's window
    const phones = Array.from({ length: BURST }, (_, i) => `7926${String(10_000_000 + i).slice(1)}`);
    for (const phone of phones) stack.c2d.seedClient({ phone, transport: 'whatsapp', channelId: 17404 });
    const calls = phones.map((phone) =>
      stack.b24.robotCallBody({ code: 'c2d_send_message', properties: { phone, text: 'Your deal moved to the next stage' }, documentId: ['crm', 'CCrmDocumentDeal', 'DEAL_1'] }),
    );
    stack.c2d.resetCalls();
    await stack.server.command('measure');
    const started = performance.now();
    await post(
      `${stack.server.url}/bitrix24/robot`,
      calls.map((call) => call.body),
    );
    const tokens = new Set(calls.map((call) => call.eventToken));
    await eventually(() => stack.b24.sentEvents.filter((event) => tokens.has(event.eventToken)).length === BURST, 10 * 60_000, 'burst drained');
    const drainSeconds = (performance.now() - started) / 1000;
    const { cpuMicros } = await stack.server.report();
    const failed = stack.b24.sentEvents.filter((event) => tokens.has(event.eventToken) && event.returnValues.status !== 'sent');
    if (failed.length > 0) throw new Error(`unknown Chat2Desk limit: ${failed.length} failed runs, e.g. ${String(failed[0]?.returnValues.error)}`);
    const requests = stack.c2d.calls.length;
    const refused = stack.c2d.calls.filter((call) => call.status === 429).length;
    // What the client stored at shutdown, and would resume from after a restart.
    await stack.server.command('close');
    const database = openDatabase(stack.databaseFile);
    const learnedPerMinute = (await new Chat2DeskRateStore(database, systemClock).get(accountKey(stack.c2d.url, stack.c2d.token)))?.perMinute;
    database.close();
    return { drainSeconds, requests, refused, learnedPerMinute, cpuSeconds: cpuMicros / 1e6 };
  } finally {
    await stack.close();
  }
}

/** Runs the burst against each unknown limit and without one; returns README table rows (figure | ours | baseline | ratio | target). */
export async function unknownLimitBenchmark(post: PostBurst = (url, bodies) => postAll(url, bodies, 32)): Promise<Section> {
  const rows: Row[] = [];
  // The server's CPU over each drain: near a whole core, the drain is bounded by the server's own work, not by the limit.
  const cpu: string[] = [];
  const cpuOf = (name: string, run: BurstRun) => `${name} ${fmt(run.cpuSeconds)} s (${fmt((run.cpuSeconds / run.drainSeconds) * 100, 0)}% of one core)`;
  for (const limit of LIMITS.filter((candidate) => chosen(String((candidate.requests * 1000) / candidate.perMs)))) {
    const run = await burstAgainst(limit, post);
    const perSecond = (limit.requests * 1000) / limit.perMs;
    cpu.push(cpuOf(`${perSecond}/s`, run));
    // The fake's window lets `requests` through at once, then `requests` per window: no client can
    // finish the burst's requests sooner than this.
    const bound = ((BURST * REQUESTS_PER_RUN) / limit.requests - 1) * (limit.perMs / 1000);
    const drainRatio = run.drainSeconds / bound;
    const refusedShare = run.refused / run.requests;
    const learned = run.learnedPerMinute === undefined ? 'nothing stored' : `stored ${(run.learnedPerMinute / 60).toFixed(1)}/s`;
    rows.push(
      {
        figure: `drain of the ${BURST}-call burst, Chat2Desk limit ${perSecond}/s the client is not told (starts at 5/s; ${learned})`,
        ours: `${fmt(run.drainSeconds)} s`,
        baseline: `bound that limit allows: ${fmt(bound)} s`,
        ratio: `${fmt(drainRatio)}×`,
        target: `≤ ${DRAIN_TARGET}× (${verdict(drainRatio <= DRAIN_TARGET)})`,
      },
      {
        figure: `Chat2Desk refusals in that burst (${perSecond}/s)`,
        ours: `${run.refused} of ${run.requests} requests`,
        baseline: '—',
        ratio: `${fmt(refusedShare * 100)}%`,
        target: `≤ ${REFUSED_TARGET * 100}% (${verdict(refusedShare <= REFUSED_TARGET)})`,
      },
    );
  }
  const free = chosen('none') ? await burstAgainst(false, post) : undefined;
  if (free) cpu.push(cpuOf('no limit', free));
  if (free)
    rows.push({
      figure: 'the same burst with no Chat2Desk limit at all (what this machine allows; the client still starts at 5/s)',
      ours: `${fmt(free.drainSeconds)} s`,
      baseline: '—',
      ratio: '—',
      target: '—',
    });
  return {
    rows,
    notes: [
      `Unknown-limit bursts: our server in its own process, the fakes and the load generator (in-process fetch, 32 at a time) in the bench process. Server CPU over each drain: ${cpu.join('; ')}.`,
    ],
  };
}
