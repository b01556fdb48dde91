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
