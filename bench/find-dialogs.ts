import { performance } from 'node:perf_hooks';
import { eventually, installAndConfigure, startStack } from '../test/support/stack.js';
import { fmt, type Section, verdict } from './table.js';

const RUNS = 10_000;
const PHONES = 1_000;
const BLOCK = 100; // one Chat2Desk change between blocks: 1% of the runs see a change just before them
const ZIPF_S = 1.0;

type Row = Record<string, unknown>;

/** Ranks 0..n-1 with Zipf(s) popularity, from a seeded generator so every run draws the same sequence. */
function zipfSampler(n: number, s: number, seed: number): () => number {
  const weights = Array.from({ length: n }, (_, k) => 1 / (k + 1) ** s);
  const total = weights.reduce((a, b) => a + b, 0);
  const cdf: number[] = [];
  let acc = 0;
  for (const w of weights) {
    acc += w / total;
    cdf.push(acc);
  }
  let state = seed >>> 0;
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => {
    const u = random();
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((cdf[mid] ?? 1) < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

function percentile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

/**
 * "Find dialogs by phone" as CRM automation runs it in bulk: 10,000 robot runs over 1,000 phones with
 * Zipf popularity, while Chat2Desk changes a dialog (operator transfer or a new client message, sent
 * to us as a webhook) before every 100th run. Counts Chat2Desk API calls per run and answers that
 * disagree with Chat2Desk's state at the time of the call.
 */
export async function findDialogsBenchmark(): Promise<Section> {
  // Bitrix24's REST limit is not what this measures; an Enterprise-sized bucket keeps the run short.
  const stack = await startStack({ b24: { rateLimit: false }, env: { LOG_LEVEL: 'silent', B24_RATE_PER_SECOND: '50', B24_RATE_BURST: '250' }, reportLingerMs: 20 });
  const phones = Array.from({ length: PHONES }, (_, i) => `7926${String(10_000_000 + i).slice(1)}`);
  const dialogs: Row[] = [];
  for (const phone of phones) {
    const { client, dialog } = stack.c2d.seedClient({ phone, transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    stack.c2d.receiveMessage({ clientId: client.id as number, text: `hello from ${phone}` });
    dialog!.operator_id = 617;
    dialogs.push(dialog!);
  }
  await installAndConfigure(stack); // fills the cache in bulk, as after a real first save
  stack.c2d.resetCalls();

  const draw = zipfSampler(PHONES, ZIPF_S, 42);
  let stale = 0;
  let changes = 0;
  for (let block = 0; block < RUNS / BLOCK; block++) {
    const changed = draw();
    const dialog = dialogs[changed]!;
    if (block % 2 === 0) {
      dialog.operator_id = dialog.operator_id === 617 ? 311416 : 617;
      await stack.c2d.deliverWebhook({ hook_type: 'dialog_transferred', dialog_id: dialog.id, operator_id: dialog.operator_id, event_time: new Date().toISOString() });
    } else {
      const clientId = stack.c2d.account().clients.find((client) => client.phone === phones[changed])!.id as number;
      const { webhook } = stack.c2d.receiveMessage({ clientId, text: `message ${block}` });
      await stack.c2d.deliverWebhook(webhook);
    }
    changes += 1;
    const calls = Array.from({ length: BLOCK }, () => draw()).map((rank) => ({
      rank,
      ...stack.b24.robotCallBody({ code: 'c2d_find_dialogs', properties: { phone: `+${phones[rank]!}` }, documentId: ['crm', 'CCrmDocumentDeal', 'DEAL_1'] }),
    }));
    await Promise.all(
      calls.map((call) => fetch(`${stack.server.url}/bitrix24/robot`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: call.body })),
    );
    const tokens = new Set(calls.map((call) => call.eventToken));
    await eventually(() => stack.b24.sentEvents.filter((event) => tokens.has(event.eventToken)).length === BLOCK, 60_000, 'block answered');
    for (const call of calls) {
      const answer = stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken)!.returnValues;
      const truth = dialogs[call.rank]!;
      const lastText = (truth.last_message as Row | null)?.text;
      if (answer.status !== 'ok' || String(answer.operator_id) !== String(truth.operator_id) || answer.last_message_text !== lastText) stale += 1;
    }
  }
  const apiCalls = stack.c2d.calls.length;

  // A cached lookup inside the process, against the same lookup straight from the Chat2Desk API.
  const directory = (await stack.server.directoryOf(stack.b24.memberId))!;
  const api = directory.api;
  const cached: number[] = [];
  const uncached: number[] = [];
  for (let i = 0; i < 2_000; i++) {
    const phone = phones[draw()]!;
    let t0 = performance.now();
    const [client] = await directory.clientsByPhone(phone);
    await directory.dialogsOfClient(client!.id);
    cached.push(performance.now() - t0);
    t0 = performance.now();
    const [direct] = await api.clientsByPhone(phone);
    await api.clientDialogs(direct!.id!);
    uncached.push(performance.now() - t0);
  }
  await stack.close();
  const callsPerRun = apiCalls / RUNS;
  const cachedP99Ms = percentile(cached, 0.99);
  const uncachedP99Ms = percentile(uncached, 0.99);
  return {
    rows: [
      {
        figure: `Chat2Desk API calls per "Find dialogs" run (${RUNS} runs, ${PHONES} Zipf phones, ${changes} changes by webhook)`,
        ours: `${fmt(callsPerRun, 3)} (${apiCalls} calls)`,
        baseline: 'uncached: 2 per run',
        ratio: `${fmt(callsPerRun / 2, 3)}×`,
        target: `≤ 0.1 per run (${verdict(callsPerRun <= 0.1)})`,
      },
      { figure: 'stale "Find dialogs" answers', ours: `${stale} of ${RUNS}`, baseline: '—', ratio: '—', target: `0 (${verdict(stale === 0)})` },
      {
        figure: 'cached dialog lookup p99, in process',
        ours: `${fmt(cachedP99Ms, 3)} ms`,
        baseline: `the same lookup from the Chat2Desk API: ${fmt(uncachedP99Ms, 3)} ms`,
        ratio: `${fmt(cachedP99Ms / uncachedP99Ms, 3)}×`,
        target: '—',
      },
    ],
    notes: [],
  };
}
