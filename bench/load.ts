import autocannon, { type Result as CannonResult } from 'autocannon';
import { performance } from 'node:perf_hooks';

export interface LoadResult {
  requests: number;
  seconds: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  statuses: Record<number, number>;
}

/**
 * Posts every body once, `concurrency` at a time, over kept-alive loopback connections; given several
 * URLs (server processes behind a load balancer), the bodies go to them in turn.
 */
export async function postAll(url: string | string[], bodies: string[], concurrency: number): Promise<LoadResult> {
  const urls = typeof url === 'string' ? [url] : url;
  const latencies: number[] = [];
  const statuses: Record<number, number> = {};
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < bodies.length) {
        const at = next++;
        const body = bodies[at]!;
        const t0 = performance.now();
        const response = await fetch(urls[at % urls.length]!, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
        await response.arrayBuffer();
        latencies.push(performance.now() - t0);
        statuses[response.status] = (statuses[response.status] ?? 0) + 1;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  return { requests: bodies.length, seconds, perSecond: bodies.length / seconds, p50Ms: at(0.5), p99Ms: at(0.99), statuses };
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

/**
 * Posts `amount` robot-call bodies to `url` with autocannon over `connections` connections, taking
 * each body from `nextBody`. Returns autocannon's result and the seconds from the first request to
 * the last response, timed here: autocannon resolves an `amount` run only at its next sample tick
 * (every second by default), so its own end rounded every run up to whole seconds (2000 calls in
 * 4.2 s read as 5 s). The sample interval is short so the run (and a CPU window around it) ends
 * close to the last response.
 */
export async function cannon(url: string, options: { connections: number; amount: number; nextBody: () => string }): Promise<{ result: CannonResult; seconds: number }> {
  const started = performance.now();
  let lastResponse = started;
  const result = await autocannon({
    url,
    connections: options.connections,
    amount: options.amount,
    timeout: 30,
    sampleInt: 10,
    requests: [
      {
        method: 'POST',
        path: '/bitrix24/robot',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        setupRequest: (request) => ({ ...request, body: options.nextBody() }),
        onResponse: () => {
          lastResponse = performance.now();
        },
      },
    ],
  });
  return { result, seconds: (lastResponse - started) / 1000 };
}
