import type { Clock } from '../clock.js';
import { SignedTokens } from '../pages/signed-token.js';

/** How long a tab token lives; the tab renews it through its parent frame (POST /api/tab/renew) before then. */
export const TAB_TOKEN_TTL_MS = 15 * 60_000;

/** Tab tokens are told apart from page tokens (`c2dp.`) and Bitrix24 access tokens by this prefix. */
export const TAB_TOKEN_PREFIX = 'c2dt.';

/** The CRM record a tab was opened for, and the phones read from it with the user's own rights (international digits). */
export interface TabRecord {
  kind: 'record';
  entityTypeId: number;
  entityId: number;
  phones: string[];
}

/** Who opened the CRM tab and for which record, as the portal itself answered when the token was issued. */
export interface TabClaims {
  memberId: string;
  userId: number;
  /** The portal's install generation (its installedAt): a reinstall or an uninstall voids every token. */
  generation: number;
  admin: boolean;
  /** When the portal last said who the user is and what the record holds. */
  checkedAt: number;
  expiresAt: number;
  scope: TabRecord;
}

interface WireClaims {
  m: string;
  u: number;
  g: number;
  a: 0 | 1;
  c: number;
  e: number;
  t: number;
  i: number;
  p: string[];
}

/**
 * Signed tab tokens: `c2dt.<claims>.<HMAC-SHA256>`, keyed by APP_SECRET under a key of their own
 * (HKDF info `tab-token-v1`, src/pages/signed-token.ts), so a page token can never pass for a tab token or the other way round.
 * Like page tokens (src/pages/page-token.ts) they live in the tab's memory and travel as a bearer;
 * unlike them they are bound to one record and its phones: the tab can only ever see those phones' dialogs.
 */
export class TabTokens {
  readonly #tokens: SignedTokens<WireClaims>;

  constructor(
    appSecret: string,
    private readonly clock: Clock,
  ) {
    this.#tokens = new SignedTokens<WireClaims>(appSecret, 'tab-token-v1', TAB_TOKEN_PREFIX, clock);
  }

  issue(claims: Omit<TabClaims, 'expiresAt'>): { token: string; claims: TabClaims } {
    const full: TabClaims = { ...claims, expiresAt: this.clock.now() + TAB_TOKEN_TTL_MS };
    const wire: WireClaims = {
      m: full.memberId,
      u: full.userId,
      g: full.generation,
      a: full.admin ? 1 : 0,
      c: full.checkedAt,
      e: full.expiresAt,
      t: full.scope.entityTypeId,
      i: full.scope.entityId,
      p: full.scope.phones,
    };
    return { token: this.#tokens.seal(wire), claims: full };
  }

  /** The claims of a token we signed that has not expired (or expired less than `graceMs` ago); undefined for anything else. */
  verify(token: string, { graceMs = 0 }: { graceMs?: number } = {}): TabClaims | undefined {
    const wire = this.#tokens.open(token, graceMs);
    if (!wire) return undefined;
    return {
      memberId: wire.m,
      userId: wire.u,
      generation: wire.g,
      admin: wire.a === 1,
      checkedAt: wire.c,
      expiresAt: wire.e,
      scope: { kind: 'record', entityTypeId: wire.t, entityId: wire.i, phones: wire.p },
    };
  }
}
