import { type RateLimiterAbstract, RateLimiterRes } from 'rate-limiter-flexible';
import { type Limiters, memoryLimiters } from '../db/rate-limiters.js';
import type { Portal, PortalStore } from '../db/portals.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { askPortalAdmin } from './admin.js';
import { OAuthError } from './errors.js';
import type { Bitrix24Rest } from './rest-client.js';
import type { OAuthServer } from './oauth.js';
import type { AppRegistration, RegistrationResult } from './registration.js';

/** What an install request claims, in either of the forms Bitrix24 uses. */
export interface InstallClaim {
  memberId: string;
  domain: string;
  accessToken: string;
  refreshToken: string;
  expiresIn: number;
  applicationToken: string;
  userId: number | null;
}

export class InstallRefused extends Error {
  override name = 'InstallRefused';
  constructor(
    message: string,
    readonly httpStatus: 400 | 403 | 429 | 502 | 503,
    /** With 429: when the caller may try again (the Retry-After header). */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

export interface InstallDeps {
  oauth: OAuthServer;
  rest: Bitrix24Rest;
  portals: PortalStore;
  registration: AppRegistration;
  log: Logger;
  clock: Clock;
  /** Install requests that may reach the authorization server per minute, from one address and in all. */
  attemptsPerMinute: { perAddress: number; overall: number };
  /** Where the caps are counted: this process's memory by default, the database with several processes (src/db/rate-limiters.ts). */
  limiters?: Limiters;
}

/** Where an install request came from and in which form. */
export interface InstallSource {
  /** The TCP peer's address (never a forwarding header, which the sender writes). */
  address: string;
  /** The install page's form rather than the server-side callback. */
  opening?: boolean;
}

/**
 * An install is trusted only after the authorization server confirms the token belongs to our
 * client id and to the claimed portal (docs/protocols.md B1 app.info); a forged one changes nothing.
 */
export class InstallService {
  // Every install request that looks complete costs an app.info call to the authorization server
  // before we know anything about it, so these bound how hard anyone can make us ask.
  readonly #attemptsPerAddress: RateLimiterAbstract;
  readonly #attempts: RateLimiterAbstract;

  constructor(private readonly deps: InstallDeps) {
    const limiter = deps.limiters ?? memoryLimiters();
    this.#attemptsPerAddress = limiter({ keyPrefix: 'install-address', points: deps.attemptsPerMinute.perAddress, duration: 60 });
    this.#attempts = limiter({ keyPrefix: 'install', points: deps.attemptsPerMinute.overall, duration: 60 });
  }

  async #admit(address: string): Promise<void> {
    for (const [limiter, key, who] of [
      [this.#attemptsPerAddress, address, 'from your address'],
      [this.#attempts, 'all', 'on this server'],
    ] as const) {
      try {
        await limiter.consume(key);
      } catch (refusal) {
        if (!(refusal instanceof RateLimiterRes)) throw refusal;
        // Logged once per window, not once per refused request.
        if (refusal.consumedPoints === limiter.points + 1) this.deps.log.warn({ address, limit: who }, 'install attempts over the limit; refusing until the window ends');
        const retryAfter = Math.max(1, Math.ceil(refusal.msBeforeNext / 1000));
        throw new InstallRefused(`Too many install attempts ${who}; retry in ${retryAfter} s`, 429, retryAfter);
      }
    }
  }

  async #isAdmin(memberId: string, clientEndpoint: string, accessToken: string): Promise<boolean> {
    try {
      // Only after app.info proved the token ours and this portal's: outside the callers' share.
      return (await askPortalAdmin(this.deps.rest, { memberId, clientEndpoint, accessToken }, { provenToken: true })) === 'admin';
    } catch (error) {
      throw new InstallRefused(`Bitrix24 could not be asked who is installing: ${error instanceof Error ? error.message : String(error)}`, 502);
    }
  }

  /**
   * `opening` is the install page's form: Bitrix24 also posts it whenever somebody opens the app.
   * For an app already installed on a known portal that is only an opening, and it must not replace
   * the installer's tokens with those of whoever opened it.
   */
  async install(claim: InstallClaim, { address, opening = false }: InstallSource): Promise<{ portal: Portal; registration: RegistrationResult | undefined }> {
    const { oauth, portals, registration, log } = this.deps;
    if (!oauth.configured) throw new InstallRefused('This server has no B24_CLIENT_ID / B24_CLIENT_SECRET configured; installs are refused until it does', 503);
    if (!claim.memberId || !claim.domain || !claim.accessToken || !claim.refreshToken || !claim.applicationToken) {
      throw new InstallRefused('The install request lacks member_id, domain, tokens or application_token', 400);
    }
    await this.#admit(address);
    let verified: Awaited<ReturnType<OAuthServer['appInfo']>>;
    try {
      verified = await oauth.appInfo(claim.accessToken);
    } catch (error) {
      if (error instanceof OAuthError && (error.code === 'unreachable' || error.httpStatus >= 500)) {
        throw new InstallRefused(`The Bitrix24 authorization server could not confirm the install: ${error.message}`, 502);
      }
      throw new InstallRefused('The Bitrix24 authorization server did not recognise the access token', 403);
    }
    const mismatch =
      verified.clientId !== oauth.appClientId
        ? 'the token belongs to another application'
        : verified.memberId !== claim.memberId
          ? 'member_id does not match the token'
          : verified.domain.toLowerCase() !== claim.domain.toLowerCase()
            ? 'domain does not match the token'
            : claim.userId !== null && verified.userId !== null && claim.userId !== verified.userId
              ? 'user_id does not match the token'
              : undefined;
    if (mismatch) {
      log.warn({ memberId: claim.memberId, domain: claim.domain, mismatch }, 'install refused');
      throw new InstallRefused(`Install refused: ${mismatch}`, 403);
    }
    if (opening && verified.installed) {
      const known = await portals.authenticate(verified.memberId, claim.applicationToken);
      if (known) return { portal: known, registration: undefined };
    }
    // app.info proves the token is ours and the portal's, not that its user may install: only an
    // admin may (re)install, or any employee could replace the stored application token and tokens.
    if (!(await this.#isAdmin(verified.memberId, verified.clientEndpoint, claim.accessToken))) {
      log.warn({ memberId: claim.memberId, userId: verified.userId }, 'install refused: not an administrator');
      throw new InstallRefused('Install refused: only a Bitrix24 administrator can install the app', 403);
    }
    const portal = await portals.saveInstall({
      memberId: verified.memberId,
      domain: verified.domain,
      // REST calls go where the authorization server says the portal is, never where the request says.
      clientEndpoint: verified.clientEndpoint,
      applicationToken: claim.applicationToken,
      accessToken: claim.accessToken,
      refreshToken: claim.refreshToken,
      expiresAt: Math.floor(this.deps.clock.now() / 1000) + (claim.expiresIn || 3600),
      installerUserId: verified.userId ?? claim.userId,
    });
    log.info({ memberId: portal.memberId, domain: portal.domain }, 'portal installed');
    return { portal, registration: await registration.register(portal) };
  }
}
