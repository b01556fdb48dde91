import { randomUUID } from 'node:crypto';
import qs from 'qs';
import { type RateLimiterAbstract, RateLimiterRes } from 'rate-limiter-flexible';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { PortalStore } from '../db/portals.js';
import type { RestBudgetStore } from '../db/upstream-budgets.js';
import { type HttpAnswer, type HttpRequest, failedBeforeSending, httpRequest } from '../http-request.js';
import { type Limiters, memoryLimiters } from '../db/rate-limiters.js';
import { type BucketPriority, LeakyBucket, backoffMs, delay } from '../rate-limit.js';
import type { BatchCommandError } from './batch-errors.js';
import { Bitrix24Error, Bitrix24TransportError, OAuthError, PortalUnavailableError } from './errors.js';
import type { OAuthServer } from './oauth.js';
import { phpMap } from './values.js';
import { runSignal, stillGoing } from '../run-scope.js';

export interface CallOptions {
  /** Repeating the call is harmless (reads, event.send, ensure-style registration). Only then is a
   *  call retried after a network failure or a 5xx, when it may already have run. */
  idempotent?: boolean;
  /** `check` waits behind robot work for the portal's bucket (src/rate-limit.ts); `work` by default. */
  priority?: BucketPriority;
  /**
   * Runs once, after the portal's bucket let the call through and right before its first request is
   * written (src/open-channels/inbound-sends.ts marks its messages dispatched here, so a call still
   * waiting for the bucket when the process dies counts as never sent). May change `params`; an
   * error from it is the call's, and nothing is sent.
   */
  beforeSend?: () => Promise<void>;
}

export interface BatchCommand {
  key: string;
  method: string;
  params?: Record<string, unknown>;
}

export interface BatchOutcome {
  results: Record<string, unknown>;
  errors: Record<string, BatchCommandError>;
}

export interface Bitrix24RestOptions {
  portals: PortalStore;
  oauth: OAuthServer;
  log: Logger;
  clock: Clock;
  ratePerSecond: number;
  burst: number;
  /** The HTTP transport (node:http); a test's fetch comes through `viaFetch`. */
  fetch?: HttpRequest;
  /** How many times a call refused for load (503/429) is retried before giving up. */
  maxLoadRetries?: number;
  sleep?: (ms: number) => Promise<void>;
  /** The part of a portal's rate and burst that checks of callers (`callAs`) may take; 0.2 by default. */
  callerCheckShare?: number;
  /** The caps' store: in memory on SQLite, in the database on PostgreSQL (src/db/rate-limiters.ts); in memory when absent. */
  limiters?: Limiters;
  /**
   * Several processes share the database (PostgreSQL): the portals' budgets are taken in it, and a
   * token is refreshed only under the portal's refresh lease. Absent on SQLite (one process).
   */
  shared?: { budgets: RestBudgetStore };
}

interface Envelope {
  result?: unknown;
  error?: unknown;
  error_description?: unknown;
  time?: { operating_reset_at?: number };
}

/**
 * A caller check (`callAs`) was refused without asking the portal: unverified callers have used
 * their share of the portal's REST budget. Nothing was sent.
 */
export class CallerChecksExhausted extends Error {
  override name = 'CallerChecksExhausted';
  constructor(
    readonly memberId: string,
    readonly retryAfterSeconds: number,
  ) {
    super(`Too many unverified requests for this portal; retry in ${retryAfterSeconds} s`);
  }
}

/**
 * How long a refresh lease lasts: beyond the authorization server's timeout (src/bitrix24/oauth.ts,
 * 20 s) and the store's write. The holder renews it every REFRESH_LEASE_RENEW_MS while its refresh
 * runs (a wait for a pooled connection has no timeout), so a live holder never loses it mid-refresh;
 * a dead one's runs out within this long. Both by the database's clock (src/db/portals.ts).
 */
const REFRESH_LEASE_MS = 30_000;
const REFRESH_LEASE_RENEW_MS = 10_000;
/** How often a process waiting for another's refresh reads the stored generation again. */
const REFRESH_WAIT_POLL_MS = 50;

/** Bitrix24 caps a batch at 50 commands (docs/protocols.md B3 batch). */
export const BATCH_LIMIT = 50;

/**
 * REST calls to a portal with the installer's tokens: one leaky bucket per portal, backoff on
 * QUERY_LIMIT_EXCEEDED / OPERATION_TIME_LIMIT, a single refresh at a time on expired_token with the
 * new pair persisted before it is used, and no blind retry of calls that may have run.
 */
export class Bitrix24Rest {
  readonly #buckets = new Map<string, LeakyBucket>();
  /** Per portal: how many caller checks may start; never waits, so a flood is refused at once. */
  readonly #callerChecks: RateLimiterAbstract;
  readonly #refreshing = new Map<string, Promise<void>>();
  /** Names this process in the portals' refresh leases (src/db/portals.ts takeRefreshLease). */
  readonly #leaseOwner = randomUUID();
  /** Per portal+method: when the operating-time block lifts, from the last answer's time.operating_reset_at. */
  readonly #operatingResetAt = new Map<string, number>();
  readonly #fetch: HttpRequest;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #maxLoadRetries: number;
  /** HTTP requests sent, per portal: the benchmark reads it. */
  readonly requestsSent = new Map<string, number>();

  constructor(private readonly options: Bitrix24RestOptions) {
    this.#fetch = options.fetch ?? httpRequest;
    this.#sleep = options.sleep ?? delay;
    this.#maxLoadRetries = options.maxLoadRetries ?? 8;
    // Bitrix24 keeps one bucket per portal (docs/protocols.md B4), so a bucket of our own for
    // callers would only earn 503s: their checks get a share of the same rate and burst instead,
    // counted here, and then wait behind robot work in the portal's bucket. At least a few at once
    // even on a small bucket, so an install and its admin's first settings requests are not refused.
    const share = options.callerCheckShare ?? 0.2;
    const points = Math.max(3, Math.floor(options.burst * share));
    this.#callerChecks = (options.limiters ?? memoryLimiters())({ keyPrefix: 'caller-checks', points, duration: points / (options.ratePerSecond * share) });
  }

  async call<T = unknown>(memberId: string, method: string, params: Record<string, unknown> = {}, options: CallOptions = {}): Promise<T> {
    let loadRetries = 0;
    let transportRetries = 0;
    let refreshed = false;
    let { beforeSend } = options;
    const run = runSignal();
    for (;;) {
      const tokens = await this.options.portals.tokens(memberId);
      if (!tokens) throw new PortalUnavailableError(memberId, (await this.options.portals.get(memberId))?.status === 'reauth_required' ? 'reauth_required' : 'not_installed');
      await this.#bucket(memberId).acquire(options.priority);
      if (beforeSend) {
        const ready = beforeSend;
        beforeSend = undefined;
        await ready();
      }
      // A run stopped while it waited sends nothing: its job went to another process (src/run-scope.ts).
      stillGoing(run);
      try {
        return (await this.#send(memberId, tokens.clientEndpoint, tokens.accessToken, method, params)) as T;
      } catch (error) {
        if (error instanceof Bitrix24Error && error.expiredToken && !refreshed) {
          refreshed = true;
          await this.#refresh(memberId, tokens.generation);
          continue;
        }
        if (error instanceof Bitrix24Error && error.refusedForLoad && loadRetries < this.#maxLoadRetries) {
          loadRetries += 1;
          await this.#sleep(this.#loadDelay(memberId, method, error, loadRetries));
          continue;
        }
        if (options.idempotent && isMaybeExecuted(error) && transportRetries < 3) {
          transportRetries += 1;
          await this.#sleep(backoffMs(transportRetries, 500, 5_000));
          continue;
        }
        throw error;
      }
    }
  }

  /** Runs commands through `batch`, 50 at a time; per-command errors come back, never thrown. */
  async batch(memberId: string, commands: BatchCommand[], options: CallOptions & { halt?: boolean } = {}): Promise<BatchOutcome> {
    const outcome: BatchOutcome = { results: {}, errors: {} };
    // Bitrix24 replaces `$result[key]…` in a batched command's values with another command's result
    // (docs/protocols.md B3 batch). Text from clients (a name, a message) could contain that, so such a
    // command goes alone, where its values are taken as written.
    const alone = commands.filter((command) => mentionsBatchResult(command.params));
    for (const command of alone) {
      try {
        outcome.results[command.key] = await this.call(memberId, command.method, command.params ?? {}, options);
      } catch (error) {
        if (!(error instanceof Bitrix24Error)) throw error;
        outcome.errors[command.key] = { error: error.code, error_description: error.description };
      }
    }
    const batched = alone.length ? commands.filter((command) => !alone.includes(command)) : commands;
    for (let start = 0; start < batched.length; start += BATCH_LIMIT) {
      const chunk = batched.slice(start, start + BATCH_LIMIT);
      const cmd = Object.fromEntries(chunk.map((command) => [command.key, encodeCommand(command)]));
      const answer = await this.call<{ result?: unknown; result_error?: unknown }>(memberId, 'batch', { halt: options.halt ? 1 : 0, cmd }, options);
      Object.assign(outcome.results, phpMap(answer.result));
      Object.assign(outcome.errors, phpMap(answer.result_error));
    }
    return outcome;
  }

  /**
   * A call with somebody else's token (a user proving who they are); no refresh, no retry. Anyone
   * who knows the member id can ask for one, so it takes only the callers' share of the portal's
   * budget and goes after robot work; beyond the share it throws CallerChecksExhausted at once.
   */
  async callAs<T = unknown>(
    memberId: string,
    clientEndpoint: string,
    accessToken: string,
    method: string,
    params: Record<string, unknown> = {},
    options: { provenToken?: boolean } = {},
  ): Promise<T> {
    try {
      // A token the authorization server already proved ours and this portal's (an install, itself
      // bounded by its attempt limits) does not take the share: bogus bearer tokens that used it up
      // must not lock out a reinstall, which Bitrix24 does not retry.
      if (!options.provenToken) await this.#callerChecks.consume(memberId);
    } catch (refusal) {
      if (refusal instanceof RateLimiterRes) throw new CallerChecksExhausted(memberId, Math.max(1, Math.ceil(refusal.msBeforeNext / 1000)));
      throw refusal;
    }
    await this.#bucket(memberId).acquire('check');
    return (await this.#send(memberId, clientEndpoint, accessToken, method, params)) as T;
  }

  /**
   * A file the portal serves to the app (an Open Channel operator's file, docs/protocols.md B23):
   * `pathAndQuery` is fetched from the portal's own address with the app's access token (refreshed
   * once if expired), never from a host an event names; more than `maxBytes` is refused unread.
   */
  async download(memberId: string, pathAndQuery: string, maxBytes: number): Promise<{ bytes: Buffer; contentType: string }> {
    let refreshed = false;
    for (;;) {
      const tokens = await this.options.portals.tokens(memberId);
      if (!tokens) throw new PortalUnavailableError(memberId, (await this.options.portals.get(memberId))?.status === 'reauth_required' ? 'reauth_required' : 'not_installed');
      await this.#bucket(memberId).acquire('work');
      const url = new URL(pathAndQuery, new URL(tokens.clientEndpoint).origin);
      url.searchParams.set('auth', tokens.accessToken);
      let response: Response;
      try {
        response = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(65_000) });
      } catch (error) {
        throw new Bitrix24TransportError('download', error);
      }
      if (!response.ok) {
        const text = await response.text().catch(() => '');
        let body: Envelope = {};
        try {
          body = JSON.parse(text) as Envelope;
        } catch {
          // Not JSON: the status says it.
        }
        const description = typeof body.error_description === 'string' ? body.error_description : `HTTP ${response.status}`;
        const error = new Bitrix24Error('download', typeof body.error === 'string' ? body.error : '', description, response.status);
        if (error.expiredToken && !refreshed) {
          refreshed = true;
          await this.#refresh(memberId, tokens.generation);
          continue;
        }
        throw error;
      }
      return { bytes: await readAtMost(response, maxBytes), contentType: response.headers.get('content-type') ?? '' };
    }
  }

  #bucket(memberId: string): LeakyBucket {
    let bucket = this.#buckets.get(memberId);
    if (!bucket) {
      // One slot of headroom: requests released on time can still arrive bunched (network jitter).
      const { ratePerSecond } = this.options;
      const burst = Math.max(1, this.options.burst - 1);
      const budgets = this.options.shared?.budgets;
      bucket = new LeakyBucket(
        ratePerSecond,
        burst,
        undefined,
        undefined,
        budgets && { take: () => budgets.take(memberId, ratePerSecond, burst), fill: () => budgets.fill(memberId, burst) },
      );
      this.#buckets.set(memberId, bucket);
    }
    return bucket;
  }

  #loadDelay(memberId: string, method: string, error: Bitrix24Error, attempt: number): number {
    if (error.code === 'OPERATION_TIME_LIMIT') {
      const resetAt = this.#operatingResetAt.get(`${memberId} ${method}`);
      const untilReset = resetAt ? resetAt * 1000 - this.options.clock.now() : 0;
      if (untilReset > 0) return Math.min(untilReset + 250, 60_000);
      return backoffMs(attempt, 2_000, 60_000);
    }
    this.#bucket(memberId).saturate();
    return backoffMs(attempt, 1_000, 30_000);
  }

  async #refresh(memberId: string, failedGeneration: number): Promise<void> {
    const current = await this.options.portals.tokens(memberId);
    if (current && current.generation !== failedGeneration) return; // another caller refreshed already
    let pending = this.#refreshing.get(memberId);
    if (!pending) {
      pending = (this.options.shared ? this.#refreshUnderLease(memberId, failedGeneration) : this.#doRefresh(memberId)).finally(() => this.#refreshing.delete(memberId));
      this.#refreshing.set(memberId, pending);
    }
    await pending;
  }

  /**
   * Several processes: the refresh token is sent only by the holder of the portal's refresh lease.
   * The others wait until the stored pair's generation changes (the holder stored the new pair) and
   * use that pair; a holder that died leaves a lease that runs out, and the next process takes it.
   */
  async #refreshUnderLease(memberId: string, failedGeneration: number): Promise<void> {
    const { portals, log } = this.options;
    for (;;) {
      const tokens = await portals.tokens(memberId);
      if (!tokens) throw new PortalUnavailableError(memberId, (await portals.get(memberId))?.status === 'reauth_required' ? 'reauth_required' : 'not_installed');
      if (tokens.generation !== failedGeneration) return;
      if (await portals.takeRefreshLease(memberId, this.#leaseOwner, tokens.generation, REFRESH_LEASE_MS)) {
        let refreshing = true;
        const renewal = setInterval(() => {
          portals.renewRefreshLease(memberId, this.#leaseOwner, REFRESH_LEASE_MS).then(
            (kept) => kept || !refreshing || log.warn({ memberId }, 'bitrix24 refresh lease lost while refreshing'),
            (error: unknown) => log.warn({ memberId, err: error instanceof Error ? error.message : String(error) }, 'bitrix24 refresh lease not renewed'),
          );
        }, REFRESH_LEASE_RENEW_MS).unref();
        try {
          await this.#doRefresh(memberId);
        } finally {
          refreshing = false;
          clearInterval(renewal);
          // Stored pairs clear the lease with them; a failed refresh gives it back at once.
          await portals.releaseRefreshLease(memberId, this.#leaseOwner).catch(() => undefined);
        }
        return;
      }
      await delay(REFRESH_WAIT_POLL_MS);
    }
  }

  async #doRefresh(memberId: string): Promise<void> {
    const tokens = await this.options.portals.tokens(memberId);
    if (!tokens) throw new PortalUnavailableError(memberId, 'not_installed');
    try {
      const fresh = await this.options.oauth.refresh(tokens.refreshToken);
      // Stored only over the pair it replaces: another process that refreshed first keeps its pair.
      const stored = await this.options.portals.saveRefreshedTokens(
        memberId,
        {
          accessToken: fresh.accessToken,
          refreshToken: fresh.refreshToken,
          expiresAt: fresh.expiresAt,
          clientEndpoint: withSlash(fresh.clientEndpoint ?? tokens.clientEndpoint),
        },
        tokens.generation,
      );
      if (stored !== undefined) this.options.log.info({ memberId }, 'bitrix24 tokens refreshed');
    } catch (error) {
      if (error instanceof OAuthError && (error.code === 'invalid_grant' || error.code === 'invalid_client')) {
        // A refresh token already used by another refresh (another process) is refused too: only a
        // refusal of the pair still stored, with no other process holding the refresh lease, means
        // the portal must be authorised again.
        if (!(await this.options.portals.markReauthRequired(memberId, tokens.generation, this.#leaseOwner))) return;
        this.options.log.error({ memberId, code: error.code }, 'bitrix24 refused the refresh token; the portal must reinstall');
        throw new PortalUnavailableError(memberId, 'reauth_required', error.code);
      }
      throw error;
    }
  }

  async #send(memberId: string, clientEndpoint: string, accessToken: string, method: string, params: Record<string, unknown>): Promise<unknown> {
    this.requestsSent.set(memberId, (this.requestsSent.get(memberId) ?? 0) + 1);
    let url = `${withSlash(clientEndpoint)}${method}`;
    let response: HttpAnswer;
    let text: string;
    try {
      const init = {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json', 'user-agent': 'chat2desk-bitrix24' },
        body: JSON.stringify({ ...params, auth: accessToken }),
        redirect: 'manual' as const,
        timeoutMs: 65_000, // Bitrix24 cloud ends a request at 60 s (docs/protocols.md B3)
      };
      response = await this.#fetch(url, init);
      // A renamed portal answers 302; a POST must be repeated at the new address, not turned into a GET.
      const location = response.headers.get('location');
      if ((response.status === 301 || response.status === 302 || response.status === 307 || response.status === 308) && location) {
        url = new URL(location, url).toString();
        response = await this.#fetch(url, init);
      }
      text = await response.text();
    } catch (error) {
      throw new Bitrix24TransportError(method, error, failedBeforeSending(error));
    }
    let body: Envelope;
    try {
      body = JSON.parse(text) as Envelope;
    } catch {
      if (response.status >= 500) throw new Bitrix24Error(method, 'INTERNAL_SERVER_ERROR', `HTTP ${response.status}`, response.status);
      throw new Bitrix24TransportError(method, new Error(`HTTP ${response.status}, not JSON`));
    }
    if (body.time?.operating_reset_at) this.#operatingResetAt.set(`${memberId} ${method}`, body.time.operating_reset_at);
    if (body.error !== undefined || !response.ok) {
      throw new Bitrix24Error(
        method,
        typeof body.error === 'string' ? body.error : '',
        typeof body.error_description === 'string' ? body.error_description : `HTTP ${response.status}`,
        response.status,
      );
    }
    return body.result;
  }
}

/** A download larger than the server takes (UPLOAD_MAX_BYTES): nothing of it is kept. */
export class DownloadTooLargeError extends Error {
  override name = 'DownloadTooLargeError';
}

async function readAtMost(response: Response, maxBytes: number): Promise<Buffer> {
  if (Number(response.headers.get('content-length') ?? 0) > maxBytes) {
    await response.body?.cancel();
    throw new DownloadTooLargeError(`the file is larger than ${maxBytes} bytes`);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of response.body ?? []) {
    total += chunk.byteLength;
    if (total > maxBytes) throw new DownloadTooLargeError(`the file is larger than ${maxBytes} bytes`);
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}

function isMaybeExecuted(error: unknown): boolean {
  return error instanceof Bitrix24TransportError || (error instanceof Bitrix24Error && error.httpStatus >= 500 && !error.refusedForLoad);
}

/** Whether any text in a command's values is a batch reference (`$result[`, `$result_total[`, …). */
function mentionsBatchResult(value: unknown): boolean {
  if (typeof value === 'string') return BATCH_REFERENCE.test(value);
  if (Array.isArray(value)) return value.some(mentionsBatchResult);
  if (value && typeof value === 'object') return Object.values(value).some(mentionsBatchResult);
  return false;
}
const BATCH_REFERENCE = /\$result(?:_error|_total|_next|_time)?\[/;

/** A batch command is `method?query`, the query built like PHP's http_build_query (docs/protocols.md B3 batch). */
function encodeCommand(command: BatchCommand): string {
  const query = qs.stringify(command.params ?? {}, { arrayFormat: 'indices' });
  return query ? `${command.method}?${query}` : command.method;
}

function withSlash(url: string): string {
  return url.endsWith('/') ? url : `${url}/`;
}
