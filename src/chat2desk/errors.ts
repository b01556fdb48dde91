export type Chat2DeskErrorKind =
  | 'auth' // the API token is wrong or revoked
  | 'rate_limit' // "Number of API requests exceeded" or HTTP 429
  | 'quota' // "API calls exceeded API limit per month": does not clear by retrying soon
  | 'not_found'
  | 'rejected' // validation and other refusals, with Chat2Desk's own words
  | 'unavailable' // network failure, 5xx, an answer that is not JSON
  | 'unsendable'; // the request could not be built (a header value HTTP forbids): Chat2Desk was never asked

/** A failed Chat2Desk call, carrying Chat2Desk's own message (docs/protocols.md C1, C10). */
export class Chat2DeskError extends Error {
  override name = 'Chat2DeskError';
  constructor(
    readonly kind: Chat2DeskErrorKind,
    readonly apiMessage: string,
    readonly httpStatus: number,
    readonly errors: unknown = undefined,
    readonly request = '',
  ) {
    super(`Chat2Desk ${request}: ${apiMessage}`.replace(' : ', ': '));
  }

  get transient(): boolean {
    return this.kind === 'rate_limit' || this.kind === 'unavailable';
  }

  /** Every human-readable text in the error, for matching known refusals. */
  get texts(): string[] {
    return [this.apiMessage, ...flattenTexts(this.errors)];
  }
}

function flattenTexts(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) return value.flatMap(flattenTexts);
  if (value && typeof value === 'object') return Object.values(value).flatMap(flattenTexts);
  return [];
}

/** Classifies an error answer. Chat2Desk's HTTP codes are undocumented, so the text decides first. */
export function classifyChat2DeskError(httpStatus: number, message: string, errors: unknown): Chat2DeskErrorKind {
  const all = [message, ...flattenTexts(errors)].join(' ').toLowerCase();
  if (all.includes('limit per month')) return 'quota';
  if (all.includes('requests exceeded') || httpStatus === 429) return 'rate_limit';
  if (all.includes('token is not correct') || all.includes('need to auth') || all.includes('specify your token') || httpStatus === 401 || httpStatus === 403) return 'auth';
  if (httpStatus >= 500) return 'unavailable';
  if (all.includes('not_found') || all.includes('not found') || httpStatus === 404) return 'not_found';
  return 'rejected';
}

/**
 * A Chat2Desk call whose fetch threw. undici reports a network failure as a TypeError "fetch
 * failed" (or "terminated" while reading the body) and a timeout as a TimeoutError: Chat2Desk is
 * unavailable and may be back soon. Any other TypeError means the request could not be built,
 * e.g. a token with a control character is not a valid header value: Chat2Desk was never asked,
 * asking again cannot help, and the message is ours, since fetch's would quote the token.
 */
export function fetchFailure(error: unknown, request: string): Chat2DeskError {
  if (error instanceof TypeError && error.message !== 'fetch failed' && error.message !== 'terminated') {
    return new Chat2DeskError('unsendable', 'the request could not be built: a header value, such as the API token, has characters HTTP does not allow', 0, undefined, request);
  }
  return new Chat2DeskError('unavailable', error instanceof Error ? error.message : String(error), 0, undefined, request);
}
