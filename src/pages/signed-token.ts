import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../clock.js';

/**
 * `<prefix><claims as base64url JSON>.<HMAC-SHA256>` under a key derived from APP_SECRET for one
 * kind of token (HKDF `info`), so one kind can never pass for another. The page token
 * (src/pages/page-token.ts) and the CRM tab token (src/dialogs/tab-token.ts) are made this way;
 * each names its own wire fields, and `e` is always the expiry (ms since the epoch).
 */
export class SignedTokens<Wire extends { e: number }> {
  readonly #key: Buffer;

  constructor(
    appSecret: string,
    info: string,
    private readonly prefix: string,
    private readonly clock: Clock,
  ) {
    this.#key = Buffer.from(hkdfSync('sha256', appSecret, 'chat2desk-bitrix24', info, 32));
  }

  seal(wire: Wire): string {
    const body = Buffer.from(JSON.stringify(wire)).toString('base64url');
    return `${this.prefix}${body}.${this.#sign(body)}`;
  }

  /** The claims of a token we signed that has not expired (or expired less than `graceMs` ago); undefined for anything else. */
  open(token: string, graceMs = 0): Wire | undefined {
    if (!token.startsWith(this.prefix)) return undefined;
    const [body, signature, ...rest] = token.slice(this.prefix.length).split('.');
    if (!body || !signature || rest.length > 0) return undefined;
    const expected = Buffer.from(this.#sign(body));
    const presented = Buffer.from(signature);
    if (expected.length !== presented.length || !timingSafeEqual(expected, presented)) return undefined;
    let wire: Wire;
    try {
      wire = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as Wire;
    } catch {
      return undefined;
    }
    if (typeof wire?.e !== 'number' || this.clock.now() >= wire.e + graceMs) return undefined;
    return wire;
  }

  #sign(body: string): string {
    return createHmac('sha256', this.#key).update(body).digest('base64url');
  }
}
