import { getCountries, type CountryCode } from 'libphonenumber-js/max';
import * as v from 'valibot';
import type { StoredSettings } from './db/portals.js';

/** The settings a portal admin edits (the API token is write-only and kept apart, sealed). */
export interface PortalSettings {
  chat2deskApiUrl: string;
  defaultCountry: string | null;
  defaultChannelId: number | null;
  defaultTransport: string | null;
  /** Chat2Desk operator id → Bitrix24 user id; operators not listed are matched by e-mail. */
  operatorMap: Record<string, number>;
  /** How long a cached Chat2Desk fact may be served when no webhook said it changed. */
  cacheTtlSeconds: number;
  /** How long finished jobs (the event log) are kept, in days. */
  eventLogRetentionDays: number;
  /** Closed Chat2Desk episodes become CRM records (src/episodes/). */
  episodesEnabled: boolean;
  /** When the admin turned episodes on (ISO, server-set): only episodes closed after it are handled. */
  episodesEnabledAt: string | null;
  /** What is created when no CRM record of the client is found. */
  episodeEntity: EpisodeEntity;
  /** The pipeline a new deal goes to (0 = general). */
  dealCategoryId: number | null;
  /** The stage of a new deal; null = the pipeline's first stage. */
  dealStageId: string | null;
  /** SOURCE_ID of new records (a crm.status.list SOURCE status); null = none. */
  sourceId: string | null;
  /** Responsible of a new record when the episode's operator has no Bitrix24 user. */
  fallbackResponsibleId: number | null;
  /** Which matching record wins, first to last (src/episodes/matching.ts). */
  matchOrder: MatchKind[];
  /** How far back gap polling looks for closed episodes. */
  gapLookbackDays: number;
  /** The episode's messages go into its timeline comment. */
  transcript: boolean;
  tagFilterMode: TagFilterMode;
  /** Chat2Desk tag ids the filter names. */
  tagFilterTags: number[];
  /** Chat2Desk client fields copied into a new record's fields. */
  extraFields: ExtraField[];
  /** The operator's Bitrix24 user is notified of a dialog's incoming messages, grouped (src/jobs/kinds/notify-incoming.ts). */
  notifyIncoming: boolean;
  /** A transferred dialog's CRM record gets the new operator's Bitrix24 user as responsible (src/jobs/kinds/sync-responsible.ts). */
  responsibleSync: boolean;
  /** Bitrix24 users who see every dialog in the Chat workspace, as admins do (src/dialogs/workspace.ts). */
  workspaceUsers: number[];
  /** Bitrix24 departments whose members see every dialog in the Chat workspace. */
  workspaceDepartments: number[];
  /** Where dialog links we write into the portal (notifications) open: Chat2Desk's web app, or our app page. */
  openLinksIn: OpenLinksIn;
  /**
   * Where operators work (issue 10): `chat2desk` (closed dialogs become CRM records) or
   * `open_channels` (our connector brings conversations into Bitrix24 Open Channels; README "Open Channels mode").
   */
  integrationType: IntegrationType;
}

export type IntegrationType = 'chat2desk' | 'open_channels';
export const INTEGRATION_TYPES: readonly IntegrationType[] = ['chat2desk', 'open_channels'];

export type OpenLinksIn = 'chat2desk' | 'app';
export const OPEN_LINKS_IN: readonly OpenLinksIn[] = ['chat2desk', 'app'];
/** Bounds of the workspace lists: a portal lists a few people and teams, never its whole staff one by one. */
export const WORKSPACE_USERS_MAX = 500;
export const WORKSPACE_DEPARTMENTS_MAX = 100;

export type EpisodeEntity = 'lead' | 'contact' | 'contact_deal';
export type MatchKind = 'deal' | 'contact' | 'company' | 'lead';
export type TagFilterMode = 'all' | 'only' | 'except';
export interface ExtraField {
  /** `client.<name>` (a Chat2Desk client field) or `client.custom.<id>` (a custom field). */
  source: string;
  /** The CRM field code, e.g. COMMENTS or UF_CRM_1700000000. */
  field: string;
}

export const EPISODE_ENTITIES: readonly EpisodeEntity[] = ['lead', 'contact', 'contact_deal'];
export const DEFAULT_MATCH_ORDER: readonly MatchKind[] = ['deal', 'contact', 'company', 'lead'];
export const TAG_FILTER_MODES: readonly TagFilterMode[] = ['all', 'only', 'except'];
export const DEFAULT_GAP_LOOKBACK_DAYS = 7;
const CRM_FIELD_CODE = /^[A-Z][A-Z0-9_]{0,49}$/;
const EXTRA_FIELD_SOURCE = /^client\.(?:custom\.[A-Za-z0-9_-]{1,40}|[a-z][a-z0-9_]{0,39})$/;
const STATUS_ID = /^[A-Za-z0-9_:.-]{1,50}$/;

export const DEFAULT_CACHE_TTL_SECONDS = 900;
export const DEFAULT_EVENT_LOG_RETENTION_DAYS = 30;

const countries = new Set<string>(getCountries());

/** Transports Chat2Desk documents (docs/protocols.md C6); used for the robot's select and to validate defaults. */
export const KNOWN_TRANSPORTS = [
  'whatsapp',
  'wa_dialog',
  'wa_cm',
  'wa_infobip',
  'telegram',
  'tg_user',
  'viber',
  'viber_business',
  'viber_public',
  'vk',
  'vkontakte',
  'ok',
  'facebook',
  'insta_direct',
  'widget',
  'external',
  'email',
  'sms',
  'sms_infobip',
  'skype',
  'wechat',
] as const;

const OPERATOR_ID = /^\d{1,15}$/;

export function settingsUpdateSchema(allowedApiUrls: readonly string[]) {
  return v.strictObject({
    chat2deskApiToken: v.optional(
      v.pipe(
        v.string('chat2deskApiToken must be text'),
        v.trim(),
        v.minLength(1, 'chat2deskApiToken must not be empty'),
        v.maxLength(200, 'chat2deskApiToken is longer than 200 characters'),
        // It travels raw in the Authorization header (docs/protocols.md C1), where control
        // characters, line breaks and non-ASCII cannot go: refused here, before Chat2Desk is asked.
        v.regex(/^[\x21-\x7e]+$/, 'chat2deskApiToken must be the token from Chat2Desk (Settings → API): letters, digits and punctuation, without spaces or control characters'),
      ),
    ),
    chat2deskApiUrl: v.optional(
      v.pipe(
        v.string(),
        v.transform((url) => url.trim().replace(/\/+$/, '')),
        v.check((url) => allowedApiUrls.includes(url), `chat2deskApiUrl must be one of: ${allowedApiUrls.join(', ')}`),
      ),
    ),
    defaultCountry: v.optional(
      v.nullable(
        v.pipe(
          v.string(),
          v.transform((code) => code.trim().toUpperCase()),
          v.check((code) => countries.has(code), 'defaultCountry must be an ISO 3166-1 alpha-2 code such as RU or MX'),
        ),
      ),
    ),
    defaultChannelId: v.optional(v.nullable(v.pipe(v.number('defaultChannelId must be a number'), v.integer(), v.minValue(1)))),
    defaultTransport: v.optional(
      v.nullable(
        v.pipe(
          v.string(),
          v.check((name) => /^[a-z0-9_]{2,40}$/.test(name), 'defaultTransport must be a Chat2Desk transport name such as whatsapp'),
        ),
      ),
    ),
    operatorMap: v.optional(
      v.pipe(
        v.custom<Record<string, unknown>>((map) => typeof map === 'object' && map !== null && !Array.isArray(map), 'operatorMap must be an object of operator ids'),
        // Keys are checked on the object as sent: v.record skips __proto__, constructor and
        // prototype silently, so {"__proto__": 5} would otherwise save an empty map.
        v.check((map) => Object.keys(map).every((key) => OPERATOR_ID.test(key)), 'operatorMap keys must be Chat2Desk operator ids'),
        v.record(v.string(), v.pipe(v.number('operatorMap values must be Bitrix24 user ids'), v.integer(), v.minValue(1))),
      ),
    ),
    cacheTtlSeconds: v.optional(v.pipe(v.number('cacheTtlSeconds must be a number'), v.integer(), v.minValue(0), v.maxValue(86_400, 'cacheTtlSeconds must be at most 86400'))),
    eventLogRetentionDays: v.optional(
      v.pipe(
        v.number('eventLogRetentionDays must be a number'),
        v.integer('eventLogRetentionDays must be a whole number of days'),
        v.minValue(1, 'eventLogRetentionDays must be at least 1'),
        v.maxValue(365, 'eventLogRetentionDays must be at most 365'),
      ),
    ),
    ...episodeSettingsEntries,
    notifyIncoming: v.optional(v.boolean('notifyIncoming must be true or false')),
    responsibleSync: v.optional(v.boolean('responsibleSync must be true or false')),
    ...workspaceSettingsEntries,
  });
}

const positiveId = (name: string) => v.pipe(v.number(`${name} must be a number`), v.integer(`${name} must be a whole number`), v.minValue(1, `${name} must be positive`));

/** A list of Bitrix24 ids, duplicates dropped, at most `max`. */
const idList = (name: string, what: string, max: number) =>
  v.pipe(
    v.array(positiveId(`${name} items`), `${name} must be a list of Bitrix24 ${what} ids`),
    v.maxLength(max, `${name} has more than ${max} entries`),
    v.transform((ids) => [...new Set(ids)]),
  );

/** Who sees every dialog in the Chat workspace, and where dialog links open (README "The Chat workspace"). */
const workspaceSettingsEntries = {
  workspaceUsers: v.optional(idList('workspaceUsers', 'user', WORKSPACE_USERS_MAX)),
  workspaceDepartments: v.optional(idList('workspaceDepartments', 'department', WORKSPACE_DEPARTMENTS_MAX)),
  openLinksIn: v.optional(v.picklist(OPEN_LINKS_IN, `openLinksIn must be one of: ${OPEN_LINKS_IN.join(', ')}`)),
  integrationType: v.optional(v.picklist(INTEGRATION_TYPES, `integrationType must be one of: ${INTEGRATION_TYPES.join(', ')}`)),
};

/** The closed-episode settings (docs: README "Closed dialogs → CRM records"). */
const episodeSettingsEntries = {
  episodesEnabled: v.optional(v.boolean('episodesEnabled must be true or false')),
  episodeEntity: v.optional(v.picklist(EPISODE_ENTITIES, `episodeEntity must be one of: ${EPISODE_ENTITIES.join(', ')}`)),
  dealCategoryId: v.optional(
    v.nullable(v.pipe(v.number('dealCategoryId must be a number'), v.integer('dealCategoryId must be a whole number'), v.minValue(0, 'dealCategoryId must not be negative'))),
  ),
  dealStageId: v.optional(v.nullable(v.pipe(v.string('dealStageId must be text'), v.trim(), v.regex(STATUS_ID, 'dealStageId must be a stage id such as NEW or C3:NEW')))),
  sourceId: v.optional(v.nullable(v.pipe(v.string('sourceId must be text'), v.trim(), v.regex(STATUS_ID, 'sourceId must be a source id such as OTHER or WEBFORM')))),
  fallbackResponsibleId: v.optional(v.nullable(positiveId('fallbackResponsibleId'))),
  matchOrder: v.optional(
    v.pipe(
      v.array(v.picklist(DEFAULT_MATCH_ORDER, `matchOrder items must be ${DEFAULT_MATCH_ORDER.join(', ')}`), 'matchOrder must be a list'),
      v.check(
        (order) => order.length === DEFAULT_MATCH_ORDER.length && new Set(order).size === order.length,
        `matchOrder must name each of ${DEFAULT_MATCH_ORDER.join(', ')} once`,
      ),
    ),
  ),
  gapLookbackDays: v.optional(
    v.pipe(
      v.number('gapLookbackDays must be a number'),
      v.integer('gapLookbackDays must be a whole number'),
      v.minValue(1, 'gapLookbackDays must be 1 to 30'),
      v.maxValue(30, 'gapLookbackDays must be 1 to 30'),
    ),
  ),
  transcript: v.optional(v.boolean('transcript must be true or false')),
  tagFilterMode: v.optional(v.picklist(TAG_FILTER_MODES, `tagFilterMode must be one of: ${TAG_FILTER_MODES.join(', ')}`)),
  tagFilterTags: v.optional(
    v.pipe(v.array(positiveId('tagFilterTags items'), 'tagFilterTags must be a list of Chat2Desk tag ids'), v.maxLength(100, 'tagFilterTags has more than 100 tags')),
  ),
  extraFields: v.optional(
    v.pipe(
      v.array(
        v.strictObject(
          {
            source: v.pipe(v.string('extraFields source must be text'), v.regex(EXTRA_FIELD_SOURCE, 'extraFields source must be client.<field> or client.custom.<id>')),
            field: v.pipe(v.string('extraFields field must be text'), v.regex(CRM_FIELD_CODE, 'extraFields field must be a CRM field code such as COMMENTS or UF_CRM_1700000000')),
          },
          'extraFields items must be {source, field}',
        ),
        'extraFields must be a list',
      ),
      v.maxLength(50, 'extraFields has more than 50 entries'),
    ),
  ),
};

export type SettingsUpdate = v.InferOutput<ReturnType<typeof settingsUpdateSchema>>;

/** Reads stored settings, tolerating fields written by older versions. */
export function readSettings(stored: StoredSettings, defaultApiUrl: string): PortalSettings {
  const country = typeof stored.defaultCountry === 'string' && countries.has(stored.defaultCountry) ? (stored.defaultCountry as CountryCode) : null;
  return {
    chat2deskApiUrl: typeof stored.chat2deskApiUrl === 'string' ? stored.chat2deskApiUrl : defaultApiUrl,
    defaultCountry: country,
    defaultChannelId: typeof stored.defaultChannelId === 'number' ? stored.defaultChannelId : null,
    defaultTransport: typeof stored.defaultTransport === 'string' ? stored.defaultTransport : null,
    operatorMap:
      stored.operatorMap && typeof stored.operatorMap === 'object'
        ? Object.fromEntries(Object.entries(stored.operatorMap as Record<string, unknown>).filter((entry): entry is [string, number] => typeof entry[1] === 'number'))
        : {},
    cacheTtlSeconds: typeof stored.cacheTtlSeconds === 'number' ? stored.cacheTtlSeconds : DEFAULT_CACHE_TTL_SECONDS,
    // The prune reads the stored value itself (src/db/jobs.ts pruneFinished), with the same bounds.
    eventLogRetentionDays:
      Number.isInteger(stored.eventLogRetentionDays) && (stored.eventLogRetentionDays as number) >= 1 && (stored.eventLogRetentionDays as number) <= 365
        ? (stored.eventLogRetentionDays as number)
        : DEFAULT_EVENT_LOG_RETENTION_DAYS,
    ...readEpisodeSettings(stored),
    // Both off unless the admin turns them on (README "Triggers, notifications, responsible sync").
    notifyIncoming: stored.notifyIncoming === true,
    responsibleSync: stored.responsibleSync === true,
    ...readWorkspaceSettings(stored),
    integrationType: readIntegrationType(stored),
  };
}

/** The mode alone (episodes, registration and the connector read it without the rest); Chat2Desk unless the admin chose Open Channels. */
export function readIntegrationType(stored: StoredSettings): IntegrationType {
  return stored.integrationType === 'open_channels' ? 'open_channels' : 'chat2desk';
}

/** The workspace settings alone (src/dialogs/workspace.ts reads them on every request without the rest). */
export function readWorkspaceSettings(stored: StoredSettings): Pick<PortalSettings, 'workspaceUsers' | 'workspaceDepartments' | 'openLinksIn'> {
  const ids = (value: unknown) => (Array.isArray(value) ? value.filter((id): id is number => Number.isInteger(id) && id > 0) : []);
  return {
    workspaceUsers: ids(stored.workspaceUsers),
    workspaceDepartments: ids(stored.workspaceDepartments),
    // Chat2Desk unless the admin chose the app: links written before the setting existed keep opening there.
    openLinksIn: stored.openLinksIn === 'app' ? 'app' : 'chat2desk',
  };
}

const numberOr = <T>(value: unknown, fallback: T): number | T => (typeof value === 'number' && Number.isFinite(value) ? value : fallback);
const stringOr = <T>(value: unknown, fallback: T): string | T => (typeof value === 'string' ? value : fallback);

function readEpisodeSettings(
  stored: StoredSettings,
): Pick<
  PortalSettings,
  | 'episodesEnabled'
  | 'episodesEnabledAt'
  | 'episodeEntity'
  | 'dealCategoryId'
  | 'dealStageId'
  | 'sourceId'
  | 'fallbackResponsibleId'
  | 'matchOrder'
  | 'gapLookbackDays'
  | 'transcript'
  | 'tagFilterMode'
  | 'tagFilterTags'
  | 'extraFields'
> {
  const order = Array.isArray(stored.matchOrder) ? stored.matchOrder.filter((kind): kind is MatchKind => DEFAULT_MATCH_ORDER.includes(kind as MatchKind)) : [];
  return {
    episodesEnabled: stored.episodesEnabled === true,
    episodesEnabledAt: stringOr(stored.episodesEnabledAt, null),
    episodeEntity: EPISODE_ENTITIES.includes(stored.episodeEntity as EpisodeEntity) ? (stored.episodeEntity as EpisodeEntity) : 'lead',
    dealCategoryId: stored.dealCategoryId === null ? null : numberOr(stored.dealCategoryId, 0),
    dealStageId: stringOr(stored.dealStageId, null),
    sourceId: stringOr(stored.sourceId, null),
    fallbackResponsibleId: numberOr(stored.fallbackResponsibleId, null),
    matchOrder: order.length === DEFAULT_MATCH_ORDER.length && new Set(order).size === order.length ? order : [...DEFAULT_MATCH_ORDER],
    gapLookbackDays: numberOr(stored.gapLookbackDays, DEFAULT_GAP_LOOKBACK_DAYS),
    transcript: stored.transcript !== false,
    tagFilterMode: TAG_FILTER_MODES.includes(stored.tagFilterMode as TagFilterMode) ? (stored.tagFilterMode as TagFilterMode) : 'all',
    tagFilterTags: Array.isArray(stored.tagFilterTags) ? stored.tagFilterTags.filter((id): id is number => typeof id === 'number') : [],
    extraFields: Array.isArray(stored.extraFields)
      ? stored.extraFields.filter((item): item is ExtraField => typeof item === 'object' && item !== null && typeof item.source === 'string' && typeof item.field === 'string')
      : [],
  };
}
