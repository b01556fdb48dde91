import { createHash } from 'node:crypto';
import pLimit, { type LimitFunction } from 'p-limit';
import type { Chat2DeskRateStore, LearnedRate } from '../db/chat2desk-rates.js';
import type { Chat2DeskPaceStore } from '../db/upstream-budgets.js';
import { type HttpAnswer, type HttpRequest, httpRequest } from '../http-request.js';
import { backoffMs, delay } from '../rate-limit.js';
import { runSignal, stillGoing } from '../run-scope.js';
import { AdaptiveRate } from './adaptive-rate.js';
import { Chat2DeskError, classifyChat2DeskError, fetchFailure } from './errors.js';

export interface Chat2DeskChannel {
  id: number;
  name: string;
  phone: string;
  transports: string[];
}

export interface Chat2DeskClient {
  id: number;
  name?: string | null;
  assigned_name?: string | null;
  phone?: string | null;
  client_phone?: string | null;
  /** A link to the client's picture (docs/protocols.md C3). */
  avatar?: string | null;
  channels?: Array<{ id: number; transports: string[] }>;
  tags?: Array<{ id: number; label: string }>;
}

export interface Chat2DeskMessage {
  id: number;
  type?: string;
  text?: string | null;
  /** "2026-01-29T06:14:41 UTC" (docs/protocols.md C1). */
  created?: string | null;
  transport?: string;
  channel_id?: number;
  client_id?: number;
  dialog_id?: number;
  request_id?: number;
  operator_id?: number | null;
  external_id?: string | null;
  extra_data?: Record<string, unknown> | null;
}

export interface Chat2DeskDialog {
  id: number;
  state: string;
  begin?: string | null;
  end?: string | null;
  operator_id?: number | null;
  last_request_id?: number | null;
  messages?: number | null;
  last_message?: (Chat2DeskMessage & { text?: string | null; created?: string | null }) | null;
}

export interface Chat2DeskOperator {
  id: number;
  email?: string | null;
  first_name?: string | null;
  last_name?: string | null;
  role?: string | null;
  online?: number | null;
}

export interface Chat2DeskTag {
  id: number;
  label: string;
  description?: string | null;
  group_id?: number | null;
  group_name?: string | null;
}

export interface Chat2DeskWebhook {
  id: number;
  name?: string;
  url: string | null;
  events?: string[];
  status?: string;
  errors?: Array<{ text?: string; created_at?: number | string }>;
}

export interface Chat2DeskFullMessage extends Chat2DeskMessage {
  text?: string | null;
  created?: string | null;
  attachments?: Array<{ name?: string; link?: string }> | null;
  photo?: string | null;
  video?: string | null;
  audio?: string | null;
  pdf?: string | null;
}

/** A row of GET /requests/{id}/messages (docs/protocols.md C4 Requests). */
export interface Chat2DeskRequestMessage {
  id: number;
  text?: string | null;
  type?: string;
  transport?: string;
  /** Unix seconds. */
  created?: number | null;
  clientID?: number;
  operatorID?: number | null;
  channelID?: number;
  dialogID?: number;
  photo?: string | null;
  video?: string | null;
  audio?: string | null;
  pdf?: string | null;
  attachments?: Array<{ name?: string; link?: string }> | null;
}

export interface SentMessage {
  message_id: number;
  channel_id: number;
  operator_id?: number | null;
  transport: string;
  client_id: number;
  dialog_id: number | null;
  request_id?: number | null;
}

export interface SendMessageInput {
  client_id: number;
  text?: string;
  /** A direct public link to the file; one per message (docs/protocols.md C8). */
  attachment?: string;
  /** The name the client sees for the attachment (since 2024-07-03, docs/protocols.md C8). */
  attachment_filename?: string;
  /** Sends as this operator; without it, as the dialog's operator (docs/protocols.md C2). */
  operator_id?: number;
  transport?: string;
  channel_id?: number;
  open_dialog?: boolean;
  external_id: string;
}

interface Envelope<T> {
  status?: unknown;
  data?: T;
  meta?: { total?: number; limit?: number; offset?: number };
  message?: unknown;
  errors?: unknown;
}

interface RequestOptions {
  query?: Record<string, string | number | undefined>;
  body?: unknown;
  /** Safe to repeat after a failure that may have reached Chat2Desk. POST /messages never is. */
  retry: boolean;
}

/** Limits shared by every portal that uses the same Chat2Desk account. */
export interface AccountGate {
  rate: AdaptiveRate;
  concurrency: LimitFunction;
}

/** Tries per request for transient failures (load, network, 5xx). */
const MAX_ATTEMPTS = 5;

/** Chat2Desk caps `limit` at 200 (docs/protocols.md C1 Pagination). */
export const PAGE_LIMIT = 200;

/**
 * The Chat2Desk REST API v1 for one account: raw token in Authorization (no Bearer), the body's
 * `status` decides success, limit/offset paging, backoff on 429/5xx/"requests exceeded".
 */
export class Chat2DeskApi {
  constructor(
    readonly baseUrl: string,
    private readonly token: string,
    private readonly gate: AccountGate,
    private readonly send: HttpRequest = httpRequest,
    private readonly sleep: (ms: number) => Promise<void> = delay,
  ) {}

  async apiInfo(): Promise<Record<string, unknown>> {
    return (await this.#request<Record<string, unknown>>('GET', '/companies/api_info', { retry: true })).data;
  }

  channels(): Promise<Chat2DeskChannel[]> {
    return this.#all<Chat2DeskChannel>('/channels', {});
  }

  /**
   * Clients whose `phone` is these digits, else those whose `client_phone` is: Telegram and widget
   * clients keep a pseudo-id in `phone` and the real number in `client_phone` (docs/protocols.md C3).
   */
  async clientsByPhone(phoneDigits: string): Promise<Chat2DeskClient[]> {
    for (const filter of ['phone', 'client_phone'] as const) {
      const { data } = await this.#request<Chat2DeskClient[]>('GET', '/clients', { query: { [filter]: phoneDigits, limit: PAGE_LIMIT }, retry: true });
      const matching = (data ?? []).filter((client) => client[filter] === phoneDigits);
      if (matching.length > 0) return matching;
    }
    return [];
  }

  async client(id: number): Promise<Chat2DeskClient> {
    return (await this.#request<Chat2DeskClient>('GET', `/clients/${id}`, { retry: true })).data;
  }

  /**
   * Creates the client for "write first". Repeating it is harmless: Chat2Desk refuses a second
   * client for the same phone and names the existing id, which is returned instead.
   */
  async createClient(input: { phone: string; transport: string; channel_id?: number; nickname?: string }): Promise<Chat2DeskClient> {
    try {
      return (await this.#request<Chat2DeskClient>('POST', '/clients', { body: input, retry: true })).data;
    } catch (error) {
      const existingId = error instanceof Chat2DeskError ? existingClientId(error) : undefined;
      if (existingId !== undefined) return { id: existingId };
      throw error;
    }
  }

  /** Never retried here: a lost answer may mean a sent message; the caller checks by external_id. */
  async sendMessage(input: SendMessageInput): Promise<SentMessage> {
    return (await this.#request<SentMessage>('POST', '/messages', { body: input, retry: false })).data;
  }

  /** The client's most recent outgoing messages, newest first. */
  /**
   * The client's outgoing messages, newest first, a page at a time (GET /messages, docs/protocols.md
   * C2 and C1 paging); the caller stops when it has gone back far enough. Messages sent meanwhile
   * shift the offsets down, so a message may be seen twice but none is skipped.
   */
  async *messagesToClient(clientId: number): AsyncGenerator<Chat2DeskMessage[]> {
    for (let offset = 0; ; offset += PAGE_LIMIT) {
      const { data } = await this.#request<Chat2DeskMessage[]>('GET', '/messages', {
        query: { client_id: clientId, type: 'to_client', order: 'desc', limit: PAGE_LIMIT, offset },
        retry: true,
      });
      const page = data ?? [];
      if (page.length > 0) yield page;
      if (page.length < PAGE_LIMIT) return;
    }
  }

  /** One page of the account's clients, for filling the cache in bulk. */
  async clientsPage(offset: number): Promise<{ items: Chat2DeskClient[]; total: number }> {
    const { data, meta } = await this.#request<Chat2DeskClient[]>('GET', '/clients', { query: { limit: PAGE_LIMIT, offset }, retry: true });
    return { items: data ?? [], total: meta?.total ?? Number.POSITIVE_INFINITY };
  }

  async dialogsPage(offset: number): Promise<{ items: Chat2DeskDialog[]; total: number }> {
    const { data, meta } = await this.#request<Chat2DeskDialog[]>('GET', '/dialogs', { query: { limit: PAGE_LIMIT, offset, order: 'desc' }, retry: true });
    // Without meta the page length alone says when the list ends.
    return { items: data ?? [], total: meta?.total ?? Number.POSITIVE_INFINITY };
  }

  /**
   * One page of the account's closed dialogs, most recently closed first: how episodes closed while
   * webhooks were not arriving are found (docs/protocols.md C4, an assumption; src/chat2desk/closed-episodes.ts).
   */
  async closedDialogsPage(offset: number): Promise<Chat2DeskDialog[]> {
    const { data } = await this.#request<Chat2DeskDialog[]>('GET', '/dialogs', { query: { state: 'closed', order: 'desc', limit: PAGE_LIMIT, offset }, retry: true });
    return data ?? [];
  }

  /**
   * One page of the account's dialogs, newest first, optionally of one operator or in one state
   * (GET /dialogs filters, docs/protocols.md C4; `limit` always sent, at most 200, C1): the Chat workspace's lists.
   */
  async dialogsList(filter: { operatorId?: number; state?: 'open' | 'closed'; offset: number; limit: number }): Promise<{ items: Chat2DeskDialog[]; total: number | undefined }> {
    const { data, meta } = await this.#request<Chat2DeskDialog[]>('GET', '/dialogs', {
      query: { operator_id: filter.operatorId, state: filter.state, order: 'desc', limit: Math.min(filter.limit, PAGE_LIMIT), offset: filter.offset },
      retry: true,
    });
    return { items: data ?? [], total: meta?.total };
  }

  clientDialogs(clientId: number): Promise<Chat2DeskDialog[]> {
    return this.#all<Chat2DeskDialog>(`/clients/${clientId}/dialogs`, {});
  }

  async dialog(id: number): Promise<Chat2DeskDialog> {
    return (await this.#request<Chat2DeskDialog>('GET', `/dialogs/${id}`, { retry: true })).data;
  }

  /** Transfers or opens/closes a dialog (docs/protocols.md C4 PUT /dialogs). Repeating it is harmless. */
  async updateDialog(id: number, change: { operator_id?: number; state?: 'open' | 'closed'; force_assign?: boolean }): Promise<Chat2DeskDialog> {
    return (await this.#request<Chat2DeskDialog>('PUT', `/dialogs/${id}`, { body: change, retry: true })).data;
  }

  operators(): Promise<Chat2DeskOperator[]> {
    return this.#all<Chat2DeskOperator>('/operators', {});
  }

  tags(): Promise<Chat2DeskTag[]> {
    return this.#all<Chat2DeskTag>('/tags', {});
  }

  /** Tags attach to clients and requests, not dialogs (docs/protocols.md C5). */
  async assignTags(tagIds: number[], assignee: { type: 'client' | 'request'; id: number }): Promise<void> {
    await this.#request('POST', '/tags/assign_to', { body: { tag_ids: tagIds, assignee_type: assignee.type, assignee_id: assignee.id }, retry: true });
  }

  async removeTag(tagId: number, assignee: { type: 'client' | 'request'; id: number }): Promise<void> {
    await this.#request('DELETE', `/tags/${tagId}/delete_from`, { body: assignee.type === 'client' ? { client_id: assignee.id } : { request_id: assignee.id }, retry: true });
  }

  /** Every message of a dialog, oldest first. */
  dialogMessages(dialogId: number): Promise<Chat2DeskFullMessage[]> {
    return this.#all<Chat2DeskFullMessage>('/messages', { dialog_id: dialogId, order: 'asc' });
  }

  /**
   * The messages of one request (an episode), oldest first (GET /requests/{id}/messages,
   * docs/protocols.md C4): camelCase ids, `created` in unix seconds, type in|out|system.
   */
  async requestMessages(requestId: number): Promise<Chat2DeskRequestMessage[]> {
    return (await this.#request<Chat2DeskRequestMessage[]>('GET', `/requests/${requestId}/messages`, { retry: true })).data ?? [];
  }

  /**
   * One page of a dialog's history, newest first (GET /messages?dialog_id=&order=desc&limit=&offset=,
   * docs/protocols.md C2, B18): the CRM tab shows it oldest first and pages back with "Load older".
   */
  async dialogMessagesPage(dialogId: number, page: { limit: number; offset: number }): Promise<Chat2DeskFullMessage[]> {
    const { data } = await this.#request<Chat2DeskFullMessage[]>('GET', '/messages', {
      query: { dialog_id: dialogId, order: 'desc', limit: Math.min(page.limit, PAGE_LIMIT), offset: page.offset },
      retry: true,
    });
    return data ?? [];
  }

  webhooks(): Promise<Chat2DeskWebhook[]> {
    return this.#all<Chat2DeskWebhook>('/webhooks', {});
  }

  /** Not retried: a lost answer could leave a webhook behind; the caller lists and adopts it instead. */
  async createWebhook(input: { name: string; url: string; events: string[] }): Promise<Chat2DeskWebhook> {
    return (await this.#request<Chat2DeskWebhook>('POST', '/webhooks', { body: input, retry: false })).data;
  }

  async deleteWebhook(id: number): Promise<void> {
    await this.#request('DELETE', `/webhooks/${id}`, { retry: true });
  }

  async updateWebhook(id: number, change: Record<string, unknown>): Promise<Chat2DeskWebhook> {
    return (await this.#request<Chat2DeskWebhook>('PUT', `/webhooks/${id}`, { body: change, retry: true })).data;
  }

  async #all<T>(path: string, query: Record<string, string | number>): Promise<T[]> {
    const items: T[] = [];
    for (let offset = 0; ; offset += PAGE_LIMIT) {
      const { data, meta } = await this.#request<T[]>('GET', path, { query: { ...query, limit: PAGE_LIMIT, offset }, retry: true });
      items.push(...(data ?? []));
      const total = meta?.total ?? items.length;
      if (!data || data.length < PAGE_LIMIT || items.length >= total) return items;
    }
  }

  async #request<T>(method: string, path: string, options: RequestOptions): Promise<{ data: T; meta?: Envelope<T>['meta'] }> {
    // Read here, in the caller's scope: the account's queue may run the request in another's.
    const run = runSignal();
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.gate.concurrency(() => this.#paced<T>(method, path, options, run));
      } catch (error) {
        if (!(error instanceof Chat2DeskError) || !error.transient || attempt >= MAX_ATTEMPTS) throw error;
        // A refusal for load was refused before Chat2Desk acted on it, so even a request that is
        // not safe to repeat (POST /messages) is sent again; any other failure may have reached it.
        if (!options.retry && error.kind !== 'rate_limit') throw error;
        await this.sleep(backoffMs(attempt, 500, 10_000));
      }
    }
  }

  /**
   * One attempt at the account's learned pace; its answer teaches the pace. A run stopped while it
   * waited for the account's slot or pace sends nothing (src/run-scope.ts): its job went to another
   * process, which may have sent the message already.
   */
  async #paced<T>(method: string, path: string, options: RequestOptions, run: AbortSignal | undefined): Promise<{ data: T; meta?: Envelope<T>['meta'] }> {
    await this.gate.rate.acquire();
    stillGoing(run);
    try {
      const answer = await this.#once<T>(method, path, options);
      this.gate.rate.accepted();
      return answer;
    } catch (error) {
      if (error instanceof Chat2DeskError && error.kind === 'rate_limit') this.gate.rate.refused();
      // Any other answer from Chat2Desk (a validation error, not found) still shows the pace was accepted.
      else if (error instanceof Chat2DeskError && error.kind !== 'unavailable') this.gate.rate.accepted();
      throw error;
    }
  }

  async #once<T>(method: string, path: string, options: RequestOptions): Promise<{ data: T; meta?: Envelope<T>['meta'] }> {
    const url = new URL(`${this.baseUrl}${path}`);
    for (const [key, value] of Object.entries(options.query ?? {})) if (value !== undefined) url.searchParams.set(key, String(value));
    const label = `${method} ${path}`;
    let response: HttpAnswer;
    let text: string;
    try {
      response = await this.send(url, {
        method,
        headers: {
          authorization: this.token,
          accept: 'application/json',
          ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
        timeoutMs: 30_000,
      });
      text = await response.text();
    } catch (error) {
      throw fetchFailure(error, label);
    }
    let body: Envelope<T>;
    try {
      body = JSON.parse(text) as Envelope<T>;
    } catch {
      const kind = response.status === 429 ? 'rate_limit' : response.status >= 500 || response.ok ? 'unavailable' : classifyChat2DeskError(response.status, '', undefined);
      throw new Chat2DeskError(kind, `HTTP ${response.status} with a body that is not JSON`, response.status, undefined, label);
    }
    if (body.status === 'success') return { data: body.data as T, meta: body.meta };
    const message = typeof body.message === 'string' && body.message ? body.message : `HTTP ${response.status}`;
    throw new Chat2DeskError(classifyChat2DeskError(response.status, message, body.errors), message, response.status, body.errors, label);
  }
}

/** `errors.client = ["…already exist…", "{\"id\":N}"]` (docs/protocols.md C3 POST /clients). */
function existingClientId(error: Chat2DeskError): number | undefined {
  if (!error.texts.some((text) => /already exist/i.test(text))) return undefined;
  for (const text of error.texts) {
    const match = /"id"\s*:\s*(\d+)/.exec(text);
    if (match) return Number(match[1]);
  }
  return undefined;
}

/** Names a Chat2Desk account (host + token) without revealing the token; the cache is keyed by it. */
export function accountKey(baseUrl: string, token: string): string {
  return createHash('sha256').update(`${baseUrl}\n${token}`).digest('base64url').slice(0, 32);
}

/** Rate limits of the Chat2Desk client per account (see src/config.ts). */
export interface Chat2DeskLimits {
  /** Where an account without a learned rate starts. */
  requestsPerMinute: number;
  /** The most the rate is allowed to grow to while probing. */
  maxRequestsPerMinute: number;
  /** The least it is cut to, however often Chat2Desk refuses. */
  minRequestsPerMinute: number;
  concurrency: number;
}

/**
 * Hands out one API object per (host, token), so portals sharing an account share its limits, and
 * keeps each account's learned rate in the store.
 */
export class Chat2DeskAccounts {
  /** Per account; a promise, so that callers asking at once while the learned rate is read share one gate. */
  readonly #gates = new Map<string, Promise<AccountGate>>();
  /** Saves of learned rates still being written, so that shutdown can wait for them. */
  readonly #saving = new Set<Promise<void>>();

  constructor(
    private readonly limits: Chat2DeskLimits,
    private readonly rates: Chat2DeskRateStore,
    private readonly send: HttpRequest = httpRequest,
    /** Between retries of a transient failure (not the pacing, which waits real time by design). */
    private readonly retrySleep: (ms: number) => Promise<void> = delay,
    /** Several processes share the database (PostgreSQL): each account's pace and learned rate live there. */
    private readonly pace?: Chat2DeskPaceStore,
  ) {}

  async api(baseUrl: string, token: string): Promise<Chat2DeskApi> {
    const key = accountKey(baseUrl, token);
    let gate = this.#gates.get(key);
    if (!gate) {
      gate = this.#openGate(key);
      this.#gates.set(key, gate);
      // A failed read of the learned rate is not kept: the next caller reads again.
      gate.catch(() => this.#gates.delete(key));
    }
    return new Chat2DeskApi(baseUrl, token, await gate, this.send, this.retrySleep);
  }

  /** Stores what every account learned since its last save; called at shutdown. */
  async flush(): Promise<void> {
    for (const gate of this.#gates.values()) (await gate.catch(() => undefined))?.rate.flush();
    await Promise.all(this.#saving);
  }

  async #openGate(key: string): Promise<AccountGate> {
    const start = (await this.rates.get(key)) ?? { perMinute: this.limits.requestsPerMinute, limitPerMinute: null };
    const { pace } = this;
    if (pace) {
      // The row is the account's shared pace: every take writes the rate, so nothing is saved apart.
      await pace.open(key, start);
      return {
        rate: new AdaptiveRate({
          start,
          floorPerMinute: this.limits.minRequestsPerMinute,
          ceilingPerMinute: this.limits.maxRequestsPerMinute,
          shared: { take: (report) => pace.take(key, report), cut: (cut) => pace.cut(key, cut) },
        }),
        concurrency: pLimit(this.limits.concurrency),
      };
    }
    return {
      rate: new AdaptiveRate({
        start,
        floorPerMinute: this.limits.minRequestsPerMinute,
        ceilingPerMinute: this.limits.maxRequestsPerMinute,
        onLearned: (learned) => this.#save(key, learned),
      }),
      concurrency: pLimit(this.limits.concurrency),
    };
  }

  /**
   * A lost save costs only a slower start after a restart (the configured rate again), so it is not
   * allowed to fail the request that taught the rate.
   */
  #save(key: string, learned: LearnedRate): void {
    const saving: Promise<void> = this.rates
      .save(key, learned)
      .catch(() => undefined)
      .finally(() => this.#saving.delete(saving));
    this.#saving.add(saving);
  }
}
