import type { Clock } from '../clock.js';
import type { CacheStore } from '../db/cache.js';
import type { Portal, PortalStore } from '../db/portals.js';
import type { Logger } from '../log.js';
import { readSettings, type PortalSettings } from '../portal-settings.js';
import { accountKey, type Chat2DeskAccounts } from './client.js';
import { DialogDirectory } from './directory.js';

/** A portal's Chat2Desk account as the app may use it, or why it may not. */
export type Chat2DeskConnection = { usable: true; settings: PortalSettings; directory: DialogDirectory } | { usable: false; settings: PortalSettings; reason: string };

export interface Chat2DeskAccessDeps {
  portals: PortalStore;
  accounts: Chat2DeskAccounts;
  cache: CacheStore;
  defaultApiUrl: string;
  allowedApiUrls: string[];
  log: Logger;
  clock: Clock;
}

/**
 * The one place that decides whether a portal's Chat2Desk is usable: an API token is set, and the
 * address the admin picked is still on the operator's allow-list (an address removed from
 * CHAT2DESK_ALLOWED_API_URLS is not used even though it is stored). The account behind it, keyed by
 * address and token, shares its rate, concurrency and cache with every portal using it.
 */
export class Chat2DeskAccess {
  constructor(private readonly deps: Chat2DeskAccessDeps) {}

  async connect(portal: Portal): Promise<Chat2DeskConnection> {
    const token = await this.deps.portals.chat2deskToken(portal.memberId);
    return this.#decide(portal, token);
  }

  /** The portal's directory when its Chat2Desk is usable, else undefined. */
  async directoryOf(portal: Portal): Promise<DialogDirectory | undefined> {
    const connection = await this.connect(portal);
    return connection.usable ? connection.directory : undefined;
  }

  async #decide(portal: Portal, token: string | undefined): Promise<Chat2DeskConnection> {
    const settings = readSettings(portal.settings, this.deps.defaultApiUrl);
    if (!token) {
      return { usable: false, settings, reason: 'Chat2Desk is not configured for this portal: an admin must enter the Chat2Desk API token in the app settings' };
    }
    if (!this.deps.allowedApiUrls.includes(settings.chat2deskApiUrl)) {
      return {
        usable: false,
        settings,
        reason: `the portal's Chat2Desk address ${settings.chat2deskApiUrl} is no longer allowed on this server: an admin must pick an allowed one in the app settings`,
      };
    }
    const api = await this.deps.accounts.api(settings.chat2deskApiUrl, token);
    const key = accountKey(settings.chat2deskApiUrl, token);
    return { usable: true, settings, directory: new DialogDirectory(api, this.deps.cache, key, settings.cacheTtlSeconds * 1000, this.deps.log, this.deps.clock) };
  }
}
