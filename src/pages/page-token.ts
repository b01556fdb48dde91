import type { Clock } from '../clock.js';
import { SignedTokens } from './signed-token.js';

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
 * like the seal key; src/pages/signed-token.ts). No cookie: Bitrix24 frames the page from another site, where browsers drop
 * or partition cookies (docs/protocols.md B13); the page keeps the token in memory and sends it as a bearer.
 */
export class PageTokens {
  readonly #tokens: SignedTokens<WireClaims>;

  constructor(
    appSecret: string,
    private readonly clock: Clock,
  ) {
    this.#tokens = new SignedTokens<WireClaims>(appSecret, 'page-token-v1', PAGE_TOKEN_PREFIX, clock);
  }

  issue(claims: Omit<PageClaims, 'expiresAt'>): { token: string; claims: PageClaims } {
    const full: PageClaims = { ...claims, expiresAt: this.clock.now() + PAGE_TOKEN_TTL_MS };
    const wire: WireClaims = { m: full.memberId, u: full.userId, g: full.generation, a: full.admin ? 1 : 0, c: full.checkedAt, e: full.expiresAt };
    return { token: this.#tokens.seal(wire), claims: full };
  }

  /** The claims of a token we signed that has not expired (or expired less than `graceMs` ago); undefined for anything else. */
  verify(token: string, { graceMs = 0 }: { graceMs?: number } = {}): PageClaims | undefined {
    const wire = this.#tokens.open(token, graceMs);
    if (!wire) return undefined;
    return { memberId: wire.m, userId: wire.u, generation: wire.g, admin: wire.a === 1, checkedAt: wire.c, expiresAt: wire.e };
  }
}
