/**
 * Several server processes on one PostgreSQL (docs/multi-process.md), against one process on
 * SQLite measured in the same run: `npm run bench -- --db postgres --processes 1,2`.
 * One embedded PostgreSQL (test/support/embedded-postgres.ts), a database of its own per stack; each
 * server process is a child (bench/child.ts `startClusterStack`), and the load generator in this
 * process stands for the load balancer, spreading requests over the processes' ports in turn.
 * - acknowledgement throughput and CPU per acknowledged call (as bench/ack.ts: workers stopped, rounds
 *   of every configuration interleaved); the CPU is the server processes' own (process.cpuUsage in
 *   each child, summed), PostgreSQL's own server CPU is given beside it in the notes;
 * - the drain of a burst of robot calls against the fakes' limits (as bench/burst.ts, same bound and target);
 * - `kill -9` of one process mid-burst: the others take its jobs up once their lease runs out, and
 *   every event token reaches Bitrix24 once, every message Chat2Desk once.
 * The lease is passed to every server as BENCH_LEASE_ENV (the job lease, src/jobs/dispatcher.ts).
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { startEmbeddedPostgres, type RunningPostgres } from '../test/support/embedded-postgres.js';
import { eventually } from '../test/support/stack.js';
import { type ClusterStack, limitedStackOptions, STANDARD_LIMITS, startClusterStack } from './child.js';
import { cannon, median, postAll } from './load.js';
import { fmt, type Section, verdict } from './table.js';

/**
 * The job lease (src/config.ts, seconds): short here so the takeover after `kill -9` shows within
 * the run instead of after the production default.
 */
export const BENCH_LEASE_ENV = 'JOB_LEASE_SECONDS';
const LEASE_SECONDS = 5;
const LEASE_MS = LEASE_SECONDS * 1000;

const ACK_REQUESTS = 6_000;
/**
 * Calls each server process answers before the measured rounds. Per process, not per configuration:
 * split over 2 processes, each was colder than the single one (its JIT had seen half the calls), and
 * the first rounds of 2 processes were the slowest of the run. 3,000 calls bring a process near its
 * steady state (0.37 ms CPU per call over the first 2,000, about 0.27 ms later).
 */
const ACK_WARM_UP_PER_PROCESS = 3_000;
const ACK_CONCURRENCY = 32;
const ACK_ROUNDS = 5;
const BURST = 1_000;
/** How long the survivors get after `kill -9` to drain what is left: a few leases and the drain itself. */
const TAKEOVER_TIMEOUT_MS = 4 * LEASE_MS + 3 * 60_000;

interface Configuration {
  name: string;
  processes: number;
  /** undefined: SQLite. */
  databaseUrl?: string;
}

/** CPU time (ms) of PostgreSQL's server so far: the postmaster, its live backends, and the backends it reaped. */
function postgresCpuMs(postmaster: number, tick: number): number {
  const fields = (pid: number) => {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // After the command name (in parentheses, which may hold spaces): state is field 3, ppid 4, utime 14 … cstime 17.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  };
  const ticks = (values: string[], from: number, to: number) => values.slice(from, to).reduce((sum, value) => sum + Number(value), 0);
  let total = ticks(fields(postmaster), 11, 15);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const values = fields(Number(entry));
      if (Number(values[1]) === postmaster) total += ticks(values, 11, 13);
    } catch {
      // The process ended between the listing and the read.
    }
  }
  return (total * 1000) / tick;
}

async function createDatabase(postgres: RunningPostgres, name: string): Promise<string> {
  const admin = new pg.Client({ connectionString: postgres.url });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = new URL(postgres.url);
  url.pathname = `/${name}`;
  return url.toString();
}

const label = (config: Configuration) => `${config.databaseUrl ? 'PostgreSQL' : 'SQLite'}, ${config.processes} process${config.processes > 1 ? 'es' : ''}`;

interface AckRound {
  perSecond: number;
  p99Ms: number;
  cpuMsPerCall: number;
  postgresCpuMsPerCall: number;
  /** The load generator's (this process's) CPU per call: on a machine of 2 cores it competes with the servers. */
  generatorCpuMsPerCall: number;
  acknowledged: number;
  refused: number;
}

async function measureAcknowledgement(configs: Configuration[], postgres: RunningPostgres, tick: number) {
  const stacks: ClusterStack[] = [];
  for (const config of configs) {
    stacks.push(
      await startClusterStack({
        processes: config.processes,
        databaseUrl: config.databaseUrl && (await createDatabase(postgres, `bench_ack_${config.processes}`)),
        // As bench/ack.ts: production's log level, and the per-portal bound lifted since the workers are stopped.
        env: { LOG_LEVEL: 'info', MAX_UNCONFIRMED_CALLS_PER_PORTAL: '1000000', [BENCH_LEASE_ENV]: String(LEASE_SECONDS) },
        label: `ack-${config.databaseUrl ? 'pg' : 'sqlite'}-${config.processes}`,
      }),
    );
  }
  for (const stack of stacks) for (const server of stack.servers) await server.command('stop-worker');
  const acknowledgedBy = configs.map(() => 0);

  const load = async (at: number, amount: number): Promise<AckRound> => {
    const stack = stacks[at]!;
    const share = Math.ceil(amount / stack.urls.length);
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
    const connections = Math.max(1, Math.floor(ACK_CONCURRENCY / stack.urls.length));
    // A few spare bodies per process: autocannon builds each connection's first request before it sends it.
    const queues = stack.urls.map(() => bodies(share + connections * 2));
    for (const server of stack.servers) await server.command('measure');
    const postgresBefore = postgresCpuMs(postgres.pid(), tick);
    const generatorBefore = process.cpuUsage();
    // The load balancer: an equal share of the requests and connections for every process.
    const results = await Promise.all(
      stack.urls.map((url, i) => {
        let next = 0;
        return cannon(url, {
          connections,
          amount: share,
          nextBody: () => {
            const body = queues[i]![next++];
            if (body === undefined) throw new Error('the benchmark ran out of unique robot calls');
            return body;
          },
        });
      }),
    );
    const generator = process.cpuUsage(generatorBefore);
    // From the first request to the last response over all processes (each run is timed from its own start, all started together).
    const seconds = Math.max(...results.map((run) => run.seconds));
    const postgresMs = postgresCpuMs(postgres.pid(), tick) - postgresBefore;
    const reports = await Promise.all(stack.servers.map((server) => server.report()));
    const cpuMicros = reports.reduce((sum, report) => sum + report.cpuMicros, 0);
    const acknowledged = results.reduce((sum, run) => sum + run.result['2xx'], 0);
    acknowledgedBy[at] = (acknowledgedBy[at] ?? 0) + acknowledged;
    return {
      perSecond: acknowledged / seconds,
      p99Ms: Math.max(...results.map((run) => run.result.latency.p99)),
      cpuMsPerCall: cpuMicros / 1000 / Math.max(1, acknowledged),
      postgresCpuMsPerCall: postgresMs / Math.max(1, acknowledged),
      generatorCpuMsPerCall: (generator.user + generator.system) / 1000 / Math.max(1, acknowledged),
      acknowledged,
      refused: results.reduce((sum, run) => sum + run.result.non2xx + run.result.errors + run.result.timeouts, 0),
    };
  };

  for (const [at, config] of configs.entries()) await load(at, ACK_WARM_UP_PER_PROCESS * config.processes);
  const rounds: AckRound[][] = configs.map(() => []);
  for (let round = 0; round < ACK_ROUNDS; round++) {
    // The order turns every round: a slow moment of the shared machine does not always hit the same configuration.
    for (let k = 0; k < configs.length; k++) {
      const at = (round + k) % configs.length;
      rounds[at]!.push(await load(at, ACK_REQUESTS));
    }
  }
  const stored: number[] = [];
  for (const stack of stacks) stored.push((await stack.servers[0]!.report()).storedJobs);
  for (const stack of stacks) await stack.close();
  const refused = rounds.flat().reduce((sum, round) => sum + round.refused, 0);
  if (refused > 0) throw new Error(`postgres ack benchmark: ${refused} requests were not acknowledged`);
  for (const [at, config] of configs.entries())
    if (stored[at] !== acknowledgedBy[at]) throw new Error(`postgres ack benchmark (${label(config)}): ${acknowledgedBy[at]} calls acknowledged, ${stored[at]} jobs stored`);
  return rounds;
}

interface BurstResult {
  drainSeconds: number;
  cpuMsPerRun: number;
  duplicateResults: number;
  duplicateMessages: number;
  c2dRefused: number;
  b24Refused: number;
  /** After `kill -9`: seconds from the kill to the last result, or undefined when not drained in time. */
  takeoverSeconds?: number;
  resultsAtKill?: number;
  resultsAtEnd?: number;
}

/** A burst of BURST robot calls spread over the processes; with `killOne`, the last process is killed once a third of the results are in. */
async function measureBurst(config: Configuration, databaseName: string, postgres: RunningPostgres, killOne: boolean): Promise<BurstResult> {
  const options = limitedStackOptions();
  const stack = await startClusterStack({
    processes: config.processes,
    databaseUrl: config.databaseUrl && (await createDatabase(postgres, databaseName)),
    ...options,
    env: { ...options.env, [BENCH_LEASE_ENV]: String(LEASE_SECONDS) },
    label: databaseName,
  });
  try {
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // let the set-up's requests leave both buckets
    const phones = Array.from({ length: BURST }, (_, i) => `7916${String(10_000_000 + i).slice(1)}`);
    for (const phone of phones) stack.c2d.seedClient({ phone, transport: 'whatsapp', channelId: 17404 });
    const calls = phones.map((phone) =>
      stack.b24.robotCallBody({ code: 'c2d_send_message', properties: { phone, text: 'Your deal moved to the next stage' }, documentId: ['crm', 'CCrmDocumentDeal', 'DEAL_1'] }),
    );
    const tokens = new Set(calls.map((call) => call.eventToken));
    const results = () => new Set(stack.b24.sentEvents.filter((event) => tokens.has(event.eventToken)).map((event) => event.eventToken)).size;
    stack.c2d.resetCalls();
    stack.b24.resetCalls();
    for (const server of stack.servers) await server.command('measure');
    const started = performance.now();
    const ack = await postAll(
      stack.urls.map((url) => `${url}/bitrix24/robot`),
      calls.map((call) => call.body),
      32,
    );
    if ((ack.statuses[200] ?? 0) !== BURST) throw new Error(`postgres burst (${label(config)}): acknowledgements ${JSON.stringify(ack.statuses)}`);
    let killedAt: number | undefined;
    let resultsAtKill: number | undefined;
    let drained = true;
    if (killOne) {
      await eventually(() => results() >= BURST / 3, 5 * 60_000, 'a third of the burst');
      const victim = stack.servers.at(-1)!;
      const cpu = (await victim.report()).cpuMicros;
      victim.kill();
      killedAt = performance.now();
      resultsAtKill = results();
      await eventually(() => results() === BURST, TAKEOVER_TIMEOUT_MS, 'the survivors drained the burst').catch(() => {
        drained = false;
      });
      // The killed process's CPU until its report stands in for its share.
      stack.servers.pop();
      stack.servers.push({ ...victim, report: async () => ({ type: 'report', cpuMicros: cpu, storedJobs: 0, bitrix24Requests: 0, heapBefore: 0, heapPeak: 0 }) });
    } else {
      await eventually(() => results() === BURST, 10 * 60_000, 'burst drained');
    }
    const drainSeconds = (performance.now() - started) / 1000;
    const reports = await Promise.all(stack.servers.map((server) => server.report()));
    const perToken = new Map<string, number>();
    for (const event of stack.b24.sentEvents) if (tokens.has(event.eventToken)) perToken.set(event.eventToken, (perToken.get(event.eventToken) ?? 0) + 1);
    const perClient = new Map<string, number>();
    for (const call of stack.c2d.calls) {
      if (call.method !== 'POST' || call.path !== '/messages' || call.status !== 200) continue;
      const client = String((call.body as { client_id?: unknown }).client_id);
      perClient.set(client, (perClient.get(client) ?? 0) + 1);
    }
    const failed = stack.b24.sentEvents.filter((event) => tokens.has(event.eventToken) && event.returnValues.status !== 'sent');
    if (drained && failed.length > 0) throw new Error(`postgres burst (${label(config)}): ${failed.length} failed runs, e.g. ${String(failed[0]?.returnValues.error)}`);
    const extra = (counts: Map<string, number>) => [...counts.values()].reduce((sum, count) => sum + count - 1, 0);
    return {
      drainSeconds,
      cpuMsPerRun: reports.reduce((sum, report) => sum + report.cpuMicros, 0) / 1000 / BURST,
      duplicateResults: extra(perToken),
      duplicateMessages: extra(perClient),
      c2dRefused: stack.c2d.calls.filter((call) => call.status === 429).length,
      b24Refused: stack.b24.calls.filter((call) => call.error === 'QUERY_LIMIT_EXCEEDED').length,
      ...(killOne ? { resultsAtKill, resultsAtEnd: results(), takeoverSeconds: drained && killedAt !== undefined ? (performance.now() - killedAt) / 1000 : undefined } : {}),
    };
  } finally {
    await stack.close();
  }
}

export async function postgresBenchmark(processCounts: number[]): Promise<Section> {
  const tick = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  const postgres = await startEmbeddedPostgres();
  try {
    const url = postgres.url; // each stack makes its own database on this server
    const sqlite: Configuration = { name: 'sqlite', processes: 1 };
    const onPostgres: Configuration[] = processCounts.map((processes) => ({ name: `pg${processes}`, processes, databaseUrl: url }));
    const configs = [sqlite, ...onPostgres];

    const ack = await measureAcknowledgement(configs, postgres, tick);
    const bursts: BurstResult[] = [];
    for (const config of configs) bursts.push(await measureBurst(config, `bench_burst_${config.name}`, postgres, false));
    const most = onPostgres.reduce<Configuration | undefined>((best, config) => (config.processes > (best?.processes ?? 1) ? config : best), undefined);
    const crash = most ? await measureBurst(most, `bench_kill_${most.processes}`, postgres, true) : undefined;

    const pick = (at: number, key: keyof AckRound) => median(ack[at]!.map((round) => round[key]));
    // Per round, each configuration against the SQLite run of the same round; the figure is the median.
    const against = (at: number, base: number, key: 'perSecond' | 'cpuMsPerCall') => median(ack[at]!.map((round, i) => round[key] / (ack[base]![i]?.[key] ?? Number.NaN)));
    const rows: Section['rows'] = [];
    for (const [at, config] of configs.entries()) {
      if (at === 0) continue;
      const ratio = against(at, 0, 'perSecond');
      const onePg = configs.findIndex((other) => other.databaseUrl && other.processes === 1);
      const scaling = config.processes > 1 && onePg > 0 ? against(at, onePg, 'perSecond') : undefined;
      rows.push({
        figure: `robot-call acknowledgements per second, ${label(config)} (autocannon in another process spreading ${ACK_CONCURRENCY} connections over the processes, median of ${ACK_ROUNDS} interleaved rounds of ${ACK_REQUESTS})`,
        ours: fmt(pick(at, 'perSecond'), 0),
        baseline: `SQLite, 1 process: ${fmt(pick(0, 'perSecond'), 0)}`,
        ratio: scaling === undefined ? `${fmt(ratio)}×` : `${fmt(ratio)}× (against PostgreSQL 1 process: ${fmt(scaling)}×)`,
        target: scaling === undefined ? '—' : `≥ 1× of 1 process (${verdict(scaling >= 1)})`,
      });
    }
    for (const [at, config] of configs.entries()) {
      if (at === 0) continue;
      const ratio = against(at, 0, 'cpuMsPerCall');
      rows.push({
        figure: `server CPU per acknowledged call, ${label(config)} (the server processes' user + system, summed)`,
        ours: `${fmt(pick(at, 'cpuMsPerCall'), 3)} ms`,
        baseline: `SQLite, 1 process: ${fmt(pick(0, 'cpuMsPerCall'), 3)} ms`,
        ratio: `${fmt(ratio)}×`,
        target: `≤ 1.5× (${verdict(ratio <= 1.5)})`,
      });
    }
    const { c2d: C2D_LIMIT, b24: B24_LIMIT } = STANDARD_LIMITS;
    // As bench/burst.ts: a lookup and a send per run against Chat2Desk's window, confirmation and result batches against Bitrix24's bucket.
    const c2dBound = (BURST * 2) / (C2D_LIMIT.requests / (C2D_LIMIT.perMs / 1000));
    const b24Bound = Math.max(0, 2 * Math.ceil(BURST / 50) - B24_LIMIT.burst) / B24_LIMIT.drainPerSecond;
    const bound = Math.max(c2dBound, b24Bound);
    for (const [at, config] of configs.entries()) {
      const burst = bursts[at]!;
      const ratio = burst.drainSeconds / bound;
      rows.push({
        figure: `drain of a burst of ${BURST} robot calls, ${label(config)}`,
        ours: `${fmt(burst.drainSeconds)} s`,
        baseline: `lower bound from the fakes' limits: ${fmt(bound)} s`,
        ratio: `${fmt(ratio)}×`,
        target: `≤ 1.25× (${verdict(ratio <= 1.25)})`,
      });
    }
    if (crash && most) {
      const duplicates = crash.duplicateResults + crash.duplicateMessages;
      const drained = crash.takeoverSeconds !== undefined;
      rows.push({
        figure: `\`kill -9\` of one of ${most.processes} processes mid-burst (${crash.resultsAtKill} of ${BURST} results in): results sent twice to Bitrix24, messages sent twice to Chat2Desk`,
        ours: `${crash.duplicateResults} and ${crash.duplicateMessages}`,
        baseline: 'every event token and message once: 0',
        ratio: '—',
        target: `0 (${verdict(duplicates === 0)})`,
      });
      rows.push({
        figure: `the survivors drain the rest after the kill (job lease ${LEASE_MS / 1000} s, ${BENCH_LEASE_ENV})`,
        ours: drained ? `${fmt(crash.takeoverSeconds!)} s` : `${crash.resultsAtEnd} of ${BURST} results after ${fmt(TAKEOVER_TIMEOUT_MS / 1000, 0)} s`,
        baseline: `the lease: ${fmt(LEASE_MS / 1000)} s`,
        ratio: drained ? `${fmt(crash.takeoverSeconds! / (LEASE_MS / 1000))}×` : '—',
        target: `drained (${verdict(drained)})`,
      });
    }
    const postgresCpu = configs.map((config, at) => (config.databaseUrl ? `${label(config)}: ${fmt(pick(at, 'postgresCpuMsPerCall'), 3)} ms` : undefined)).filter(Boolean);
    // What a call costs the whole machine: with every core busy, its inverse bounds the acknowledgements a second.
    const machineCpu = configs
      .map((config, at) => {
        const server = pick(at, 'cpuMsPerCall');
        const database = config.databaseUrl ? pick(at, 'postgresCpuMsPerCall') : 0;
        const generator = pick(at, 'generatorCpuMsPerCall');
        const parts = [`server ${fmt(server, 3)}`, ...(config.databaseUrl ? [`PostgreSQL ${fmt(database, 3)}`] : []), `load generator ${fmt(generator, 3)}`];
        return `${label(config)}: ${fmt(server + database + generator, 3)} ms (${parts.join(' + ')})`;
      })
      .join('; ');
    return {
      rows,
      notes: [
        `PostgreSQL: one embedded PostgreSQL (fsync off), a database per configuration; every server process a child of the bench, the load generator spreading requests over their ports in turn (the load balancer). ` +
          `Acknowledgement as in the ack figure (workers stopped, LOG_LEVEL=info). PostgreSQL's own server CPU per acknowledged call, not in the figure above: ${postgresCpu.join('; ')}; SQLite's is inside the server process. ` +
          `CPU per acknowledged call on the whole machine (medians, ${availableParallelism()} cores; with every core busy, the cores over this figure bound the acknowledgements a second): ${machineCpu}. ` +
          `Bursts at the standard limits: ${configs.map((config, at) => `${label(config)} ${fmt(bursts[at]!.cpuMsPerRun, 2)} ms CPU per run, ${bursts[at]!.c2dRefused} Chat2Desk 429s, ${bursts[at]!.b24Refused} Bitrix24 refusals, duplicates ${bursts[at]!.duplicateResults}/${bursts[at]!.duplicateMessages}`).join('; ')}. ` +
          `The per-portal slots and the upstream budgets are shared by the processes (docs/multi-process.md). The scaling ratio is the median of each round's ratio, so it may differ from the ratio of the medians shown. ` +
          (crash ? `After \`kill -9\` the survivors take the dead process's jobs up once the job lease (${BENCH_LEASE_ENV}=${LEASE_SECONDS}) ran out.` : ''),
      ],
    };
  } finally {
    await postgres.stop();
  }
}
