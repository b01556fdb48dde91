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
}

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
  });
}

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
  };
}
