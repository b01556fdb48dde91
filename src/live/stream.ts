import { setTimeout as sleep } from 'node:timers/promises';
import type { SSEStreamingApi } from 'hono/streaming';
import type { Clock } from '../clock.js';
import type { LiveEvent } from './changes.js';
import type { LiveSink } from './hub.js';
import type { LiveGrant } from './tickets.js';

/** A comment this often keeps proxies and load balancers from closing an idle stream (many cut at 30–60 s). */
export const PING_EVERY_MS = 25_000;

/** How a stream waits for its next ping; a test passes timers it fires itself instead of waiting 25 s. */
export interface LiveTimers {
  /** Resolves after `ms`, or at once when `signal` aborts. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

export const systemTimers: LiveTimers = {
  sleep: (ms, signal) => sleep(ms, undefined, { signal }).catch(() => undefined),
};

/**
 * One open live stream: the hub's sink for its viewer, and the loop that pings it and ends it when
 * the viewer's token expires (the page then reconnects with a new ticket, which needs a fresh token).
 */
export class LiveStream implements LiveSink {
  #stream: SSEStreamingApi | undefined;
  #dropped = false;
  readonly #ended = new AbortController();

  constructor(
    private readonly grant: LiveGrant,
    private readonly deps: { clock: Clock; timers: LiveTimers },
  ) {}

  send(event: LiveEvent): Promise<void> {
    // The route attaches the stream in the same synchronous step as it subscribes, before any change can be fanned out.
    if (!this.#stream) return Promise.reject(new Error('The live stream is not open'));
    return this.#stream.writeSSE({ event: 'dialog', data: JSON.stringify(event) });
  }

  drop(): void {
    this.#dropped = true;
    this.#ended.abort();
  }

  end(): void {
    this.#ended.abort();
  }

  /** Runs until the token expires, the client goes away or the hub drops this stream; then `finished` runs. */
  async run(stream: SSEStreamingApi, finished: () => void): Promise<void> {
    this.#stream = stream;
    stream.onAbort(() => this.#ended.abort());
    // Writes are not awaited: a reader that stops reading must not hold this loop past the token's expiry.
    // The first bytes send the headers, so the page knows at once that the stream is open.
    void stream.write(': connected\n\n');
    const { clock, timers } = this.deps;
    for (;;) {
      const left = this.grant.viewer.expiresAt - clock.now();
      if (left <= 0 || this.#ended.signal.aborted) break;
      await timers.sleep(Math.min(PING_EVERY_MS, left), this.#ended.signal);
      if (this.#ended.signal.aborted || clock.now() >= this.grant.viewer.expiresAt) break;
      void stream.write(': ping\n\n');
    }
    finished();
    // A dropped reader is not waited for: what it has not taken is thrown away with the connection.
    if (this.#dropped) stream.abort();
  }
}
