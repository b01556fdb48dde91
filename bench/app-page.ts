/**
 * The app page's server render time (README "The app page"): Bitrix24 POSTs the frame to /app, our
 * server asks the portal who the user is (`profile`, docs/protocols.md B13) and renders the page. The
 * p95 of a warm POST /app, against GET /healthz through the same server in the same run; the
 * portal's `profile` answer time is measured apart (the bench process asking the fake directly, the
 * same question) and reported as the upstream part. Our server runs in a child process (bench/child.ts).
 */
import { performance } from 'node:perf_hooks';
import type { RecordedCall } from '../test/fakes/bitrix24.js';
import { startChildStack } from './child.js';
import { fmt, type Section } from './table.js';

const WARM_UP = 30;
const ROUNDS = 300;

export async function appPageBenchmark(): Promise<Section> {
  const stack = await startChildStack({
    label: 'app-page',
    // No rate limit on either side: the figure is the render, not the portal's budget (page checks
    // take a share of it, src/bitrix24/rest-client.ts callAs, which 300 opens in a row would use up).
    b24: { rateLimit: false },
    env: { LOG_LEVEL: 'silent', B24_RATE_PER_SECOND: '10000', B24_RATE_BURST: '100000' },
  });
  const { b24, server } = stack;
  const openApp = async (): Promise<{ ms: number; status: number }> => {
    const { query, body } = b24.installPageRequest();
    const t0 = performance.now();
    const response = await fetch(`${server.url}/app?${query}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
    await response.arrayBuffer();
    return { ms: performance.now() - t0, status: response.status };
  };
  const health = async (): Promise<number> => {
    const t0 = performance.now();
    const response = await fetch(`${server.url}/healthz`);
    await response.arrayBuffer();
    if (response.status !== 200) throw new Error(`app-page: /healthz answered ${response.status}`);
    return performance.now() - t0;
  };
  const profile = async (): Promise<number> => {
    const body = new URLSearchParams({ auth: b24.issueAuth(1).access_token }).toString();
    const t0 = performance.now();
    const response = await fetch(`${b24.clientEndpoint}profile`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
    await response.arrayBuffer();
    if (response.status !== 200) throw new Error(`app-page: profile answered ${response.status}`);
    return performance.now() - t0;
  };

  for (let i = 0; i < WARM_UP; i++) {
    const open = await openApp();
    if (open.status !== 200) throw new Error(`app-page: POST /app answered ${open.status}`);
    await health();
    await profile();
  }
  b24.resetCalls();
  stack.c2d.resetCalls();
  await server.command('measure');
  const page: number[] = [];
  const baseline: number[] = [];
  const upstream: number[] = [];
  // One of each per round, one at a time: each figure sees the same machine.
  for (let i = 0; i < ROUNDS; i++) {
    const open = await openApp();
    if (open.status !== 200) throw new Error(`app-page: POST /app answered ${open.status}`);
    page.push(open.ms);
    baseline.push(await health());
  }
  const { cpuMicros } = await server.report();
  const portalCalls = topLevel(b24.calls).filter((call) => call.method !== 'profile');
  const byMethod = (calls: Array<{ method: string }>) => {
    const counts = new Map<string, number>();
    for (const call of calls) counts.set(call.method, (counts.get(call.method) ?? 0) + 1);
    return [...counts].map(([method, n]) => `${method} ${fmt(n / ROUNDS, 2)}`).join(', ') || 'none';
  };
  const chat2deskMethods = byMethod(stack.c2d.calls.map((call) => ({ method: `${call.method} ${call.path.split('?')[0]}` })));
  const profiles = topLevel(b24.calls).filter((call) => call.method === 'profile').length;
  for (let i = 0; i < ROUNDS; i++) upstream.push(await profile());
  await stack.close();

  const p95 = (values: number[]) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(0.95 * values.length))] ?? 0;
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;
  const [pageP95, baselineP95, upstreamP95] = [p95(page), p95(baseline), p95(upstream)];
  return {
    rows: [
      {
        figure: `app page server render, warm POST /app p95 (${ROUNDS} opens, one at a time)`,
        ours: `${fmt(pageP95)} ms (of which upstream: the portal's \`profile\` answer, p95 ${fmt(upstreamP95)} ms)`,
        baseline: `GET /healthz through the same server: ${fmt(baselineP95)} ms`,
        ratio: `${fmt(pageP95 / baselineP95)}×`,
        target: '—',
      },
    ],
    notes: [
      `App page: our server in its own process, fake Bitrix24 with no rate limit, each open with a fresh AUTH_ID. Medians: POST /app ${fmt(median(page))} ms, /healthz ${fmt(median(baseline))} ms, \`profile\` asked directly ${fmt(median(upstream))} ms. ` +
        `Upstream requests per open besides \`profile\` (${fmt(profiles / ROUNDS, 2)}): Bitrix24 ${byMethod(portalCalls)}; Chat2Desk ${chat2deskMethods}; neither is in the upstream figure; ` +
        `it spent ${fmt(cpuMicros / 1000 / ROUNDS, 2)} ms of CPU per open (and /healthz).`,
    ],
  };
}

/**
 * The requests in the fake portal's call log: a batch's commands are logged right after it (the
 * fake runs them in one go) and are not requests; a batch shows as `batch(<its methods>)`.
 */
function topLevel(calls: RecordedCall[]): Array<{ method: string }> {
  const requests: Array<{ method: string }> = [];
  for (let i = 0; i < calls.length; i++) {
    const call = calls[i]!;
    const commands = call.method === 'batch' && call.status === 200 ? Object.keys((call.params.cmd as Record<string, unknown> | undefined) ?? {}).length : 0;
    const inner = calls.slice(i + 1, i + 1 + commands).map((command) => command.method);
    requests.push({ method: commands > 0 ? `batch(${inner.join(' ')})` : call.method });
    i += commands;
  }
  return requests;
}
