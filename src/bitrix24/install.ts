import type { Portal, PortalStore } from '../db/portals.js';
import type { Logger } from '../log.js';
import { Bitrix24Error, OAuthError } from './errors.js';
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
    readonly httpStatus: 400 | 403 | 502 | 503,
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
}

/**
 * An install is trusted only after the authorization server confirms the token belongs to our
 * client id and to the claimed portal (protocols/bitrix24.md §1 app.info); a forged one changes nothing.
 */
export class InstallService {
  constructor(private readonly deps: InstallDeps) {}

  async #isAdmin(memberId: string, clientEndpoint: string, accessToken: string): Promise<boolean> {
    try {
      const profile = await this.deps.rest.callAs<{ ADMIN?: unknown }>(memberId, clientEndpoint, accessToken, 'profile');
      return profile.ADMIN === true || profile.ADMIN === 'Y' || profile.ADMIN === '1';
    } catch (error) {
      if (error instanceof Bitrix24Error && error.httpStatus < 500 && !error.refusedForLoad) return false;
      throw new InstallRefused(`Bitrix24 could not be asked who is installing: ${error instanceof Error ? error.message : String(error)}`, 502);
    }
  }

  /**
   * `opening` is the install page's form: Bitrix24 also posts it whenever somebody opens the app.
   * For an app already installed on a known portal that is only an opening, and it must not replace
   * the installer's tokens with those of whoever opened it.
   */
  async install(claim: InstallClaim, opening = false): Promise<{ portal: Portal; registration: RegistrationResult | undefined }> {
    const { oauth, portals, registration, log } = this.deps;
    if (!oauth.configured) throw new InstallRefused('This server has no B24_CLIENT_ID / B24_CLIENT_SECRET configured; installs are refused until it does', 503);
    if (!claim.memberId || !claim.domain || !claim.accessToken || !claim.refreshToken || !claim.applicationToken) {
      throw new InstallRefused('The install request lacks member_id, domain, tokens or application_token', 400);
    }
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
      const known = portals.authenticate(verified.memberId, claim.applicationToken);
      if (known) return { portal: known, registration: undefined };
    }
    // app.info proves the token is ours and the portal's, not that its user may install: only an
    // admin may (re)install, or any employee could replace the stored application token and tokens.
    if (!(await this.#isAdmin(verified.memberId, verified.clientEndpoint, claim.accessToken))) {
      log.warn({ memberId: claim.memberId, userId: verified.userId }, 'install refused: not an administrator');
      throw new InstallRefused('Install refused: only a Bitrix24 administrator can install the app', 403);
    }
    const portal = portals.saveInstall({
      memberId: verified.memberId,
      domain: verified.domain,
      // REST calls go where the authorization server says the portal is, never where the request says.
      clientEndpoint: verified.clientEndpoint,
      applicationToken: claim.applicationToken,
      accessToken: claim.accessToken,
      refreshToken: claim.refreshToken,
      expiresAt: Math.floor(Date.now() / 1000) + (claim.expiresIn || 3600),
      installerUserId: verified.userId ?? claim.userId,
    });
    log.info({ memberId: portal.memberId, domain: portal.domain }, 'portal installed');
    return { portal, registration: await registration.register(portal) };
  }
}
