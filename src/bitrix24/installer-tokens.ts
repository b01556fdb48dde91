import type { Clock } from '../clock.js';
import type { Portal, PortalStore } from '../db/portals.js';
import type { Logger } from '../log.js';
import type { CallerTokens } from './form-body.js';
import type { OAuthServer } from './oauth.js';

export interface InstallerTokenDeps {
  oauth: OAuthServer;
  portals: PortalStore;
  log: Logger;
  clock: Clock;
}

/**
 * Tokens that arrive with a call (a robot call, ONAPPUPDATE) replace the stored installer tokens
 * only once the authorization server says they belong to this application, this portal and its
 * installer (app.info, docs/protocols.md B1, as for an install). The application token that
 * lets the call in is on every page of the app, so without that proof any employee could plant
 * their own tokens and have every later REST call made as them.
 */
export class InstallerTokens {
  readonly #recovering = new Set<string>();

  constructor(private readonly deps: InstallerTokenDeps) {}

  /**
   * A portal whose refresh token was refused gets working tokens back from its installer's next
   * robot call (robot calls carry the run-as user's pair, docs/protocols.md B7). One proof at a time per portal.
   */
  async recover(portal: Portal, tokens: CallerTokens): Promise<void> {
    if (this.#recovering.has(portal.memberId)) return;
    this.#recovering.add(portal.memberId);
    try {
      if (!(await this.#belongToInstaller(portal, tokens))) return;
      await this.deps.portals.recoverTokens(portal.memberId, this.#stored(tokens));
      this.deps.log.info({ memberId: portal.memberId }, 'portal authorised again with proven tokens of its installer');
    } finally {
      this.#recovering.delete(portal.memberId);
    }
  }

  /** ONAPPUPDATE carries a pair (docs/protocols.md B1): kept only when proven; otherwise the stored pair stays. */
  async adoptFromUpdate(portal: Portal, tokens: CallerTokens): Promise<void> {
    if (!(await this.#belongToInstaller(portal, tokens))) return;
    await this.deps.portals.saveRefreshedTokens(portal.memberId, { ...this.#stored(tokens), clientEndpoint: portal.clientEndpoint });
  }

  /** The pair as stored: when it expires, in unix seconds, by our clock when the call gave only a lifetime. */
  #stored(tokens: CallerTokens): { accessToken: string; refreshToken: string; expiresAt: number } {
    const expiresAt = tokens.expiresAt ?? Math.floor(this.deps.clock.now() / 1000) + tokens.expiresInSeconds;
    return { accessToken: tokens.accessToken, refreshToken: tokens.refreshToken, expiresAt };
  }

  async #belongToInstaller(portal: Portal, tokens: CallerTokens): Promise<boolean> {
    const { oauth, log } = this.deps;
    let verified: Awaited<ReturnType<OAuthServer['appInfo']>>;
    try {
      verified = await oauth.appInfo(tokens.accessToken);
    } catch (error) {
      log.warn(
        { memberId: portal.memberId, err: error instanceof Error ? error.message : String(error) },
        'tokens from a call not kept: the authorization server did not confirm them',
      );
      return false;
    }
    const mismatch =
      verified.clientId !== oauth.appClientId
        ? 'they belong to another application'
        : verified.memberId !== portal.memberId
          ? 'they belong to another portal'
          : portal.installerUserId === null || verified.userId !== portal.installerUserId
            ? 'they belong to another user than the installer'
            : undefined;
    if (mismatch) log.warn({ memberId: portal.memberId, userId: verified.userId, mismatch }, 'tokens from a call not kept');
    return mismatch === undefined;
  }
}
