/** The part of autocannon's API the benchmark uses (the package ships no types). */
declare module 'autocannon' {
  interface RawRequest {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
  }
  interface Options {
    url: string;
    connections?: number;
    amount?: number;
    timeout?: number;
    /** How often (ms) autocannon samples its counters; an `amount` run ends at the next sample. */
    sampleInt?: number;
    requests?: Array<RawRequest & { setupRequest?: (request: RawRequest) => RawRequest; onResponse?: (status: number, body: string) => void }>;
  }
  export interface Result {
    duration: number;
    errors: number;
    timeouts: number;
    non2xx: number;
    '2xx': number;
    latency: { p50: number; p99: number; average: number };
    statusCodeStats: Record<string, { count: number }>;
  }
  function autocannon(options: Options): Promise<Result>;
  export default autocannon;
}
