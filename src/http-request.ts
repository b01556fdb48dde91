import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';

/** What our protocol clients send: the part of fetch's RequestInit they use. */
export interface HttpInit {
  method: string;
  headers: Record<string, string>;
  body?: string;
  /**
   * The whole exchange, answer included, ends after this long with a TimeoutError, as fetch with
   * AbortSignal.timeout would (a plain timer: such a signal per request showed in the burst's profile).
   */
  timeoutMs?: number;
  /** Redirects are never followed here; the field is for fetch, which follows them unless told. */
  redirect?: 'manual';
}

/** What our protocol clients read of an answer: the part of fetch's Response they use. */
export interface HttpAnswer {
  status: number;
  ok: boolean;
  headers: { get(name: string): string | null };
  text(): Promise<string>;
}

/** One HTTP exchange: `httpRequest` in the server; `viaFetch` turns a test's fetch into one. */
export type HttpRequest = (url: string | URL, init: HttpInit) => Promise<HttpAnswer>;

/** A fetch (a test's, watching the traffic) as the transport, its timeout an AbortSignal. */
export function viaFetch(fetchImpl: typeof fetch): HttpRequest {
  return (url, { timeoutMs, ...init }) => fetchImpl(url, { ...init, ...(timeoutMs === undefined ? {} : { signal: AbortSignal.timeout(timeoutMs) }) });
}

// Connections are kept for the next request, as fetch (undici) and Node's global agent keep them;
// an idle one is closed after 5 s, before servers commonly close theirs.
const agents = {
  'http:': new http.Agent({ keepAlive: true, scheduling: 'lifo', timeout: 5_000 }),
  'https:': new https.Agent({ keepAlive: true, scheduling: 'lifo', timeout: 5_000 }),
};

/**
 * An HTTP exchange on node:http, for the protocol clients' hot path: in a burst, fetch (undici, with
 * its web streams, Request and Headers objects) cost about three times the CPU per request of
 * node:http (measured 450–600 µs against 130–150 µs on loopback). Same contract as fetch for what
 * the clients use: resolves once the status and headers arrive, rejects with a TypeError for a request
 * that cannot be built (an invalid header value) and with a TimeoutError when out of time.
 * We ask for no compression; an answer compressed anyway is decoded.
 */
export const httpRequest: HttpRequest = (url, init) =>
  new Promise<HttpAnswer>((resolve, reject) => {
    const target = typeof url === 'string' ? new URL(url) : url;
    const agent = target.protocol === 'https:' ? agents['https:'] : target.protocol === 'http:' ? agents['http:'] : undefined;
    if (!agent) throw new TypeError(`cannot send a request to ${target.protocol} URLs`);
    let failBody: ((error: unknown) => void) | undefined;
    // Node sends a body's length by itself only for methods that usually have one: a DELETE's body
    // (Chat2Desk's tag removal, docs/protocols.md C5) would go with neither length nor chunking, unread.
    const headers = init.body === undefined ? init.headers : { ...init.headers, 'content-length': String(Buffer.byteLength(init.body)) };
    const request = (agent === agents['https:'] ? https : http).request(target, { method: init.method, headers, agent }, (response) => {
      const ended = new Promise<string>((resolveBody, rejectBody) => {
        failBody = rejectBody;
        const body = decoded(response);
        body.setEncoding('utf8');
        let text = '';
        body.on('data', (chunk: string) => {
          text += chunk;
        });
        body.on('end', () => {
          clearTimeout(timer);
          resolveBody(text);
        });
        body.on('error', rejectBody);
        // The connection closed before the answer ended (fetch calls this "terminated").
        response.on('close', () => {
          if (response.complete) return;
          clearTimeout(timer);
          rejectBody(new Error('the connection closed before the answer ended'));
        });
      });
      // Read only through text(): a rejection nobody asked for is not an unhandled one.
      ended.catch(() => undefined);
      const status = response.statusCode ?? 0;
      resolve({
        status,
        ok: status >= 200 && status < 300,
        headers: {
          get(name) {
            const value = response.headers[name.toLowerCase()];
            return value === undefined ? null : Array.isArray(value) ? value.join(', ') : value;
          },
        },
        text: () => ended,
      });
    });
    // Set once the request exists (building it may throw: nothing to end then).
    const timer =
      init.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            const timedOut = new DOMException('The operation was aborted due to timeout', 'TimeoutError');
            request.destroy();
            reject(timedOut);
            failBody?.(timedOut);
          }, init.timeoutMs).unref();
    request.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
      failBody?.(error);
    });
    request.end(init.body);
  });

function decoded(response: http.IncomingMessage): Readable {
  switch (response.headers['content-encoding']?.trim().toLowerCase()) {
    case 'gzip':
    case 'x-gzip':
      return response.pipe(createGunzip());
    case 'deflate':
      return response.pipe(createInflate());
    case 'br':
      return response.pipe(createBrotliDecompress());
    default:
      return response;
  }
}
