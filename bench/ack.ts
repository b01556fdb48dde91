/**
 * Robot-call acknowledgement, measured from outside the server: our server and a bare Hono route
 * that parses the same body each run in their own child process (bench/server-child.ts), and
 * autocannon drives them from this process. Every request carries a new event token, so each one is
 * a new job for us. Reports acknowledgements per second, p99 and the server's CPU time per
 * acknowledged call, ours against the bare route, rounds alternating between the two.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFakeBitrix24 } from '../test/fakes/bitrix24.js';
import { startFakeChat2Desk } from '../test/fakes/chat2desk.js';
import { freePort, installAndConfigure, stackEnv } from '../test/support/stack.js';
import { type ServerChild, startChild } from './child.js';
import { cannon, median } from './load.js';
import { fmt, type Section, verdict } from './table.js';

const REQUESTS = 3_000;
const WARM_UP = 1_000;
const CONCURRENCY = 32;
/** Rounds of one bare and one ours each, back to back, the order alternating: a slow moment of a shared machine hits both sides of one pair. */
const ROUNDS = 5;

interface Round {
  perSecond: number;
  p99Ms: number;
  cpuMsPerCall: number;
  acknowledged: number;
  refused: number;
}

export async function ackBenchmark(): Promise<Section> {
  const b24 = await startFakeBitrix24();
  const c2d = await startFakeChat2Desk();
  const dir = mkdtempSync(join(tmpdir(), 'c2d-b24-bench-'));
  // The production log level: the per-call log line is part of what an acknowledgement costs.
  const env = stackEnv(b24, c2d, await freePort(), dir, {
    LOG_LEVEL: 'info',
    // The workers are stopped, so every call stays waiting for confirmation: lift the per-portal bound.
    MAX_UNCONFIRMED_CALLS_PER_PORTAL: '1000000',
  });
  const ours = await startChild('ours', env);
  const bare = await startChild('bare', { ...env, PORT: String(await freePort()) });
  await installAndConfigure({ b24, c2d, server: { url: ours.url, idle: () => ours.command('idle') } });
  // Acknowledgement alone: the workers would spend the same CPU on running the jobs.
  await ours.command('stop-worker');

  const bodies = (n: number) =>
    Array.from(
      { length: n },
      (_, i) =>
        b24.robotCallBody({
          code: 'c2d_send_message',
          properties: { phone: '+7 916 123-45-67', text: `Your order #${i} is ready` },
          documentId: ['crm', 'CCrmDocumentDeal', 'DEAL_1'],
        }).body,
    );
  let acknowledgedByUs = 0;
  const load = async (server: ServerChild, amount: number): Promise<Round> => {
    // A few spare bodies: autocannon builds each connection's first request before it sends it.
    const queue = bodies(amount + CONCURRENCY * 2);
    let next = 0;
    await server.command('measure');
    const { result, seconds } = await cannon(server.url, {
      connections: CONCURRENCY,
      amount,
      nextBody: () => {
        const body = queue[next++];
        if (body === undefined) throw new Error('the benchmark ran out of unique robot calls');
        return body;
      },
    });
    const { cpuMicros } = await server.report();
    const acknowledged = result['2xx'];
    if (server === ours) acknowledgedByUs += acknowledged;
    return {
      perSecond: acknowledged / seconds,
      p99Ms: result.latency.p99,
      cpuMsPerCall: cpuMicros / 1000 / Math.max(1, acknowledged),
      acknowledged,
      refused: result.non2xx + result.errors + result.timeouts,
    };
  };

  await load(bare, WARM_UP);
  await load(ours, WARM_UP);
  const bareRounds: Round[] = [];
  const ourRounds: Round[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    if (round % 2 === 0) {
      bareRounds.push(await load(bare, REQUESTS));
      ourRounds.push(await load(ours, REQUESTS));
    } else {
      ourRounds.push(await load(ours, REQUESTS));
      bareRounds.push(await load(bare, REQUESTS));
    }
  }
  const { storedJobs } = await ours.report();
  await Promise.all([ours.command('close'), bare.command('close')]);
  await Promise.all([b24.close(), c2d.close()]);
  rmSync(dir, { recursive: true, force: true });
  const refused = [...bareRounds, ...ourRounds].reduce((sum, round) => sum + round.refused, 0);
  if (refused > 0) throw new Error(`ack benchmark: ${refused} requests were not acknowledged`);
  if (storedJobs !== acknowledgedByUs) throw new Error(`ack benchmark: ${acknowledgedByUs} calls acknowledged, ${storedJobs} jobs stored`);

  const pick = (rounds: Round[], key: 'perSecond' | 'p99Ms' | 'cpuMsPerCall') => median(rounds.map((round) => round[key]));
  // The ratio of each pair of rounds; the figure is their median, the spread their range.
  const pairRatios = (key: 'perSecond' | 'cpuMsPerCall') => ourRounds.map((round, i) => round[key] / (bareRounds[i]?.[key] ?? Number.NaN));
  const spread = (values: number[]) => `${fmt(Math.min(...values))}–${fmt(Math.max(...values))}×`;
  const ratio = median(pairRatios('perSecond'));
  const cpuRatio = median(pairRatios('cpuMsPerCall'));
  return {
    rows: [
      {
        figure: `robot-call acknowledgements per second (autocannon in another process, ${CONCURRENCY} connections, unique event tokens, median of ${ROUNDS} interleaved pairs of ${REQUESTS})`,
        ours: fmt(pick(ourRounds, 'perSecond'), 0),
        baseline: `bare Hono route parsing the same body: ${fmt(pick(bareRounds, 'perSecond'), 0)}`,
        ratio: `${fmt(ratio)}× (pairs ${spread(pairRatios('perSecond'))})`,
        target: `≥ 0.5× (${verdict(ratio >= 0.5)})`,
      },
      {
        figure: 'acknowledgement p99',
        ours: `${fmt(pick(ourRounds, 'p99Ms'))} ms`,
        baseline: `bare Hono: ${fmt(pick(bareRounds, 'p99Ms'))} ms`,
        ratio: `${fmt(pick(ourRounds, 'p99Ms') / pick(bareRounds, 'p99Ms'))}×`,
        target: '—',
      },
      {
        figure: 'server CPU per acknowledged call (its own process, user + system)',
        ours: `${fmt(pick(ourRounds, 'cpuMsPerCall'), 3)} ms`,
        baseline: `bare Hono: ${fmt(pick(bareRounds, 'cpuMsPerCall'), 3)} ms`,
        ratio: `${fmt(cpuRatio)}× (pairs ${spread(pairRatios('cpuMsPerCall'))})`,
        target: '—',
      },
    ],
    notes: [
      `Acknowledgement: each server in its own child process at LOG_LEVEL=info (logs to /dev/null), our workers stopped so the figure is the route alone; every acknowledged call was a stored job (${storedJobs}).`,
    ],
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const section = await ackBenchmark();
  console.log(section.rows.map((row) => `${row.figure}: ${row.ours} vs ${row.baseline} = ${row.ratio} ${row.target}`).join('\n'));
  console.log(section.notes.join('\n'));
  process.exit(0);
}
