import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../clock.js';

/** How long a page token lives; the page renews it through its parent frame before then. */
export const PAGE_TOKEN_TTL_MS = 15 * 60_000;

/** Page tokens are told apart from a Bitrix24 access token (70 hex characters) by this prefix. */
export const PAGE_TOKEN_PREFIX = 'c2dp.';

/** Who opened the app page, as the portal itself answered (`profile`) when the token was issued. */
export interface PageClaims {
  memberId: string;
  userId: number;
  /** The portal's install generation (its installedAt): a reinstall or an uninstall voids every token. */
  generation: number;
  admin: boolean;
  /** When the portal last said who the user is: writes need this to be recent (PageAuth.ADMIN_FRESH_MS). */
  checkedAt: number;
  expiresAt: number;
}

interface WireClaims {
  m: string;
  u: number;
  g: number;
  a: 0 | 1;
  c: number;
  e: number;
}

/**
 * Signed page tokens: `c2dp.<claims>.<HMAC-SHA256>`, keyed by APP_SECRET (a key of its own, derived
 * like the seal key). No cookie: Bitrix24 frames the page from another site, where browsers drop
 * or partition cookies (docs/protocols.md B13); the page keeps the token in memory and sends it as a bearer.
 */
export class PageTokens {
  readonly #key: Buffer;

  constructor(
    appSecret: string,
    private readonly clock: Clock,
  ) {
    this.#key = Buffer.from(hkdfSync('sha256', appSecret, 'chat2desk-bitrix24', 'page-token-v1', 32));
  }

  issue(claims: Omit<PageClaims, 'expiresAt'>): { token: string; claims: PageClaims } {
    const full: PageClaims = { ...claims, expiresAt: this.clock.now() + PAGE_TOKEN_TTL_MS };
    const wire: WireClaims = { m: full.memberId, u: full.userId, g: full.generation, a: full.admin ? 1 : 0, c: full.checkedAt, e: full.expiresAt };
    const body = Buffer.from(JSON.stringify(wire)).toString('base64url');
    return { token: `${PAGE_TOKEN_PREFIX}${body}.${this.#sign(body)}`, claims: full };
  }

  /** The claims of a token we signed that has not expired (or expired less than `graceMs` ago); undefined for anything else. */
  verify(token: string, { graceMs = 0 }: { graceMs?: number } = {}): PageClaims | undefined {
    if (!token.startsWith(PAGE_TOKEN_PREFIX)) return undefined;
    const [body, signature, ...rest] = token.slice(PAGE_TOKEN_PREFIX.length).split('.');
    if (!body || !signature || rest.length > 0) return undefined;
    const expected = Buffer.from(this.#sign(body));
    const presented = Buffer.from(signature);
    if (expected.length !== presented.length || !timingSafeEqual(expected, presented)) return undefined;
    let wire: WireClaims;
    try {
      wire = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as WireClaims;
    } catch {
      return undefined;
    }
    if (typeof wire.e !== 'number' || this.clock.now() >= wire.e + graceMs) return undefined;
    return { memberId: wire.m, userId: wire.u, generation: wire.g, admin: wire.a === 1, checkedAt: wire.c, expiresAt: wire.e };
  }

  #sign(body: string): string {
    return createHmac('sha256', this.#key).update(body).digest('base64url');
  }
}
