import { LRUCache } from 'lru-cache';
import * as v from 'valibot';
import type { BackgroundTasks } from './background.js';
import type { Clock } from './clock.js';
import { askPortalCaller, type AdminQuestion, type CallerVerdict } from './bitrix24/admin.js';
import type { AppRegistration } from './bitrix24/registration.js';
import type { OAuthServer } from './bitrix24/oauth.js';
import { OAuthError } from './bitrix24/errors.js';
import { CallerChecksExhausted, type Bitrix24Rest } from './bitrix24/rest-client.js';
import type { Chat2DeskAccounts, Chat2DeskChannel, Chat2DeskOperator, Chat2DeskTag } from './chat2desk/client.js';
import type { DialogDirectory } from './chat2desk/directory.js';
import type { Chat2DeskWebhooks } from './chat2desk/webhooks.js';
import { Chat2DeskError } from './chat2desk/errors.js';
import type { Portal, PortalStore } from './db/portals.js';
import type { Logger } from './log.js';
import type { ConnectedLine, OpenChannelsConnector } from './open-channels/connector.js';
import { OL_INBOUND_KIND } from './open-channels/inbound.js';
import { readSettings, settingsUpdateSchema, type SettingsUpdate, type PortalSettings } from './portal-settings.js';
import type { SecretBox } from './secrets.js';

const NOT_ADMIN = 'Only a Bitrix24 administrator may change the app settings';
const BAD_TOKEN = 'Bitrix24 did not accept the access token';
/** Why Open Channels inbound messages still waiting are not sent once the portal switched back (README "Open Channels mode"). */
export const LEFT_OPEN_CHANNELS = 'Not sent to Bitrix24: the portal left Open Channels mode; the message is in Chat2Desk, where operators now work';

export class SettingsRequestError extends Error {
  override name = 'SettingsRequestError';
  constructor(
    message: string,
    readonly httpStatus: 400 | 401 | 403 | 409 | 422 | 429 | 502,
    /** With 429: when the caller may try again (the Retry-After header). */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

/** Every setting (PortalSettings: the API token is not among them) and what the page shows beside them. */
export interface SettingsView extends PortalSettings {
  memberId: string;
  domain: string;
  chat2deskApiToken: { set: boolean };
  allowedChat2deskApiUrls: string[];
  channels: Chat2DeskChannel[];
  operators: Array<Pick<Chat2DeskOperator, 'id' | 'email' | 'first_name' | 'last_name' | 'role'>>;
  tags: Chat2DeskTag[];
  /** Chat2Desk operator id → Bitrix24 user id with the same e-mail, for operators not yet in operatorMap. */
  suggestedOperatorMap: Record<string, number>;
  chat2deskError?: string;
  registration?: { ok: boolean; error?: string };
  webhook?: { ok: boolean; error?: string };
  /** Open Channels mode: the lines connected to our connector (empty in Chat2Desk mode: switching back forgets them). */
  openLines: ConnectedLine[];
  /** Leaving Open Channels mode: the connector was taken away in Bitrix24 (its lines deactivated, unregistered, events unbound). */
  connector?: { ok: true };
}

export interface SettingsDeps {
  portals: PortalStore;
  rest: Bitrix24Rest;
  accounts: Chat2DeskAccounts;
  registration: AppRegistration;
  /** Lists the connected lines, and takes the connector away when the portal switches back to Chat2Desk mode. */
  connector: Pick<OpenChannelsConnector, 'deactivate' | 'connectedLines' | 'exclusive'>;
  secrets: SecretBox;
  defaultApiUrl: string;
  allowedApiUrls: string[];
  chat2deskWebhooks: Chat2DeskWebhooks;
  directoryFor(portal: Portal): Promise<DialogDirectory | undefined>;
  background: BackgroundTasks;
  log: Logger;
  clock: Clock;
  /** Proves a caller's token was issued to this app (docs/protocols.md B1 app.info), not to another app of the portal. */
  oauth: Pick<OAuthServer, 'appInfo' | 'appClientId'>;
  adminCacheMs?: number;
}

/** The settings API: who may use it (a portal admin, checked with the portal) and what it stores. */
export class SettingsService {
  /**
   * Who a bearer token is, per portal, for a minute: the portal is not asked on every request, and
   * requests with the same token at once share one question. Refused tokens are remembered too, so
   * repeating a guess does not spend the portal's REST budget.
   */
  readonly #admins: LRUCache<string, CallerVerdict, AdminQuestion>;
  readonly #schema;

  constructor(private readonly deps: SettingsDeps) {
    this.#schema = settingsUpdateSchema(deps.allowedApiUrls);
    this.#admins = new LRUCache({
      max: 10_000,
      ttl: deps.adminCacheMs ?? 60_000,
      perf: deps.clock,
      // Read the clock on every check rather than once a millisecond: a clock moved forward counts at once.
      ttlResolution: 0,
      // A question evicted while in flight still answers the requests waiting for it.
      ignoreFetchAbort: true,
      // A verdict to remember; a failure that says nothing about the token (load, network, our share used up) is thrown and not remembered.
      fetchMethod: (_key, _stale, { context }) => this.#askCaller(context),
    });
  }

  /**
   * The portal answers `profile` for a token of any app installed on it, so a token it accepted is
   * also shown to the authorization server: only a token issued to this app for this portal counts
   * (as for an install). Asked after the portal accepted it, so random guesses never reach it.
   */
  async #askCaller(question: AdminQuestion): Promise<CallerVerdict> {
    const answer = await askPortalCaller(this.deps.rest, question);
    if (answer.verdict === 'bad_token') return answer;
    try {
      const verified = await this.deps.oauth.appInfo(question.accessToken);
      if (verified.clientId === this.deps.oauth.appClientId && verified.memberId === question.memberId) return answer;
    } catch (error) {
      // Unreachable or failing: says nothing about the token, so it is thrown and not remembered.
      if (!(error instanceof OAuthError) || error.code === 'unreachable' || error.httpStatus >= 500) throw error;
    }
    return { verdict: 'bad_token', userId: null };
  }

  /** Proves the bearer is an admin of that portal by asking the portal itself (`profile` → ADMIN). */
  async authorizeAdmin(memberId: string, accessToken: string): Promise<Portal> {
    const portal = await this.deps.portals.get(memberId);
    if (!portal || portal.status === 'uninstalled') throw new SettingsRequestError('Unknown portal: the app is not installed there', 401);
    const caller = await this.identify(portal, accessToken);
    if (!caller.admin) throw new SettingsRequestError(NOT_ADMIN, 403);
    return portal;
  }

  /**
   * Who a user's access token belongs to, asked at the portal's stored REST endpoint only (never an
   * address from the request), through the same one-minute cache of verdicts as authorizeAdmin;
   * `askedAt` is when the portal answered.
   */
  async identify(portal: Portal, accessToken: string): Promise<{ userId: number; admin: boolean; askedAt: number }> {
    const { memberId } = portal;
    const key = `${memberId} ${this.deps.secrets.digest(accessToken)}`;
    let answer: CallerVerdict | undefined;
    try {
      answer = await this.#admins.fetch(key, { context: { memberId, clientEndpoint: portal.clientEndpoint, accessToken } });
    } catch (error) {
      if (error instanceof CallerChecksExhausted) throw new SettingsRequestError(error.message, 429, error.retryAfterSeconds);
      throw new SettingsRequestError(`Bitrix24 could not be asked who you are: ${error instanceof Error ? error.message : String(error)}`, 502);
    }
    // 'bad_token' (`undefined` never comes back: every question is answered and none is abandoned).
    if (!answer || answer.verdict === 'bad_token' || answer.userId === null) throw new SettingsRequestError(BAD_TOKEN, 401);
    // When the portal said so: a remembered answer is as old as its time in the cache.
    const age = (this.deps.adminCacheMs ?? 60_000) - this.#admins.getRemainingTTL(key);
    return { userId: answer.userId, admin: answer.verdict === 'admin', askedAt: this.deps.clock.now() - Math.max(0, age) };
  }

  async read(portal: Portal): Promise<SettingsView> {
    const settings = readSettings(portal.settings, this.deps.defaultApiUrl);
    const view: SettingsView = {
      ...settings,
      memberId: portal.memberId,
      domain: portal.domain,
      chat2deskApiToken: { set: portal.hasChat2deskToken },
      allowedChat2deskApiUrls: this.deps.allowedApiUrls,
      channels: [],
      operators: [],
      tags: [],
      suggestedOperatorMap: {},
      openLines: settings.integrationType === 'open_channels' ? await this.deps.connector.connectedLines(portal) : [],
    };
    const directory = await this.deps.directoryFor(portal);
    if (directory) {
      try {
        view.channels = await directory.channels();
        view.tags = await directory.tags();
        const operators = await directory.operators();
        view.operators = operators.map(({ id, email, first_name, last_name, role }) => ({ id, email, first_name, last_name, role }));
        view.suggestedOperatorMap = await this.#suggestMapping(portal, operators, settings.operatorMap);
      } catch (error) {
        view.chat2deskError = error instanceof Error ? error.message : String(error);
      }
    }
    return view;
  }

  /** Operators not in the explicit map, matched to Bitrix24 users by e-mail (one batch per 50). */
  async #suggestMapping(portal: Portal, operators: Chat2DeskOperator[], explicit: Record<string, number>): Promise<Record<string, number>> {
    const candidates = operators.filter((operator) => operator.email && explicit[String(operator.id)] === undefined && operator.role !== 'deleted' && operator.role !== 'disabled');
    if (candidates.length === 0) return {};
    const outcome = await this.deps.rest.batch(
      portal.memberId,
      candidates.map((operator) => ({ key: `op${operator.id}`, method: 'user.get', params: { FILTER: { EMAIL: operator.email } } })),
      { idempotent: true },
    );
    const suggested: Record<string, number> = {};
    for (const operator of candidates) {
      const users = outcome.results[`op${operator.id}`];
      const match = Array.isArray(users) ? (users as Array<{ ID: string; EMAIL?: string }>).find((user) => user.EMAIL?.toLowerCase() === operator.email!.toLowerCase()) : undefined;
      if (match) suggested[String(operator.id)] = Number(match.ID);
    }
    return suggested;
  }

  /** Validates, checks a new token with Chat2Desk, saves, then re-registers the robots. Nothing is saved on a refusal. */
  async update(portal: Portal, input: unknown): Promise<SettingsView> {
    const parsed = v.safeParse(this.#schema, input);
    if (!parsed.success) throw new SettingsRequestError(parsed.issues.map((issue) => issue.message).join('; '), 400);
    // One save of a portal at a time in this process, with its line writes (OpenChannelsConnector.exclusive),
    // each from the settings stored when its turn comes: a save never re-registers the connector after a
    // switch back took it away. Across processes the store's guards refuse what would undo a switch.
    return this.deps.connector.exclusive(portal.memberId, async () => {
      const fresh = await this.deps.portals.get(portal.memberId);
      if (!fresh || fresh.status === 'uninstalled') throw new SettingsRequestError('Unknown portal: the app is not installed there', 401);
      return this.#update(fresh, parsed.output);
    });
  }

  async #update(portal: Portal, change: SettingsUpdate): Promise<SettingsView> {
    const current = readSettings(portal.settings, this.deps.defaultApiUrl);
    const next = {
      chat2deskApiUrl: change.chat2deskApiUrl ?? current.chat2deskApiUrl,
      defaultCountry: change.defaultCountry !== undefined ? change.defaultCountry : current.defaultCountry,
      defaultChannelId: change.defaultChannelId !== undefined ? change.defaultChannelId : current.defaultChannelId,
      defaultTransport: change.defaultTransport !== undefined ? change.defaultTransport : current.defaultTransport,
      operatorMap: change.operatorMap ?? current.operatorMap,
      cacheTtlSeconds: change.cacheTtlSeconds ?? current.cacheTtlSeconds,
      eventLogRetentionDays: change.eventLogRetentionDays ?? current.eventLogRetentionDays,
      ...nextEpisodeSettings(current, change, this.deps.clock.now()),
      notifyIncoming: change.notifyIncoming ?? current.notifyIncoming,
      responsibleSync: change.responsibleSync ?? current.responsibleSync,
      workspaceUsers: change.workspaceUsers ?? current.workspaceUsers,
      workspaceDepartments: change.workspaceDepartments ?? current.workspaceDepartments,
      openLinksIn: change.openLinksIn ?? current.openLinksIn,
      integrationType: change.integrationType ?? current.integrationType,
    };
    const token = change.chat2deskApiToken ?? (await this.deps.portals.chat2deskToken(portal.memberId));
    const needsCheck = change.chat2deskApiToken !== undefined || next.chat2deskApiUrl !== current.chat2deskApiUrl || change.defaultChannelId != null;
    if (needsCheck) {
      if (!token) throw new SettingsRequestError('Set chat2deskApiToken first: the other Chat2Desk settings need it', 422);
      const api = await this.deps.accounts.api(next.chat2deskApiUrl, token);
      try {
        await api.apiInfo();
        if (next.defaultChannelId !== null) {
          const channels = await api.channels();
          const channel = channels.find((item) => item.id === next.defaultChannelId);
          if (!channel) throw new SettingsRequestError(`defaultChannelId ${next.defaultChannelId} is not a channel of this Chat2Desk account`, 422);
          if (next.defaultTransport && !channel.transports.includes(next.defaultTransport)) {
            throw new SettingsRequestError(`Channel ${channel.id} does not support ${next.defaultTransport}; it has ${channel.transports.join(', ')}`, 422);
          }
        }
      } catch (error) {
        if (error instanceof SettingsRequestError) throw error;
        // A token stored before tokens were checked may not even fit in a header.
        if (error instanceof Chat2DeskError && error.kind === 'unsendable') throw new SettingsRequestError(`chat2deskApiToken cannot be used: ${error.apiMessage}`, 400);
        if (error instanceof Chat2DeskError && !error.transient) {
          throw new SettingsRequestError(error.kind === 'auth' ? `Chat2Desk rejected the API token: ${error.apiMessage}` : `Chat2Desk refused: ${error.apiMessage}`, 422);
        }
        throw new SettingsRequestError(`Chat2Desk could not be reached to check the token: ${error instanceof Error ? error.message : String(error)}`, 502);
      }
    }
    // A new account (token or host) gets a new webhook; the old one would hold one of the old
    // account's five webhook slots, so it is removed while its token is still at hand.
    const previousToken = await this.deps.portals.chat2deskToken(portal.memberId);
    const accountChanges =
      previousToken !== undefined && ((change.chat2deskApiToken !== undefined && change.chat2deskApiToken !== previousToken) || next.chat2deskApiUrl !== current.chat2deskApiUrl);
    // Back to Chat2Desk mode: the connector goes away in Bitrix24 first (its lines deactivated, unregistered,
    // events unbound; switching to Open Channels registers it below, with the robots). A refusal keeps the
    // portal in Open Channels mode and changes no setting; saving again finishes what was left.
    const leavingOpenChannels = current.integrationType === 'open_channels' && next.integrationType === 'chat2desk';
    if (leavingOpenChannels) {
      try {
        await this.deps.connector.deactivate(portal);
      } catch (error) {
        this.deps.log.warn({ memberId: portal.memberId, err: String(error) }, 'open channels connector not deactivated');
        throw new SettingsRequestError(
          `The Chat2Desk connector could not be taken out of Bitrix24, so the portal stays in Open Channels mode: ${error instanceof Error ? error.message : String(error)}`,
          502,
        );
      }
    }
    const removeOldWebhook = accountChanges ? await this.deps.chat2deskWebhooks.prepareAccountChange(portal) : undefined;
    // Only what this request changes is written, merged into the settings stored by then: a save that
    // began before another (a mode switch in another tab) never undoes it. A mode switch is saved only
    // from the mode this request saw.
    const changes = Object.fromEntries(Object.entries(next).filter(([key, value]) => JSON.stringify(value) !== JSON.stringify(current[key as keyof PortalSettings])));
    const guard = {
      ...(next.integrationType !== current.integrationType ? { integrationType: current.integrationType } : {}),
      ...(leavingOpenChannels ? { leaveOpenChannels: { kind: OL_INBOUND_KIND, reason: LEFT_OPEN_CHANNELS } } : {}),
    };
    let saved = await this.deps.portals.saveSettings(portal.memberId, changes, change.chat2deskApiToken, guard);
    // A line connected while the connector was being taken away: deactivated too, then saved again.
    for (let again = 0; saved && 'conflict' in saved && saved.conflict === 'lines_connected' && again < 3; again++) {
      try {
        await this.deps.connector.deactivate(portal);
      } catch (error) {
        throw new SettingsRequestError(
          `The Chat2Desk connector could not be taken out of Bitrix24, so the portal stays in Open Channels mode: ${error instanceof Error ? error.message : String(error)}`,
          502,
        );
      }
      saved = await this.deps.portals.saveSettings(portal.memberId, changes, change.chat2deskApiToken, guard);
    }
    if (!saved) throw new SettingsRequestError('The portal disappeared while saving', 401);
    if ('conflict' in saved) {
      this.deps.log.warn({ memberId: portal.memberId, conflict: saved.conflict }, 'settings not saved: changed meanwhile');
      throw new SettingsRequestError(
        saved.conflict === 'mode_changed'
          ? 'Settings changed meanwhile: where operators work was switched in another tab or window. Reload the page to see the settings as they are now, then save again'
          : 'Settings changed meanwhile: lines kept being connected while the portal was leaving Open Channels mode. Reload the page and save again',
        409,
      );
    }
    // Only once the new account is saved: a refused save keeps the old account and its webhook.
    if (removeOldWebhook) this.deps.background.run('remove the old chat2desk webhook', removeOldWebhook, { memberId: portal.memberId });
    this.deps.log.info({ memberId: portal.memberId, tokenChanged: change.chat2deskApiToken !== undefined }, 'settings saved');
    let registration: SettingsView['registration'];
    try {
      await this.deps.registration.register(saved);
      registration = { ok: true };
    } catch (error) {
      registration = { ok: false, error: error instanceof Error ? error.message : String(error) };
      this.deps.log.warn({ memberId: portal.memberId, err: registration.error }, 'settings saved but robots were not re-registered');
    }
    let webhook: SettingsView['webhook'];
    if (saved.hasChat2deskToken) {
      try {
        await this.deps.chat2deskWebhooks.ensure(saved);
        webhook = { ok: true };
      } catch (error) {
        webhook = { ok: false, error: error instanceof Error ? error.message : String(error) };
        this.deps.log.warn({ memberId: portal.memberId, err: webhook.error }, 'chat2desk webhook not registered');
      }
      // Fill the cache in the background so the first burst of lookups does not hit Chat2Desk.
      const directory = await this.deps.directoryFor(saved);
      if (directory && (change.chat2deskApiToken !== undefined || next.chat2deskApiUrl !== current.chat2deskApiUrl)) {
        this.deps.background.run('chat2desk cache sync', () => directory.sync(), { memberId: portal.memberId });
      }
    }
    return { ...(await this.read(saved)), registration, webhook, ...(leavingOpenChannels ? { connector: { ok: true as const } } : {}) };
  }
}

type EpisodeSettings = Omit<
  PortalSettings,
  | 'chat2deskApiUrl'
  | 'defaultCountry'
  | 'defaultChannelId'
  | 'defaultTransport'
  | 'operatorMap'
  | 'cacheTtlSeconds'
  | 'eventLogRetentionDays'
  | 'notifyIncoming'
  | 'responsibleSync'
  | 'workspaceUsers'
  | 'workspaceDepartments'
  | 'openLinksIn'
  | 'integrationType'
>;

/**
 * The closed-episode settings after a partial update. Turning episodes on stamps the time: only
 * episodes closed after it are handled, so switching on never floods the CRM with old dialogs.
 */
function nextEpisodeSettings(current: PortalSettings, change: SettingsUpdate, now: number): EpisodeSettings {
  const pick = <K extends keyof EpisodeSettings>(key: K): EpisodeSettings[K] =>
    change[key as keyof SettingsUpdate] !== undefined ? (change[key as keyof SettingsUpdate] as EpisodeSettings[K]) : current[key];
  const turnedOn = change.episodesEnabled === true && !current.episodesEnabled;
  return {
    episodesEnabled: pick('episodesEnabled'),
    // Whole seconds: Chat2Desk's times have no finer grain (docs/protocols.md C1), and an episode closed in that second counts.
    episodesEnabledAt: turnedOn ? new Date(Math.floor(now / 1000) * 1000).toISOString() : current.episodesEnabledAt,
    episodeEntity: pick('episodeEntity'),
    dealCategoryId: pick('dealCategoryId'),
    dealStageId: pick('dealStageId'),
    sourceId: pick('sourceId'),
    fallbackResponsibleId: pick('fallbackResponsibleId'),
    matchOrder: pick('matchOrder'),
    gapLookbackDays: pick('gapLookbackDays'),
    transcript: pick('transcript'),
    tagFilterMode: pick('tagFilterMode'),
    tagFilterTags: pick('tagFilterTags'),
    extraFields: pick('extraFields'),
  };
}
