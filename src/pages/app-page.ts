import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LRUCache } from 'lru-cache';
import type { Activity } from '../activities/activity.js';
import type { AppRegistration } from '../bitrix24/registration.js';
import type { Chat2DeskAccess } from '../chat2desk/access.js';
import type { Chat2DeskApi } from '../chat2desk/client.js';
import type { Chat2DeskWebhooks } from '../chat2desk/webhooks.js';
import type { Clock } from '../clock.js';
import type { JobStore } from '../db/jobs.js';
import type { Portal } from '../db/portals.js';
import type { WebhookStore } from '../db/webhooks.js';
import type { OperatorOfUser, WorkspaceScopes } from '../dialogs/viewer.js';
import type { WorkspaceView } from '../dialogs/workspace.js';
import type { Logger } from '../log.js';
import { type IntegrationType, KNOWN_TRANSPORTS, readIntegrationType } from '../portal-settings.js';
import type { SettingsService, SettingsView } from '../settings-service.js';
import { TRIGGERS } from '../triggers/triggers.js';
import { CHAT_WORDS, PAGE_WORDS, type PageLanguage, type PageWords, TAB_WORDS } from './i18n.js';
import type { PageSession } from './page-auth.js';

/**
 * Scopes the app needs, each satisfied by any of the listed grants (user_brief has no e-mail:
 * docs/protocols.md B10). `im` only carries the incoming-message notifications, which are off by
 * default: it is named as missing only while they are on, so a portal that does not use them is not
 * told to widen the app's permissions for nothing.
 */
/** How long the page shows the same monthly request count (`AppPageService` #apiInfo). */
const API_INFO_CACHE_MS = 60_000;

export const NEEDED_SCOPES: ReadonlyArray<{
  scope: 'crm' | 'bizproc' | 'user' | 'placement' | 'im' | 'imopenlines' | 'imconnector';
  grantedBy: readonly string[];
  onlyWithNotifications?: true;
  onlyInOpenChannels?: true;
}> = [
  { scope: 'crm', grantedBy: ['crm'] },
  { scope: 'bizproc', grantedBy: ['bizproc'] },
  { scope: 'user', grantedBy: ['user', 'user_basic'] },
  // The CRM card tab (src/dialogs/placements.ts).
  { scope: 'placement', grantedBy: ['placement'] },
  { scope: 'im', grantedBy: ['im'], onlyWithNotifications: true },
  // Open Channels mode (README "Open Channels mode"): the connector and its lines (bitrix24.md §12).
  { scope: 'imopenlines', grantedBy: ['imopenlines'], onlyInOpenChannels: true },
  { scope: 'imconnector', grantedBy: ['imconnector'], onlyInOpenChannels: true },
];

/** APPLICATION_SCOPE (comma-separated, from the page's POST) → the needed scopes it lacks. */
export function missingScopes(
  applicationScope: string,
  options: { notifyIncoming: boolean; openChannels?: boolean } = { notifyIncoming: false },
): Array<(typeof NEEDED_SCOPES)[number]['scope']> {
  const granted = new Set(
    applicationScope
      .split(',')
      .map((item) => item.trim().toLowerCase())
      .filter(Boolean),
  );
  return NEEDED_SCOPES.filter((need) => !need.onlyWithNotifications || options.notifyIncoming)
    .filter((need) => !need.onlyInOpenChannels || options.openChannels === true)
    .filter((need) => !need.grantedBy.some((grant) => granted.has(grant)))
    .map((need) => need.scope);
}

/** The connection's health, shown to every user of the portal (it holds no client or employee data). */
export interface ConnectionStatus {
  chat2desk: { connected: boolean; problem?: string; requestsThisMonth?: number };
  webhook: { registered: boolean; status: string | null; lastDeliveryAt: string | null; lastCheckAt: string | null };
  bitrix24: {
    refreshRefused: boolean;
    /** Robot results whose delivery failed and is being retried, and those given up on in the last week. */
    resultsRetrying: number;
    resultsGivenUp: number;
    lastResultError: string | null;
  };
}

/** How far back the page counts robot results given up on. */
const GIVEN_UP_WINDOW_MS = 7 * 24 * 3600_000;

export interface PageServiceDeps {
  chat2desk: Chat2DeskAccess;
  jobs: JobStore;
  clock: Clock;
  webhooks: WebhookStore;
  chat2deskWebhooks: Chat2DeskWebhooks;
  registration: AppRegistration;
  settings: SettingsService;
  robots: readonly Activity[];
  log: Logger;
  /** The Chat section's views come from the same scope the workspace API applies (src/dialogs/workspace.ts). */
  workspace: WorkspaceScopes;
  operators: OperatorOfUser;
}

/**
 * What the Chat section offers this viewer: the views the workspace API would answer (`mine` needs an
 * operator; `open` and `all` need the `all` scope), or none with the reason. Decided again by the API on
 * every request; this only keeps the page from offering what would be refused.
 */
export interface ChatSection {
  views: Array<{ id: WorkspaceView; label: string }>;
  /** Why there is nothing to show: no operator and no wider access, or the portal could not be asked. */
  note?: string;
}

/** A file under public/ (or the SDK from node_modules), read once, served with a content hash in its URL. */
export interface PublicFile {
  body: Buffer;
  type: string;
  version: string;
}

const publicDir = fileURLToPath(new URL('../../public/', import.meta.url));
const TYPES: Record<string, string> = { js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };

/** The files the page loads: our scripts and styles, the vendored Air tokens and the official b24jssdk. */
export function loadPublicFiles(): Map<string, PublicFile> {
  const require = createRequire(import.meta.url);
  const sources: Record<string, string> = {
    'app.js': `${publicDir}app.js`,
    'app.css': `${publicDir}app.css`,
    // The frame session every page shares: its token, the renewal through the parent frame, the frame's height.
    'frame-session.js': `${publicDir}frame-session.js`,
    // The CRM tab (src/routes/tab.ts): its page script, the reusable dialog view (an ES module) and styles.
    'tab.js': `${publicDir}tab.js`,
    'dialog-view.js': `${publicDir}dialog-view.js`,
    'tab.css': `${publicDir}tab.css`,
    // The app page's Chat section (ES modules: it reuses the dialog view) and the live updates of both pages.
    'workspace.js': `${publicDir}workspace.js`,
    'live.js': `${publicDir}live.js`,
    // The Open Channels connector's settings page (src/routes/connector.ts).
    'connector.js': `${publicDir}connector.js`,
    'connector.css': `${publicDir}connector.css`,
    'vendor/b24-air/001_b24_global.css': `${publicDir}vendor/b24-air/001_b24_global.css`,
    'vendor/b24-air/003_b24_context_light.css': `${publicDir}vendor/b24-air/003_b24_context_light.css`,
    'vendor/b24-air/007_b24_global.css': `${publicDir}vendor/b24-air/007_b24_global.css`,
    'vendor/b24-air/008_ui_global.css': `${publicDir}vendor/b24-air/008_ui_global.css`,
    'vendor/b24-air/button.css': `${publicDir}vendor/b24-air/button.css`,
    // The SDK's own UMD build (global B24Js), from the installed package: served by us, not a CDN.
    // The package exports only its entry points, so the file is found beside its package.json.
    'vendor/b24jssdk.min.js': join(dirname(require.resolve('@bitrix24/b24jssdk/package.json')), 'dist/umd/index.min.js'),
  };
  const files = new Map<string, PublicFile>();
  for (const [name, path] of Object.entries(sources)) {
    const body = readFileSync(path);
    files.set(name, { body, type: TYPES[name.slice(name.lastIndexOf('.') + 1)]!, version: createHash('sha256').update(body).digest('hex').slice(0, 12) });
  }
  return files;
}

/** What templates/app.hbs renders. */
export interface AppPageModel {
  lang: PageLanguage;
  t: PageWords;
  install: boolean;
  admin: boolean;
  error?: string;
  domain: string;
  status?: ConnectionStatus;
  view?: SettingsView;
  missingScopes: Array<{ scope: string; label: string }>;
  robots: Array<{ code: string; name: string }>;
  /** The app's CRM automation triggers (src/triggers/triggers.ts); the script asks the portal which are registered. */
  triggers: Array<{ code: string; name: string }>;
  /** The portal did not grant `im`: turning notifications on says so beside the switch, before saving. */
  imMissing: boolean;
  transports: readonly string[];
  /** The dialog a link asked the page to open (PLACEMENT_OPTIONS `dialog`, docs/protocols.md B19); the Chat section opens it. */
  openDialogId?: number;
  /** Where operators work (templates/partials/mode.hbs): shown to everybody, changed by admins only; absent on a refusal. */
  mode?: {
    current: IntegrationType;
    openChannels: boolean;
    /** imopenlines/imconnector the portal did not grant: named before switching to Open Channels. */
    missingScopes: Array<{ scope: string; label: string }>;
  };
  /** The Chat section (templates/partials/chat.hbs); absent on a refusal. */
  chat?: ChatSection;
  /** JSON for the page's script, with `<` escaped so it cannot close the script element. */
  pageData: string;
  assets: Record<string, string>;
}

export class AppPageService {
  /**
   * Chat2Desk's own count of the account's requests, per portal for a minute: any user may open the
   * page or ask for its status, and each ask would otherwise spend the account's monthly quota and its
   * rate. Asks at once share one request; a failure is not remembered.
   */
  readonly #apiInfo: LRUCache<string, Record<string, unknown>, Pick<Chat2DeskApi, 'apiInfo'>>;

  constructor(private readonly deps: PageServiceDeps) {
    this.#apiInfo = new LRUCache({
      max: 10_000,
      ttl: API_INFO_CACHE_MS,
      perf: deps.clock,
      ttlResolution: 0,
      ignoreFetchAbort: true,
      fetchMethod: (_memberId, _stale, { context }) => context.apiInfo(),
    });
  }

  async status(portal: Portal): Promise<ConnectionStatus> {
    const registration = await this.deps.webhooks.get(portal.memberId);
    const results = await this.deps.jobs.undeliveredResults(portal.memberId, this.deps.clock.now() - GIVEN_UP_WINDOW_MS);
    const status: ConnectionStatus = {
      chat2desk: { connected: false },
      webhook: {
        registered: registration?.webhookId != null,
        status: registration?.status ?? null,
        lastDeliveryAt: registration?.lastDeliveryAt ? new Date(registration.lastDeliveryAt).toISOString() : null,
        lastCheckAt: registration?.lastCheckAt ? new Date(registration.lastCheckAt).toISOString() : null,
      },
      bitrix24: {
        refreshRefused: portal.status === 'reauth_required',
        resultsRetrying: results.retrying,
        resultsGivenUp: results.gaveUp,
        lastResultError: results.lastError,
      },
    };
    const connection = await this.deps.chat2desk.connect(portal);
    if (!connection.usable) {
      // With no token at all the page says "not connected" in its own words.
      if (portal.hasChat2deskToken) status.chat2desk.problem = connection.reason;
      return status;
    }
    try {
      // docs/protocols.md C1: GET /companies/api_info, the account's requests this month.
      const info = (await this.#apiInfo.fetch(portal.memberId, { context: connection.directory.api })) ?? {};
      status.chat2desk.connected = true;
      if (typeof info.requests_this_month === 'number') status.chat2desk.requestsThisMonth = info.requests_this_month;
    } catch (error) {
      status.chat2desk.problem = error instanceof Error ? error.message : String(error);
    }
    return status;
  }

  /** Re-registers the portal's Chat2Desk webhook and refills the cache (the "repair" action). */
  async repairWebhook(portal: Portal): Promise<ConnectionStatus> {
    await this.deps.chat2deskWebhooks.ensure(portal);
    await this.deps.chat2deskWebhooks.reconcile(portal);
    return this.status(portal);
  }

  async registerRobots(portal: Portal): Promise<void> {
    await this.deps.registration.register(portal);
  }

  async model(
    session: PageSession,
    page: { lang: PageLanguage; install: boolean; applicationScope: string; assets: Record<string, string>; openDialogId?: number },
  ): Promise<AppPageModel> {
    const t = PAGE_WORDS[page.lang];
    const admin = session.claims.admin;
    const [status, view, chat] = await Promise.all([
      this.status(session.portal),
      admin ? this.deps.settings.read(session.portal) : Promise.resolve(undefined),
      this.#chatSection(session, t),
    ]);
    const mode = readIntegrationType(session.portal.settings);
    const data = {
      token: session.token,
      expiresAt: session.claims.expiresAt,
      admin,
      install: page.install,
      lang: page.lang,
      t,
      view: view ?? null,
      mode,
      robotCodes: this.deps.robots.map((robot) => robot.code),
      triggerCodes: TRIGGERS.map((trigger) => trigger.code),
      openDialogId: page.openDialogId ?? null,
      chat: chat.views.length ? { views: chat.views.map((item) => item.id), t: { ...TAB_WORDS[page.lang], ...CHAT_WORDS[page.lang] } } : null,
    };
    return {
      lang: page.lang,
      t,
      install: page.install,
      admin,
      domain: session.portal.domain,
      status,
      view,
      missingScopes: missingScopes(page.applicationScope, { notifyIncoming: view?.notifyIncoming === true, openChannels: view?.integrationType === 'open_channels' }).map(
        (scope) => ({ scope, label: t[`scope_${scope}`] }),
      ),
      robots: this.deps.robots.map((robot) => ({ code: robot.code, name: robot.name[page.lang] })),
      triggers: TRIGGERS.map((trigger) => ({ code: trigger.code, name: trigger.name[page.lang] })),
      imMissing: missingScopes(page.applicationScope, { notifyIncoming: true }).includes('im'),
      transports: KNOWN_TRANSPORTS,
      openDialogId: page.openDialogId,
      mode: {
        current: mode,
        openChannels: mode === 'open_channels',
        missingScopes: missingScopes(page.applicationScope, { notifyIncoming: false, openChannels: true })
          .filter((scope) => scope === 'imopenlines' || scope === 'imconnector')
          .map((scope) => ({ scope, label: t[`scope_${scope}`] })),
      },
      chat,
      pageData: JSON.stringify(data).replace(/</g, '\\u003c'),
      assets: page.assets,
    };
  }

  async #chatSection(session: PageSession, t: PageWords): Promise<ChatSection> {
    let scope: Awaited<ReturnType<WorkspaceScopes['scopeOf']>>;
    let operatorId: number | undefined;
    try {
      scope = await this.deps.workspace.scopeOf(session.portal, session.claims);
      operatorId = scope?.kind === 'operator' ? scope.operatorId : scope ? await this.deps.operators.operatorOf(session.portal, session.claims.userId) : undefined;
    } catch (error) {
      // The departments or the operator could not be read now: the rest of the page still opens.
      this.deps.log.warn(
        { memberId: session.portal.memberId, err: error instanceof Error ? error.message : String(error) },
        'the Chat section could not tell what this user may see',
      );
      return { views: [], note: `${t.chatUnavailable} ${error instanceof Error ? error.message : String(error)}` };
    }
    if (!scope) return { views: [], note: t.chatNoAccess };
    const views: WorkspaceView[] = [...(operatorId === undefined ? [] : (['mine'] as const)), ...(scope.kind === 'all' ? (['open', 'all'] as const) : [])];
    const labels: Record<WorkspaceView, string> = { mine: t.chatMine, open: t.chatOpen, all: t.chatAll };
    return { views: views.map((id) => ({ id, label: labels[id] })) };
  }
}
