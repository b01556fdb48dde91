import * as v from 'valibot';
import { parseTrustedProxy } from './client-address.js';

/**
 * The environment, parsed once at start. A bad value stops the server with a message naming the
 * variable; a missing production value only produces a warning, so `npm start` with no environment
 * comes up on the SQLite default for a first look.
 */

const port = v.pipe(
  v.optional(v.string(), '3000'),
  v.transform(Number),
  v.integer('must be an integer'),
  v.minValue(0, 'must be a port number'),
  v.maxValue(65535, 'must be a port number'),
);

const httpUrl = (fallback?: string) =>
  v.pipe(
    fallback === undefined ? v.string() : v.optional(v.string(), fallback),
    v.url('must be an absolute URL'),
    v.check((value) => /^https?:\/\//.test(value), 'must be an http(s) URL'),
    v.transform((value) => value.replace(/\/+$/, '')),
  );

const positiveNumber = (fallback: string) => v.pipe(v.optional(v.string(), fallback), v.transform(Number), v.number(), v.minValue(0.001, 'must be positive'));

const positiveInteger = (fallback: string) => v.pipe(v.optional(v.string(), fallback), v.transform(Number), v.integer('must be an integer'), v.minValue(1, 'must be at least 1'));

const EnvSchema = v.object({
  PORT: port,
  PUBLIC_URL: v.optional(httpUrl()),
  DATABASE_URL: v.pipe(
    v.optional(v.string(), 'file:./data/app.db'),
    v.check(
      (value) => value.startsWith('file:') || value === ':memory:' || /^postgres(ql)?:\/\/./.test(value),
      'must be a SQLite URL such as file:./data/app.db or a PostgreSQL URL such as postgres://user:password@host/database',
    ),
  ),
  B24_CLIENT_ID: v.optional(v.pipe(v.string(), v.minLength(1))),
  B24_CLIENT_SECRET: v.optional(v.pipe(v.string(), v.minLength(1))),
  B24_OAUTH_URL: httpUrl('https://oauth.bitrix.info'),
  /** Leaky bucket of the Bitrix24 plan: 2/s burst 50 on every plan but Enterprise (5/s, 250). */
  B24_RATE_PER_SECOND: positiveNumber('2'),
  B24_RATE_BURST: positiveInteger('50'),
  CHAT2DESK_API_URL: httpUrl('https://api.chat2desk.com/v1'),
  /** Regional Chat2Desk hosts a portal admin may pick; the operator of this server controls the list. */
  CHAT2DESK_ALLOWED_API_URLS: v.optional(v.string()),
  /**
   * Chat2Desk publishes no rate-limit figure (docs/protocols.md C1): the rate an account starts
   * from until the client has learned its own (src/chat2desk/adaptive-rate.ts).
   */
  CHAT2DESK_REQUESTS_PER_MINUTE: positiveInteger('300'),
  /** The most the learned rate may grow to; default the larger of 6000 and the starting rate. */
  CHAT2DESK_MAX_REQUESTS_PER_MINUTE: v.optional(v.pipe(v.string(), v.transform(Number), v.integer('must be an integer'), v.minValue(1, 'must be at least 1'))),
  CHAT2DESK_CONCURRENCY: positiveInteger('4'),
  APP_SECRET: v.optional(v.pipe(v.string(), v.minLength(16, 'must be at least 16 characters'))),
  LOG_LEVEL: v.optional(v.picklist(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']), 'info'),
  PORTAL_CONCURRENCY: positiveInteger('8'),
  /**
   * A running job's lease, renewed every third of it: a process that dies (kill -9, a lost machine)
   * has its jobs taken over by the other processes once it runs out (docs/multi-process.md).
   */
  JOB_LEASE_SECONDS: positiveInteger('45'),
  ROBOT_DEADLINE_SECONDS: positiveInteger('3600'),
  MAX_BODY_BYTES: positiveInteger('262144'),
  /** Robot calls of one portal stored while Bitrix24 has not confirmed them yet; more are refused (issue 6). */
  MAX_UNCONFIRMED_CALLS_PER_PORTAL: positiveInteger('2000'),
  /** How often the Chat2Desk webhooks are checked for being disabled (then re-enabled and reconciled). */
  WEBHOOK_CHECK_SECONDS: positiveInteger('600'),
  /** Install requests (each costs an app.info call) per minute from one TCP peer and in all. Behind a
   *  reverse proxy every request has the proxy's address, so the operator must be able to raise it. */
  INSTALL_ATTEMPTS_PER_ADDRESS_PER_MINUTE: positiveInteger('30'),
  INSTALL_ATTEMPTS_PER_MINUTE: positiveInteger('300'),
  /** Live update streams open at once per portal and per user (src/live/hub.ts LiveLimits says why). */
  LIVE_STREAMS_PER_PORTAL: positiveInteger('1000'),
  LIVE_STREAMS_PER_USER: positiveInteger('8'),
  /** How long a file uploaded for a dialog action can be fetched at its link (src/dialogs/files.ts). */
  FILE_LINK_HOURS: positiveInteger('24'),
  /** The largest file a dialog action takes; only POST /api/files accepts a body this large. */
  UPLOAD_MAX_BYTES: positiveInteger(String(20 * 1024 * 1024)),
  /** Open Channels: how often a held inbound message (no line takes it, or waiting for an operator) looks again (src/jobs/kinds/ol-inbound.ts). */
  OPEN_CHANNELS_HOLD_RECHECK_SECONDS: positiveInteger('30'),
  /** Open Channels: inbound messages sent at once per portal (one per conversation at most); they share send.messages calls (src/open-channels/inbound-sends.ts). */
  OPEN_CHANNELS_INBOUND_CONCURRENCY: positiveInteger('100'),
  /**
   * Host names (comma-separated, as written in links) whose links are fetched over http and on
   * private addresses (src/outside-fetch.ts): a local Chat2Desk stand-in or the tests' fakes. Unset in
   * production: attachment links are then fetched only over https from public addresses.
   */
  OUTSIDE_FETCH_ALLOW_HOSTS: v.optional(v.string(), ''),
  /** CSP frame-ancestors of the app page; default: the portal's own host (docs/protocols.md B13). */
  /** Our reverse proxies (IPs and CIDR ranges, comma-separated): only from them is X-Forwarded-For believed (src/client-address.ts). */
  TRUSTED_PROXIES: v.optional(v.string(), ''),
  FRAME_ANCESTORS: v.optional(v.pipe(v.string(), v.regex(/^[^;,\r\n]+$/, 'must be CSP sources separated by spaces, such as https://*.bitrix24.com'))),
});

export interface Config {
  port: number;
  publicUrl: string;
  /** The SQLite file (the default database); unused when `postgresUrl` is set. */
  databaseFile: string;
  /** DATABASE_URL when it names PostgreSQL (docs/multi-process.md). */
  postgresUrl?: string;
  bitrix24: {
    clientId: string | undefined;
    clientSecret: string | undefined;
    oauthUrl: string;
    ratePerSecond: number;
    rateBurst: number;
  };
  chat2desk: {
    defaultApiUrl: string;
    allowedApiUrls: string[];
    requestsPerMinute: number;
    maxRequestsPerMinute: number;
    minRequestsPerMinute: number;
    concurrency: number;
  };
  appSecret: string | undefined;
  logLevel: string;
  portalConcurrency: number;
  jobLeaseMs: number;
  robotDeadlineSeconds: number;
  maxUnconfirmedCallsPerPortal: number;
  maxBodyBytes: number;
  webhookCheckSeconds: number;
  installAttemptsPerMinute: { perAddress: number; overall: number };
  frameAncestors: string | undefined;
  live: { streamsPerPortal: number; streamsPerUser: number };
  files: { linkHours: number; uploadMaxBytes: number };
  openChannels: { holdRecheckSeconds: number; inboundConcurrency: number };
  /** Host names fetched over http and on private addresses (src/outside-fetch.ts); empty in production. */
  outsideFetchAllowHosts: string[];
  /** TRUSTED_PROXIES: the reverse proxies whose X-Forwarded-For names the client (src/client-address.ts); empty: the TCP peer is the client. */
  trustedProxies: string[];
}

/** The learned Chat2Desk rate grows no further unless CHAT2DESK_MAX_REQUESTS_PER_MINUTE says so. */
const DEFAULT_MAX_REQUESTS_PER_MINUTE = 6000;
/** However often Chat2Desk refuses, one request every ten seconds still goes out, to notice it recover. */
const MIN_REQUESTS_PER_MINUTE = 6;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ''));
  const parsed = v.safeParse(EnvSchema, present);
  if (!parsed.success) {
    const problems = parsed.issues.map((issue) => {
      const key = issue.path?.map((item) => String(item.key)).join('.') ?? '?';
      return `${key}: ${issue.message}`;
    });
    throw new ConfigError(`Invalid environment: ${problems.join('; ')}`);
  }
  const e = parsed.output;
  const allowed = (e.CHAT2DESK_ALLOWED_API_URLS ?? '')
    .split(',')
    .map((item) => item.trim().replace(/\/+$/, ''))
    .filter(Boolean);
  const maxRequestsPerMinute = e.CHAT2DESK_MAX_REQUESTS_PER_MINUTE ?? Math.max(DEFAULT_MAX_REQUESTS_PER_MINUTE, e.CHAT2DESK_REQUESTS_PER_MINUTE);
  if (maxRequestsPerMinute < e.CHAT2DESK_REQUESTS_PER_MINUTE) {
    throw new ConfigError('Invalid environment: CHAT2DESK_MAX_REQUESTS_PER_MINUTE: must be at least CHAT2DESK_REQUESTS_PER_MINUTE');
  }
  for (const url of allowed) {
    if (!/^https?:\/\/[^/]+/.test(url)) throw new ConfigError(`Invalid environment: CHAT2DESK_ALLOWED_API_URLS: ${url} is not an http(s) URL`);
  }
  const trustedProxies = e.TRUSTED_PROXIES.split(',')
    .map((proxy) => proxy.trim())
    .filter(Boolean);
  for (const proxy of trustedProxies) {
    if (!parseTrustedProxy(proxy)) throw new ConfigError(`Invalid environment: TRUSTED_PROXIES: ${proxy} is not an IP address or CIDR range such as 10.0.0.0/8`);
  }
  const postgres = /^postgres(ql)?:\/\//.test(e.DATABASE_URL);
  // Without APP_SECRET the SQLite default keeps a generated key beside its file (src/secrets.ts);
  // processes sharing a PostgreSQL database have no such place to share it.
  if (postgres && !e.APP_SECRET) {
    throw new ConfigError('Invalid environment: APP_SECRET: required when DATABASE_URL is a PostgreSQL URL (at least 16 characters, the same for every process)');
  }
  return {
    port: e.PORT,
    publicUrl: e.PUBLIC_URL ?? `http://localhost:${e.PORT}`,
    databaseFile: postgres ? '' : e.DATABASE_URL === ':memory:' ? ':memory:' : e.DATABASE_URL.slice('file:'.length),
    postgresUrl: postgres ? e.DATABASE_URL : undefined,
    bitrix24: {
      clientId: e.B24_CLIENT_ID,
      clientSecret: e.B24_CLIENT_SECRET,
      oauthUrl: e.B24_OAUTH_URL,
      ratePerSecond: e.B24_RATE_PER_SECOND,
      rateBurst: e.B24_RATE_BURST,
    },
    chat2desk: {
      defaultApiUrl: e.CHAT2DESK_API_URL,
      allowedApiUrls: [...new Set([e.CHAT2DESK_API_URL, ...allowed])],
      requestsPerMinute: e.CHAT2DESK_REQUESTS_PER_MINUTE,
      maxRequestsPerMinute,
      minRequestsPerMinute: Math.min(MIN_REQUESTS_PER_MINUTE, e.CHAT2DESK_REQUESTS_PER_MINUTE),
      concurrency: e.CHAT2DESK_CONCURRENCY,
    },
    appSecret: e.APP_SECRET,
    logLevel: e.LOG_LEVEL,
    portalConcurrency: e.PORTAL_CONCURRENCY,
    jobLeaseMs: e.JOB_LEASE_SECONDS * 1000,
    robotDeadlineSeconds: e.ROBOT_DEADLINE_SECONDS,
    maxUnconfirmedCallsPerPortal: e.MAX_UNCONFIRMED_CALLS_PER_PORTAL,
    maxBodyBytes: e.MAX_BODY_BYTES,
    webhookCheckSeconds: e.WEBHOOK_CHECK_SECONDS,
    installAttemptsPerMinute: { perAddress: e.INSTALL_ATTEMPTS_PER_ADDRESS_PER_MINUTE, overall: e.INSTALL_ATTEMPTS_PER_MINUTE },
    frameAncestors: e.FRAME_ANCESTORS,
    live: { streamsPerPortal: e.LIVE_STREAMS_PER_PORTAL, streamsPerUser: e.LIVE_STREAMS_PER_USER },
    files: { linkHours: e.FILE_LINK_HOURS, uploadMaxBytes: e.UPLOAD_MAX_BYTES },
    openChannels: { holdRecheckSeconds: e.OPEN_CHANNELS_HOLD_RECHECK_SECONDS, inboundConcurrency: e.OPEN_CHANNELS_INBOUND_CONCURRENCY },
    outsideFetchAllowHosts: e.OUTSIDE_FETCH_ALLOW_HOSTS.split(',')
      .map((host) => host.trim())
      .filter(Boolean),
    trustedProxies,
  };
}

/** What a production deployment still lacks; printed at start so a first run says it plainly. */
export function productionGaps(env: Record<string, string | undefined> = process.env): string[] {
  const gaps: string[] = [];
  if (!env.PUBLIC_URL) gaps.push('PUBLIC_URL is not set: Bitrix24 cannot reach robot handlers at http://localhost');
  else if (!env.PUBLIC_URL.startsWith('https://')) gaps.push('PUBLIC_URL is not HTTPS: Bitrix24 cloud portals require HTTPS handlers');
  if (!env.B24_CLIENT_ID || !env.B24_CLIENT_SECRET) gaps.push('B24_CLIENT_ID / B24_CLIENT_SECRET are not set: installs will be refused');
  if (!env.APP_SECRET) gaps.push('APP_SECRET is not set: a key was generated next to the database; keep it or set APP_SECRET');
  return gaps;
}
