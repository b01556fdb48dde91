import { Agent, errors, request } from 'undici';

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

/**
 * No answer of Chat2Desk or Bitrix24 we read comes near this (a REST page is a few hundred KB): a
 * runaway or hostile answer is cut off here instead of filling the heap.
 */
export const MAX_ANSWER_BYTES = 20 * 1024 * 1024;

// Connections are kept for the next request; an idle one is closed after 5 s, before servers
// commonly close theirs.
const agent = new Agent({ keepAliveTimeout: 5_000, maxResponseSize: MAX_ANSWER_BYTES });

/**
 * An HTTP exchange through undici's `request`, for the protocol clients' hot path: in a burst,
 * fetch (the same undici under web streams, Request and Headers objects) cost about three times the
 * CPU per request (measured 450–600 µs against 130–150 µs on loopback for a plain client). Same
 * contract as fetch for what the clients use: resolves once the status and headers arrive, rejects
 * with a TypeError for a request that cannot be built (an invalid header value; the message never
 * quotes the value, which may be a token) and with a TimeoutError when out of time. We ask for no
 * compression (no Accept-Encoding), so answers come as sent and the cap counts what we keep.
 */
export const httpRequest: HttpRequest = async (url, init) => {
  const abort = init.timeoutMs === undefined ? undefined : new AbortController();
  const timer = abort && setTimeout(() => abort.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')), init.timeoutMs).unref();
  try {
    const answer = await request(url, { method: init.method as 'GET', headers: init.headers, body: init.body, dispatcher: agent, signal: abort?.signal });
    const ended = answer.body.text().finally(() => clearTimeout(timer));
    // Read only through text(): a rejection nobody asked for is not an unhandled one.
    ended.catch(() => undefined);
    return {
      status: answer.statusCode,
      ok: answer.statusCode >= 200 && answer.statusCode < 300,
      headers: {
        get(name) {
          const value = answer.headers[name.toLowerCase()];
          return value === undefined ? null : Array.isArray(value) ? value.join(', ') : value;
        },
      },
      text: () => ended.catch((error: unknown) => Promise.reject(abort?.signal.aborted ? abort.signal.reason : error)),
    };
  } catch (error) {
    clearTimeout(timer);
    if (abort?.signal.aborted) throw abort.signal.reason;
    if (error instanceof errors.InvalidArgumentError) throw new TypeError('the request has a header value HTTP does not allow');
    throw error;
  }
};

/** System and undici error codes that only arise while connecting: no byte of the request was sent. */
const CONNECT_PHASE = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
  // TLS handshake refused (certificate, protocol): the request is only written once the session is up.
  'EPROTO',
  'CERT_HAS_EXPIRED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
]);

/**
 * Whether a failed exchange never sent its request: the connection, the address lookup or the TLS
 * handshake failed. fetch wraps the cause in a TypeError ('fetch failed'), so the causes are walked.
 * A timeout, a reset or a closed socket after connecting is not this: the request may have arrived.
 */
export function failedBeforeSending(error: unknown): boolean {
  for (let cause = error, depth = 0; cause && typeof cause === 'object' && depth < 5; cause = (cause as { cause?: unknown }).cause, depth++) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === 'string' && (CONNECT_PHASE.has(code) || code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_'))) return true;
  }
  return false;
}
