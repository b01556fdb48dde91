import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';

/** What our protocol clients send: the part of fetch's RequestInit they use. */
export interface HttpInit {
  method: string;
  headers: Record<string, string>;
  body?: string;
  /** Ends the exchange (connection and answer) with the signal's reason, as fetch does. */
  signal?: AbortSignal;
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

/**
 * One HTTP exchange. The global fetch fits this type (tests inject a wrapped one to watch the
 * traffic); `httpRequest` is what the server uses.
 */
export type HttpRequest = (url: string | URL, init: HttpInit) => Promise<HttpAnswer>;

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
 * that cannot be built (an invalid header value) and with the signal's reason when it aborts.
 * We ask for no compression; an answer compressed anyway is decoded.
 */
export const httpRequest: HttpRequest = (url, init) =>
  new Promise<HttpAnswer>((resolve, reject) => {
    const target = typeof url === 'string' ? new URL(url) : url;
    const agent = target.protocol === 'https:' ? agents['https:'] : target.protocol === 'http:' ? agents['http:'] : undefined;
    if (!agent) throw new TypeError(`cannot send a request to ${target.protocol} URLs`);
    const { signal } = init;
    signal?.throwIfAborted();
    let failBody: ((error: unknown) => void) | undefined;
    const onAbort = () => {
      const reason: unknown = signal?.reason;
      request.destroy();
      reject(reason);
      failBody?.(reason);
    };
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
          signal?.removeEventListener('abort', onAbort);
          resolveBody(text);
        });
        body.on('error', rejectBody);
        // The connection closed before the answer ended (fetch calls this "terminated").
        response.on('close', () => {
          if (response.complete) return;
          signal?.removeEventListener('abort', onAbort);
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
    request.on('error', (error) => {
      signal?.removeEventListener('abort', onAbort);
      reject(error);
      failBody?.(error);
    });
    signal?.addEventListener('abort', onAbort, { once: true });
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
