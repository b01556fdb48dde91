import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import { type RateLimiterAbstract, RateLimiterRes } from 'rate-limiter-flexible';
import { type Limiters, memoryLimiters } from '../db/rate-limiters.js';
import type { Clock } from '../clock.js';
import type { Portal, PortalStore } from '../db/portals.js';
import { bitrix24Admin, type AdminVariables } from '../routes/bitrix24-admin.js';
import { SettingsRequestError, type SettingsService } from '../settings-service.js';
import { PAGE_TOKEN_PREFIX, type PageClaims, type PageTokens } from './page-token.js';

/** Settings writes need the portal to have said "admin" this recently (the issue: cached at most 60 s). */
export const ADMIN_FRESH_MS = 60_000;
/** An expired page token still names its user for a renewal this long after it expired (a page left open for hours renews, not reloads). */
const RENEWABLE_FOR_MS = 12 * 3600_000;
/**
 * Renewals one user may ask for per minute. A page renews once per token (15 min) or after a
 * "renew" answer; each renewal asks the portal about a new AUTH_ID within the callers' small share
 * of its budget, which one employee sending random AUTH_IDs must not use up for the admins.
 */
const RENEWALS_PER_USER_PER_MINUTE = 6;

export class PageAuthError extends Error {
  override name = 'PageAuthError';
  constructor(
    message: string,
    readonly httpStatus: 400 | 401 | 403 | 429 | 502,
    /** The page should renew its token through the parent frame (a fresh AUTH_ID) and try again. */
    readonly renew = false,
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

export interface PageSession {
  portal: Portal;
  claims: PageClaims;
  token: string;
}

export interface PageAuthDeps {
  portals: PortalStore;
  settings: SettingsService;
  tokens: PageTokens;
  clock: Clock;
  /** Where the renewal cap is counted (src/db/rate-limiters.ts); this process's memory by default. */
  limiters?: Limiters;
}

/**
 * Who is on the app page. Bitrix24's POST carries only one secret of ours, the application token;
 * everything else in it is written by the browser (docs/protocols.md B13). So the opening is checked
 * against the stored application token, and the user is whoever the portal, asked at its stored
 * REST endpoint with the posted AUTH_ID, says they are. The user's Bitrix24 token is not kept.
 */
export class PageAuth {
  readonly #renewals: RateLimiterAbstract;

  constructor(private readonly deps: PageAuthDeps) {
    this.#renewals = (deps.limiters ?? memoryLimiters())({ keyPrefix: 'page-renewals', points: RENEWALS_PER_USER_PER_MINUTE, duration: 60 });
  }

  async open(opening: { memberId: string; applicationToken: string; authId: string }): Promise<PageSession> {
    if (!opening.memberId || !opening.applicationToken || !opening.authId) throw new PageAuthError('The page request lacks member_id, APPLICATION_TOKEN or AUTH_ID', 400);
    const portal = await this.deps.portals.authenticate(opening.memberId, opening.applicationToken);
    if (!portal) throw new PageAuthError('The app is not installed on this portal, or the application token does not match', 401);
    return this.#issue(portal, opening.authId);
  }

  /** A fresh AUTH_ID from the parent frame (refreshAuth) for the user of an earlier token of ours. */
  async renew(previousToken: string, authId: string): Promise<PageSession> {
    if (!authId) throw new PageAuthError('Send AUTH_ID: the access token the parent frame gave the page', 400);
    const previous = this.deps.tokens.verify(previousToken, { graceMs: RENEWABLE_FOR_MS });
    if (!previous) throw new PageAuthError('The page token is not ours or too old; open the app again', 401);
    const portal = await this.#current(previous);
    try {
      await this.#renewals.consume(`${previous.memberId} ${previous.userId}`);
    } catch (refusal) {
      if (!(refusal instanceof RateLimiterRes)) throw refusal;
      const retryAfterSeconds = Math.max(1, Math.ceil(refusal.msBeforeNext / 1000));
      throw new PageAuthError(`Too many renewals of this page; open the app again in ${retryAfterSeconds} s`, 429, false, retryAfterSeconds);
    }
    const session = await this.#issue(portal, authId);
    // The AUTH_ID must be the same user's: a token of ours never changes hands.
    if (session.claims.userId !== previous.userId) throw new PageAuthError('AUTH_ID belongs to another user', 401);
    return session;
  }

  /** The session of a page token presented on our API; `write` needs a recent admin verdict. */
  async authorize(token: string, need: { admin: boolean; write: boolean }): Promise<PageSession> {
    const claims = this.deps.tokens.verify(token);
    if (!claims) throw new PageAuthError('The page token expired or is not ours', 401, true);
    const portal = await this.#current(claims);
    if (need.admin && !claims.admin) throw new PageAuthError('Only a Bitrix24 administrator may see or change the app settings', 403);
    if (need.write && this.deps.clock.now() - claims.checkedAt > ADMIN_FRESH_MS) {
      throw new PageAuthError('Bitrix24 must confirm again that you are an administrator', 401, true);
    }
    return { portal, claims, token };
  }

  /** The portal of a token, if the install the token was issued under is still the current one. */
  async #current(claims: PageClaims): Promise<Portal> {
    const portal = await this.deps.portals.get(claims.memberId);
    if (!portal || portal.status === 'uninstalled' || portal.installedAt !== claims.generation) {
      throw new PageAuthError('The app was uninstalled or installed again since this page opened; open it again', 401);
    }
    return portal;
  }

  async #issue(portal: Portal, authId: string): Promise<PageSession> {
    let who: { userId: number; admin: boolean; askedAt: number };
    try {
      who = await this.deps.settings.identify(portal, authId);
    } catch (error) {
      if (error instanceof SettingsRequestError) {
        const status = error.httpStatus === 429 || error.httpStatus === 502 ? error.httpStatus : 401;
        throw new PageAuthError(error.message, status, false, error.retryAfterSeconds);
      }
      throw error;
    }
    const { token, claims } = this.deps.tokens.issue({ memberId: portal.memberId, userId: who.userId, generation: portal.installedAt, admin: who.admin, checkedAt: who.askedAt });
    return { portal, claims, token };
  }
}

export function pageAuthRefusal(c: Context, error: PageAuthError) {
  const headers: Record<string, string> = error.retryAfterSeconds ? { 'retry-after': String(error.retryAfterSeconds) } : {};
  const body = error.renew ? { error: error.message, renew: true } : { error: error.message };
  return c.json(body, error.httpStatus, headers);
}

function bearerOf(c: Context): string | undefined {
  return /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '')?.[1];
}

/**
 * A portal admin on our JSON APIs: an app page token (admin; writes need the portal's word from the
 * last minute), or, for scripts, the admin's own Bitrix24 access token with X-Bitrix24-Member-Id
 * (src/routes/bitrix24-admin.ts). Sets `portal`.
 */
export function pageAdmin(deps: { pageAuth: PageAuth; settings: Pick<SettingsService, 'authorizeAdmin'> }) {
  const bitrix24Bearer = bitrix24Admin(deps);
  return createMiddleware<AdminVariables>(async (c, next) => {
    const bearer = bearerOf(c);
    if (!bearer?.startsWith(PAGE_TOKEN_PREFIX)) return bitrix24Bearer(c, next);
    const write = c.req.method !== 'GET' && c.req.method !== 'HEAD';
    try {
      c.set('portal', (await deps.pageAuth.authorize(bearer, { admin: true, write })).portal);
    } catch (error) {
      if (error instanceof PageAuthError) return pageAuthRefusal(c, error);
      throw error;
    }
    await next();
  });
}

/** Any user of the portal with an app page token (the connection status is for everyone). Sets `session`. */
export function pageUser(deps: { pageAuth: PageAuth }) {
  return createMiddleware<{ Variables: { session: PageSession } }>(async (c, next) => {
    const bearer = bearerOf(c);
    if (!bearer) return c.json({ error: 'Send Authorization: Bearer <app page token>' }, 401);
    try {
      c.set('session', await deps.pageAuth.authorize(bearer, { admin: false, write: false }));
    } catch (error) {
      if (error instanceof PageAuthError) return pageAuthRefusal(c, error);
      throw error;
    }
    await next();
  });
}
