/**
 * Contract-faithful fake of the Chat2Desk REST API v1 + webhook sender.
 *
 * Everything here follows docs/protocols.md ("protocols") and the example
 * bodies in test/fixtures/protocol-examples/chat2desk/. Section references (§N) are section CN of the
 * protocols file. Where the notes have a gap, the guess is marked GUESS and kept in one place.
 *
 * The fake is a real HTTP server (hono on node:http, 127.0.0.1, random port) so that the
 * application's HTTP client, timeouts and retry logic are exercised for real.
 */
import { createHash, createHmac } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Hono, type Context } from 'hono';
import { serve, type HttpBindings } from '@hono/node-server';

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

export interface FakeChat2DeskOptions {
  /** Valid API tokens, default ['c2d-test-token']; each token is its own company with its own state. */
  tokens?: string[];
  /** Over it → HTTP 429 {"status":"error","message":"Number of API requests exceeded"}. Default false. */
  rateLimit?: { requests: number; perMs: number } | false;
  /** Clock in ms (default Date.now); used for timestamps, rate limiting and webhook X-Timestamp. */
  now?: () => number;
  /** How long deliverWebhook waits for a receiver before recording "Timeout". Default 5000 ms. */
  webhookTimeoutMs?: number;
  /**
   * Whether GET /messages shows the external_id given to POST /messages. Default true: our
   * assumption (§2, documented for messages/inbox only); false plays a Chat2Desk that drops it.
   */
  echoExternalId?: boolean;
}

export interface C2DCall {
  method: string;
  /** Path relative to the API base, i.e. without the `/v1` prefix: '/messages', '/clients/5'. */
  path: string;
  query: Record<string, string>;
  /** Parsed JSON body; the raw string when it is not JSON; undefined when empty. */
  body: unknown;
  token: string | undefined;
  /** HTTP status answered; 0 when the socket was destroyed by a 'network' fault. */
  status: number;
  at: number;
}

export type C2DTag = { id: number; label: string; description: string; group_id: number; group_name: string };
export type C2DChannel = { id: number; name: string; phone: string; transports: string[] };

/** A request (обращение, §4): one contact episode inside a dialog. Not an API list; internal. */
export type C2DRequestRecord = {
  id: number;
  client_id: number;
  dialog_id: number;
  channel_id: number;
  tags: C2DTag[];
  created: string;
};

export interface FakeAccount {
  channels: C2DChannel[];
  operators: Array<Record<string, unknown>>;
  tags: C2DTag[];
  clients: Array<Record<string, unknown>>;
  dialogs: Array<Record<string, unknown>>;
  messages: Array<Record<string, unknown>>;
  webhooks: Array<Record<string, unknown>>;
  /** Additions beyond the required API. */
  requests: C2DRequestRecord[];
  companyId: number;
  companyName: string;
  /** Reported by GET /companies/api_info; counts authenticated, non-rate-limited calls. */
  requestsThisMonth: number;
}

export interface SeedClientInput {
  phone: string;
  name?: string;
  /** The client's picture link (§3 client object `avatar`). */
  avatar?: string;
  transport?: string;
  channelId?: number;
  token?: string;
  withDialog?: 'open' | 'closed' | false;
}

export interface ReceiveMessageInput {
  /** Existing client; or give `phone` to find-or-create one (then is_new_client is true). */
  clientId?: number;
  phone?: string;
  text?: string;
  transport?: string;
  channelId?: number;
  attachments?: Array<{ name: string; link: string }>;
  externalId?: string;
  token?: string;
}

export type FaultMatch = { method?: string; path?: string | RegExp };

/** What the fake got when it fetched an attachment link (§8: files go to Chat2Desk only as direct public URLs). */
export interface FetchedAttachment {
  url: string;
  /** HTTP status; 0 when the link could not be reached at all. */
  status: number;
  contentType: string | null;
  contentDisposition: string | null;
  bytes: Buffer;
}

export interface FakeChat2Desk {
  url: string;
  token: string;
  account(token?: string): FakeAccount;
  calls: C2DCall[];
  seedClient(input: SeedClientInput): { client: Record<string, unknown>; dialog?: Record<string, unknown> };
  failNext(match: FaultMatch, reply: { status: number; body: unknown } | 'network', times?: number): void;
  setDown(down: boolean): void;
  delayNext(match: FaultMatch, ms: number, times?: number): void;
  /** Holds the answer to the next matching request, computed (state changed) but not sent, until released; a `network` fault is not held. */
  holdNext(match: FaultMatch): Hold;
  /** Posts a webhook body to every enabled webhook of the account that subscribes to hook_type, signed as in docs/protocols.md C7; returns each delivery's HTTP status (0 = no answer). */
  deliverWebhook(body: Record<string, unknown>, token?: string): Promise<number[]>;
  /** Simulates Chat2Desk disabling a webhook after 5 h without a successful delivery (§7 Retries). */
  disableWebhook(id: number, token?: string): void;
  /** Simulates a client writing in: stores a from_client message and returns it with the matching `inbox` webhook body (§7). Does not deliver it. */
  receiveMessage(input: ReceiveMessageInput): { message: Record<string, unknown>; webhook: Record<string, unknown> };
  /**
   * An operator closes the dialog (as PUT /dialogs/{id} state=closed does) and Chat2Desk sends
   * `close_dialog` and `close_request` for its request: the bodies to deliver, shaped like the
   * examples webhook-close-dialog.json / webhook-close-request.json (§7 "Other events": inferred).
   */
  closeDialog(dialogId: number, token?: string): { closeDialog: Record<string, unknown>; closeRequest: Record<string, unknown>; requestId: number };
  /** A closed dialog opens again (as PUT /dialogs/{id} state=open does): a new request starts (§4). */
  reopenDialog(dialogId: number, token?: string): { requestId: number };
  /**
   * A tag is added to a client or a request, as POST /tags/assign_to does (§5), and Chat2Desk sends
   * `add_tag_to_client` / `add_tag_to_request` (§7 events): the body to deliver. GUESS: the field list
   * of tag events is a gap (§7 Gaps); it names the client, the request (for a request) and the tag.
   */
  assignTag(input: { tagId: number; clientId?: number; requestId?: number; token?: string }): Record<string, unknown>;
  /** The tag-event bodies of tags added through the API (POST /tags/assign_to), in order: a test delivers them. */
  tagEvents: Array<Record<string, unknown>>;
  /** Builds the flat inbox/outbox webhook body (§7) for a stored message. */
  messageWebhookBody(messageId: number, token?: string): Record<string, unknown>;
  /** Every attachment link POST /messages was given, fetched before answering (GUESS: Chat2Desk downloads the file when it takes the message), and fetches made by `fetchAttachment`. */
  fetchedAttachments: FetchedAttachment[];
  /** Fetches a link again as Chat2Desk (or a messenger delivering it later) would, and records it. */
  fetchAttachment(url: string): Promise<FetchedAttachment>;
  /** The most requests of one account the fake was answering at once, since start or resetCalls(). */
  maxInFlight(token?: string): number;
  resetCalls(): void;
  close(): Promise<void>;
}

// §7 Signature: header names are a gap in the notes. GUESS; change only here.
export const SIGNATURE_HEADER = 'X-Signature';
export const TIMESTAMP_HEADER = 'X-Timestamp';

export const DEFAULT_TOKEN = 'c2d-test-token';

/** §6 Transports (C# enum list; `vk` spelling, see the vk/vkontakte conflict). */
export const TRANSPORTS: readonly string[] = [
  'whatsapp',
  'wa_dialog',
  'wa_cm',
  'wa_infobip',
  'wa_tr',
  'wa_wavy',
  'wa_botmaker',
  'wa_clickatell',
  'telegram',
  'tg_user',
  'viber',
  'viber_business',
  'viber_public',
  'viber_tr',
  'viber_infobip',
  'vk',
  'ok',
  'facebook',
  'insta_direct',
  'insta_i2crm',
  'insta_local',
  'widget',
  'external',
  'email',
  'sms',
  'sms_infobip',
  'skype',
  'wechat',
  'yandex_dialogs',
  'vox_implant',
  'system',
];

/** §7 Event types (all three source groups). */
export const WEBHOOK_EVENTS: readonly string[] = [
  'inbox',
  'outbox',
  'outbox_status',
  'new_client',
  'new_request',
  'add_tag_to_client',
  'add_tag_to_request',
  'delete_tag_from_client',
  'delete_tag_from_request',
  'client_updated',
  'close_dialog',
  'close_request',
  'dialog_transferred',
  'comment',
  'operator_status_updated',
  'system_message',
  'new_qr_code',
  'imported_message',
  'client_added_to_blacklist',
  'new_ticket',
  'ticket_updated',
  'ticket_deleted',
];

/** §1 Pagination: limit max 200, default 20 (dialogs' "max 1000" comment is unverified; 200 used everywhere). */
export const DEFAULT_LIMIT = 20;
export const MAX_LIMIT = 200;
/** §7 Management: max 5 webhooks. */
export const MAX_WEBHOOKS = 5;

/** md5 hex of the API token: the HMAC key (§7; "hex-string form is presumed"). */
export function webhookSigningKey(apiToken: string): string {
  return createHash('md5').update(apiToken).digest('hex');
}

/** §7: hex(HMAC_SHA256(key, raw_body + timestamp)), lowercase hex, no separator. */
export function computeWebhookSignature(key: string, rawBody: string, timestamp: string): string {
  return createHmac('sha256', key)
    .update(rawBody + timestamp)
    .digest('hex');
}

/** Signature for a body sent on behalf of the company owning `apiToken`. */
export function signWebhook(apiToken: string, rawBody: string, timestamp: string): string {
  return computeWebhookSignature(webhookSigningKey(apiToken), rawBody, timestamp);
}

/** §1 Timestamps: REST uses "YYYY-MM-DDTHH:MM:SS UTC". */
export function formatC2DTime(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19)} UTC`;
}

/** Inverse of formatC2DTime; returns ms. */
export function parseC2DTime(value: string): number {
  return Date.parse(value.replace(' UTC', 'Z'));
}

// ---------------------------------------------------------------------------------------------
// Seed data (copied from the examples so the fake does not depend on files outside the project)
// ---------------------------------------------------------------------------------------------

/** get-channels-response.json */
const SEED_CHANNELS: C2DChannel[] = [
  { id: 17404, name: 'Sales WhatsApp', phone: '79160000000', transports: ['whatsapp', 'wa_dialog'] },
  { id: 126, name: 'Site', phone: '', transports: ['widget'] },
];

/** get-operators-response.json rows, with distinct emails so tests can look operators up by email. */
const SEED_OPERATORS: Array<Record<string, unknown>> = [
  {
    id: 617,
    email: 'admin@example.com',
    phone: null,
    role: 'admin',
    access_right_id: null,
    online: 1,
    offline_type: null,
    avatar: null,
    opened_dialogs: 0,
    first_name: 'John',
    last_name: 'Doe',
    external_id: null,
    last_visit: '2026-01-29T06:14:41 UTC',
    status_id: 0,
    two_factor: false,
    status: 'admin',
    access_right_name: null,
  },
  {
    id: 311416,
    email: 'manager@example.com',
    phone: '',
    role: 'operator',
    access_right_id: 54521,
    online: 1,
    offline_type: 'busy',
    avatar: null,
    opened_dialogs: 0,
    first_name: 'John',
    last_name: 'Doe',
    external_id: '',
    last_visit: '2024-11-13T10:55:52 UTC',
    status_id: 1,
    two_factor: false,
    status: 'enabled',
    access_right_name: 'Супервайзер',
  },
  {
    id: 313753,
    email: 'deleted@example.com',
    phone: '+7 701 763 0465',
    role: 'deleted',
    access_right_id: null,
    online: 0,
    offline_type: null,
    avatar: null,
    opened_dialogs: 0,
    first_name: 'John',
    last_name: 'Doe',
    external_id: '',
    last_visit: null,
    status_id: 0,
    two_factor: false,
    status: 'deleted',
    access_right_name: null,
  },
];

/** get-tags-response.json (same key order). */
const SEED_TAGS: C2DTag[] = [
  { id: 996, group_id: 313, group_name: 'Язык клиента', label: 'R', description: 'Русский язык' },
  {
    id: 2960,
    group_id: 2,
    group_name: '1Статус клиента',
    label: 'Т',
    description: 'Этому клиенту предложили подписаться на канал в Телеграме',
  },
];

// ---------------------------------------------------------------------------------------------
// Internal records (type aliases so they are assignable to Record<string, unknown>)
// ---------------------------------------------------------------------------------------------

type ClientRecord = {
  id: number;
  name: string | null;
  username: string | null;
  comment: string | null;
  assigned_name: string | null;
  phone: string;
  client_phone: string | null;
  avatar: string | null;
  region_id: number | null;
  country_id: number | null;
  first_client_message: string | null;
  last_client_message: string | null;
  extra_comment_1: string | null;
  extra_comment_2: string | null;
  extra_comment_3: string | null;
  custom_fields: Record<string, unknown>;
  client_external_id: string | null;
  external_id: string | null;
  external_ids: Record<string, unknown>;
  channels: Array<{ id: number; transports: string[] }>;
  tags: C2DTag[];
};

type MessageType = 'from_client' | 'to_client' | 'autoreply' | 'system' | 'comment';

/** GET /messages/{id} field set (§2) + external_id (our assumption: echoed like for inbox). */
type MessageRecord = {
  id: number;
  text: string | null;
  type: MessageType;
  transport: string;
  read: 0 | 1;
  created: string;
  client_id: number;
  operator_id: number | null;
  channel_id: number;
  dialog_id: number;
  request_id: number;
  attachments: Array<{ name: string; link: string }>;
  photo: string | null;
  video: string | null;
  audio: string | null;
  pdf: string | null;
  coordinates: string | null;
  remote_id: string | null;
  recipient_status: string | null;
  ai_tips: unknown;
  is_new: boolean;
  extra_data: Record<string, unknown>;
  status: string | null;
  external_id: string | null;
};

/** Keys of `last_message` inside a dialog, exactly as in get-dialogs-response.json. */
const DIALOG_LAST_MESSAGE_KEYS = [
  'id',
  'text',
  'type',
  'created',
  'coordinates',
  'transport',
  'read',
  'pdf',
  'remote_id',
  'recipient_status',
  'dialog_id',
  'operator_id',
  'channel_id',
  'attachments',
  'photo',
  'video',
  'audio',
  'client_id',
  'request_id',
  'extra_data',
] as const;

type DialogRecord = {
  id: number;
  state: 'open' | 'closed';
  begin: string;
  end: string | null;
  operator_id: number | null;
  last_request_id: number | null;
  messages: number;
  last_message: Record<string, unknown> | null;
  /** Internal: §4 says client_id is not a top-level field on the wire; stripped when served. */
  client_id: number;
};

type WebhookRecord = {
  id: number;
  name: string;
  url: string;
  events: string[];
  status: 'enable' | 'disable';
  errors: Array<{ text: string; created_at: number }>;
  source: string;
  channels: number[];
  order?: number | null;
};

interface AccountState {
  token: string;
  companyId: number;
  companyName: string;
  requestsThisMonth: number;
  channels: C2DChannel[];
  operators: Array<Record<string, unknown>>;
  tags: C2DTag[];
  clients: ClientRecord[];
  dialogs: DialogRecord[];
  messages: MessageRecord[];
  webhooks: WebhookRecord[];
  requests: C2DRequestRecord[];
  /** Sliding-window timestamps for the rate limiter. */
  recentRequests: number[];
}

/** Thrown by handlers and turned into the §1 error envelope. */
class ApiError extends Error {
  constructor(
    readonly httpStatus: number,
    message: string,
    readonly errors?: unknown,
  ) {
    super(message);
  }
}

/** Single-field validation error: the text goes in both `message` and `errors[field]` (§1, §10). */
function invalid(field: string, text: string, httpStatus = 400): ApiError {
  return new ApiError(httpStatus, text, { [field]: [text] });
}

/** Path-addressed entity not found: `message: "not_found"` (§4, §10). */
function notFound(errors?: string): ApiError {
  return new ApiError(404, 'not_found', errors);
}

// ---------------------------------------------------------------------------------------------
// Small value helpers
// ---------------------------------------------------------------------------------------------

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Integer from a JSON number or numeric string (form-ish clients send strings); undefined if absent. */
function optInt(v: unknown, field: string): number | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n)) throw invalid(field, `${field} must be an integer`);
  return n;
}

function optBool(v: unknown, field: string): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (v === true || v === 1 || v === '1' || v === 'true') return true;
  if (v === false || v === 0 || v === '0' || v === 'false') return false;
  throw invalid(field, `${field} must be a boolean`);
}

function optString(v: unknown, field: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw invalid(field, `${field} must be a string`);
  return v;
}

/** §3 Phone formatting: digits only, international, no '+'. */
function assertDigitsPhone(phone: string, field: string): void {
  if (!/^\d{5,15}$/.test(phone)) {
    throw invalid(field, `${field} is incorrect: only digits in international format, without "+"`);
  }
}

function orderParam(q: Record<string, string>): 'asc' | 'desc' {
  const order = q.order ?? 'asc';
  if (order !== 'asc' && order !== 'desc') throw invalid('order', 'order must be asc or desc');
  return order;
}

function byId<T extends { id: number }>(items: T[], order: 'asc' | 'desc'): T[] {
  return [...items].sort((a, b) => (order === 'asc' ? a.id - b.id : b.id - a.id));
}

/** Closed dialogs by the time they closed, then by id (docs/protocols.md C4, an assumption of ours). */
function byEnd(dialogs: DialogRecord[], order: 'asc' | 'desc'): DialogRecord[] {
  const at = (dialog: DialogRecord) => (dialog.end ? parseC2DTime(dialog.end) : 0);
  return [...dialogs].sort((a, b) => (order === 'asc' ? 1 : -1) * (at(a) - at(b) || a.id - b.id));
}

/** §1 Pagination: `limit` default 20, capped at 200 (GUESS: capped, not rejected); `offset` from 0. */
function paging(q: Record<string, string>): { limit: number; offset: number } {
  const limit = q.limit === undefined ? DEFAULT_LIMIT : (optInt(q.limit, 'limit') ?? DEFAULT_LIMIT);
  const offset = q.offset === undefined ? 0 : (optInt(q.offset, 'offset') ?? 0);
  if (limit < 1) throw invalid('limit', 'limit must be a positive integer');
  if (offset < 0) throw invalid('offset', 'offset must not be negative');
  return { limit: Math.min(limit, MAX_LIMIT), offset };
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json; charset=utf-8' },
  });
}

/** §1 Envelope: success, no meta. */
function ok(data: unknown): Response {
  return json({ data, status: 'success' });
}

/** §1 Envelope: list with meta {total, limit, offset}; meta.limit echoes the effective limit. */
function okList<T>(items: T[], q: Record<string, string>, map: (item: T) => unknown = (x) => x): Response {
  const { limit, offset } = paging(q);
  const page = items.slice(offset, offset + limit).map(map);
  return json({ data: page, meta: { total: items.length, limit, offset }, status: 'success' });
}

function errorBody(message: string, errors?: unknown): Record<string, unknown> {
  return errors === undefined ? { status: 'error', message } : { status: 'error', message, errors };
}

const UNAUTHORIZED_BODY = { status: 'error', message: 'Token is not correct' }; // error-unauthorized.json
const RATE_LIMIT_BODY = { status: 'error', message: 'Number of API requests exceeded' }; // error-limit-exceeded.json
const PAGE_NOT_FOUND_BODY = { status: 'error', message: 'Page not found' }; // §10
const DOWN_HTML =
  '<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n' +
  '<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n';

type Fault = { match: FaultMatch; remaining: number };
type ReplyFault = Fault & { reply: { status: number; body: unknown } | 'network' };
type DelayFault = Fault & { ms: number };
type HoldFault = Fault & { arrive: () => void; released: Promise<'answer' | 'lose'> };

/** A request held by the fake: `arrived` resolves once it is held, `release()` lets it answer, `lose()` drops the connection instead (the work is done, the answer lost). */
export interface Hold {
  readonly arrived: Promise<void>;
  release(): void;
  lose(): void;
}

/** A string path matches the relative ('/messages') or the full ('/v1/messages') form. */
function matches(m: FaultMatch, method: string, path: string, fullPath: string): boolean {
  if (m.method && m.method.toUpperCase() !== method) return false;
  if (m.path === undefined) return true;
  if (typeof m.path === 'string') return m.path === path || m.path === fullPath;
  m.path.lastIndex = 0;
  if (m.path.test(path)) return true;
  m.path.lastIndex = 0;
  return m.path.test(fullPath);
}

function take<F extends Fault>(queue: F[], method: string, path: string, fullPath: string): F | undefined {
  const i = queue.findIndex((f) => matches(f.match, method, path, fullPath));
  if (i < 0) return undefined;
  const fault = queue[i]!;
  fault.remaining -= 1;
  if (fault.remaining <= 0) queue.splice(i, 1);
  return fault;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// Domain state
// ---------------------------------------------------------------------------------------------

class FakeState {
  readonly accounts = new Map<string, AccountState>();
  readonly fetchedAttachments: FetchedAttachment[] = [];
  /** Bodies of the tag events tags added through the API would send (FakeChat2Desk.tagEvents). */
  readonly tagEvents: Array<Record<string, unknown>> = [];
  private ids = { client: 17340100, dialog: 4324100, message: 106773600, request: 8725100, webhook: 101 };

  constructor(
    tokens: string[],
    readonly now: () => number,
    readonly echoExternalId = true,
  ) {
    tokens.forEach((token, i) => {
      this.accounts.set(token, {
        token,
        companyId: 479 + i,
        companyName: i === 0 ? 'Example LLC' : `Example LLC ${i + 1}`,
        requestsThisMonth: 0,
        channels: structuredClone(SEED_CHANNELS),
        operators: structuredClone(SEED_OPERATORS),
        tags: structuredClone(SEED_TAGS),
        clients: [],
        dialogs: [],
        messages: [],
        webhooks: [],
        requests: [],
        recentRequests: [],
      });
    });
  }

  nextId(kind: keyof FakeState['ids']): number {
    this.ids[kind] += 1;
    return this.ids[kind];
  }

  time(): string {
    return formatC2DTime(this.now());
  }

  /** Which account owns a client/request id, to tell "not found" from "does not belong" (§5 errors). */
  ownerOfClient(id: number): AccountState | undefined {
    for (const acc of this.accounts.values()) if (acc.clients.some((c) => c.id === id)) return acc;
    return undefined;
  }

  ownerOfRequest(id: number): AccountState | undefined {
    for (const acc of this.accounts.values()) if (acc.requests.some((r) => r.id === id)) return acc;
    return undefined;
  }
}

function findClient(acc: AccountState, id: number | undefined): ClientRecord | undefined {
  return id === undefined ? undefined : acc.clients.find((c) => c.id === id);
}

function findChannel(acc: AccountState, id: number): C2DChannel {
  const channel = acc.channels.find((ch) => ch.id === id);
  // §3 POST /clients errors: text containing "channel" and "not found".
  if (!channel) throw invalid('channel_id', `channel ${id} not found`);
  return channel;
}

function findOperator(acc: AccountState, id: number): Record<string, unknown> {
  const op = acc.operators.find((o) => o.id === id);
  // §2 transfer errors: "operator … not found". GUESS: deleted/disabled operators cannot be assigned.
  if (!op || op.role === 'deleted' || op.role === 'disabled') throw invalid('operator_id', `operator ${id} not found`);
  return op;
}

function assertTransport(channel: C2DChannel, transport: string): void {
  // §3 POST /clients errors: text containing "transport" and "incorrect".
  if (!channel.transports.includes(transport)) {
    throw invalid('transport', `transport ${transport} is incorrect for channel ${channel.id}`);
  }
}

function newClient(
  state: FakeState,
  input: {
    phone: string;
    transport: string;
    channelId: number;
    name?: string | null;
    nickname?: string | null;
    clientPhone?: string | null;
  },
): ClientRecord {
  return {
    id: state.nextId('client'),
    // GUESS: Chat2Desk names a client it has not heard from by its phone/pseudo-id (as the widget sample shows).
    name: input.name ?? input.phone,
    username: null,
    comment: null,
    assigned_name: input.nickname ?? null,
    phone: input.phone,
    client_phone: input.clientPhone ?? null,
    avatar: null,
    region_id: null,
    country_id: null,
    first_client_message: null,
    last_client_message: null,
    extra_comment_1: null,
    extra_comment_2: null,
    extra_comment_3: null,
    custom_fields: {},
    client_external_id: null,
    external_id: null,
    external_ids: {},
    channels: [{ id: input.channelId, transports: [input.transport] }],
    tags: [],
  };
}

function addClientTransport(client: ClientRecord, channelId: number, transport: string): void {
  const entry = client.channels.find((ch) => ch.id === channelId);
  if (!entry) client.channels.push({ id: channelId, transports: [transport] });
  else if (!entry.transports.includes(transport)) entry.transports.push(transport);
}

function lastMessageOf(acc: AccountState, clientId: number): MessageRecord | undefined {
  let last: MessageRecord | undefined;
  for (const m of acc.messages) if (m.client_id === clientId && (!last || m.id > last.id)) last = m;
  return last;
}

function clientDialogs(acc: AccountState, clientId: number): DialogRecord[] {
  return acc.dialogs.filter((d) => d.client_id === clientId).sort((a, b) => b.id - a.id);
}

function newRequest(state: FakeState, acc: AccountState, dialog: DialogRecord, channelId: number): number {
  const id = state.nextId('request');
  acc.requests.push({ id, client_id: dialog.client_id, dialog_id: dialog.id, channel_id: channelId, tags: [], created: state.time() });
  dialog.last_request_id = id;
  return id;
}

function newDialog(state: FakeState, acc: AccountState, clientId: number, dialogState: 'open' | 'closed', operatorId: number | null): DialogRecord {
  const now = state.time();
  const dialog: DialogRecord = {
    id: state.nextId('dialog'),
    state: dialogState,
    begin: now,
    end: dialogState === 'closed' ? now : null,
    operator_id: operatorId,
    last_request_id: null,
    messages: 0,
    last_message: null,
    client_id: clientId,
  };
  acc.dialogs.push(dialog);
  return dialog;
}

/**
 * The dialog/request a new message lands in (§2 open_dialog): the client's open dialog if any;
 * else a new open dialog when open_dialog is true; else the latest (closed) dialog, or a new closed
 * record so that dialog_id is never null.
 */
function dialogFor(
  state: FakeState,
  acc: AccountState,
  client: ClientRecord,
  opts: {
    openDialog: boolean;
    operatorId: number | null;
    channelId: number;
  },
): { dialog: DialogRecord; requestId: number; isNewRequest: boolean } {
  const dialogs = clientDialogs(acc, client.id);
  const open = dialogs.find((d) => d.state === 'open');
  let dialog: DialogRecord;
  if (open) dialog = open;
  else if (opts.openDialog) dialog = newDialog(state, acc, client.id, 'open', opts.operatorId);
  else dialog = dialogs[0] ?? newDialog(state, acc, client.id, 'closed', opts.operatorId);
  if (dialog.last_request_id !== null) return { dialog, requestId: dialog.last_request_id, isNewRequest: false };
  return { dialog, requestId: newRequest(state, acc, dialog, opts.channelId), isNewRequest: true };
}

function storeMessage(
  state: FakeState,
  acc: AccountState,
  input: {
    client: ClientRecord;
    dialog: DialogRecord;
    requestId: number;
    type: MessageType;
    text: string | null;
    transport: string;
    channelId: number;
    operatorId: number | null;
    attachments: Array<{ name: string; link: string }>;
    pdf: string | null;
    externalId: string | null;
  },
): MessageRecord {
  const now = state.time();
  const fromClient = input.type === 'from_client';
  const message: MessageRecord = {
    id: state.nextId('message'),
    text: input.text,
    type: input.type,
    transport: input.transport,
    read: fromClient ? 0 : 1,
    created: now,
    client_id: input.client.id,
    operator_id: input.operatorId,
    channel_id: input.channelId,
    dialog_id: input.dialog.id,
    request_id: input.requestId,
    attachments: input.attachments,
    photo: null,
    video: null,
    audio: null,
    pdf: input.pdf,
    coordinates: null,
    remote_id: null,
    recipient_status: null,
    ai_tips: null,
    is_new: true,
    extra_data: {},
    // GUESS: delivery status of outgoing messages; the notes only name the field.
    status: input.type === 'to_client' || input.type === 'autoreply' ? 'sent' : null,
    external_id: input.externalId,
  };
  acc.messages.push(message);
  const dialog = input.dialog;
  dialog.messages += 1;
  dialog.last_message = lastMessageView(message);
  if (dialog.operator_id === null && input.operatorId !== null) dialog.operator_id = input.operatorId;
  addClientTransport(input.client, input.channelId, input.transport);
  if (fromClient) {
    input.client.first_client_message ??= now;
    input.client.last_client_message = now;
  }
  return message;
}

function lastMessageView(m: MessageRecord): Record<string, unknown> {
  const view: Record<string, unknown> = {};
  for (const key of DIALOG_LAST_MESSAGE_KEYS) view[key] = m[key];
  return view;
}

/** §4: client_id is not a top-level dialog field on the wire. */
function dialogView(d: DialogRecord): Record<string, unknown> {
  const { client_id: _internal, ...wire } = d;
  return wire;
}

/** GET /requests/{id}/messages row (§4 Requests; get-request-messages-response.json). */
function requestMessageView(acc: AccountState, m: MessageRecord): Record<string, unknown> {
  const type = m.type === 'from_client' ? 'in' : m.type === 'to_client' || m.type === 'autoreply' ? 'out' : 'system';
  return {
    id: m.id,
    text: m.text,
    video: m.video,
    photo: m.photo,
    audio: m.audio,
    pdf: m.pdf,
    coordinates: m.coordinates,
    transport: m.transport,
    type,
    read: m.read,
    created: Math.floor(parseC2DTime(m.created) / 1000),
    clientID: m.client_id,
    operatorID: m.operator_id ?? 0,
    channelID: m.channel_id,
    companyID: acc.companyId,
    dialogID: m.dialog_id,
    gateway_status: null,
    extra_data: { system_type: m.type === 'system' ? 'system' : null },
  };
}

/** §7 flat inbox/outbox body, key order as in webhook-inbox.json. */
function messageWebhook(acc: AccountState, m: MessageRecord, extra: { isNewRequest: boolean; isNewClient: boolean }): Record<string, unknown> {
  const client = findClient(acc, m.client_id);
  return {
    message_id: m.id,
    type: m.type,
    text: m.text,
    transport: m.transport,
    client_id: m.client_id,
    operator_id: m.operator_id,
    dialog_id: m.dialog_id,
    channel_id: m.channel_id,
    photo: m.photo,
    coordinates: m.coordinates,
    audio: m.audio,
    pdf: m.pdf,
    client: {
      id: m.client_id,
      phone: client?.phone ?? null,
      client_phone: client?.client_phone ?? null,
      name: client?.name ?? null,
      assigned_name: client?.assigned_name ?? null,
      external_id: client?.external_id ?? null,
    },
    hook_type: m.type === 'from_client' ? 'inbox' : 'outbox',
    request_id: m.request_id,
    attachments: m.attachments,
    is_new_request: extra.isNewRequest,
    is_new_client: extra.isNewClient,
    insta_comment: false,
    // §2: external_id is echoed back in the inbox webhook (in extra_data); the outbox webhook is not
    // documented to carry it, so it does not here.
    extra_data: m.external_id === null || m.type !== 'from_client' ? {} : { external_id: m.external_id },
    is_new: m.is_new,
    event_time: new Date(parseC2DTime(m.created)).toISOString(),
  };
}

// ---------------------------------------------------------------------------------------------
// HTTP layer
// ---------------------------------------------------------------------------------------------

type Env = {
  Bindings: HttpBindings;
  Variables: { account: AccountState; body: Record<string, unknown> };
};
type Ctx = Context<Env>;

/** §8: Chat2Desk takes an attachment only as a direct public URL; the fake downloads it like Chat2Desk would. */
async function fetchAttachment(state: FakeState, url: string): Promise<FetchedAttachment> {
  let fetched: FetchedAttachment;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    fetched = {
      url,
      status: res.status,
      contentType: res.headers.get('content-type'),
      contentDisposition: res.headers.get('content-disposition'),
      bytes: Buffer.from(await res.arrayBuffer()),
    };
  } catch {
    fetched = { url, status: 0, contentType: null, contentDisposition: null, bytes: Buffer.alloc(0) };
  }
  state.fetchedAttachments.push(fetched);
  return fetched;
}

/**
 * §9: a WhatsApp Business API channel sends free text only within 24 h of the client's last message;
 * otherwise the first message must be an approved HSM template. The transport `wa_dialog` plays such a
 * channel. GUESS: the refusal's exact text is a gap in the notes (docs/protocols.md C18).
 */
const WHATSAPP_BUSINESS_TRANSPORTS = new Set(['wa_dialog']);
export const TEMPLATE_REQUIRED_MESSAGE = 'The first message to the client must be a template (HSM): the 24-hour window is closed';
const DAY_MS = 24 * 3600_000;

/** §7 `add_tag_to_client` / `add_tag_to_request` (GUESS: the fields, see FakeChat2Desk.assignTag). */
function tagEvent(state: FakeState, acc: AccountState, tagId: number, assignee: { clientId?: number; requestId?: number }): Record<string, unknown> {
  const eventTime = new Date(parseC2DTime(state.time())).toISOString();
  const request = assignee.requestId === undefined ? undefined : acc.requests.find((r) => r.id === assignee.requestId);
  if (request) return { hook_type: 'add_tag_to_request', request_id: request.id, client_id: request.client_id, tag_id: tagId, event_time: eventTime };
  return { hook_type: 'add_tag_to_client', client_id: assignee.clientId, tag_id: tagId, event_time: eventTime };
}

function buildApi(state: FakeState): Hono<Env> {
  const api = new Hono<Env>();
  const acc = (c: Ctx) => c.get('account');
  const body = (c: Ctx) => c.get('body');
  const shownMessage = (m: MessageRecord): MessageRecord => (state.echoExternalId ? m : { ...m, external_id: null });
  const q = (c: Ctx) => c.req.query();
  const idParam = (c: Ctx, name = 'id'): number | undefined => {
    const raw = c.req.param(name) ?? '';
    return /^\d+$/.test(raw) ? Number(raw) : undefined;
  };
  const clientOr404 = (c: Ctx): ClientRecord => {
    const client = findClient(acc(c), idParam(c));
    // §3: not found → errors containing " not found" (a string: RA parses `errors` as string here).
    if (!client) throw new ApiError(404, 'not_found', 'Client not found');
    return client;
  };

  // ----- §6 misc -------------------------------------------------------------------------------
  api.get('/companies/api_info', (c) => {
    const a = acc(c);
    return ok({
      mode: 'full',
      hook: null,
      chat_close_web_hook: null,
      current_version: 1,
      requests_this_month: a.requestsThisMonth,
      channels: a.channels.length,
      company_name: a.companyName,
    });
  });

  api.get('/help/transports', () => ok([...TRANSPORTS]));

  // ----- §6 channels -----------------------------------------------------------------------------
  api.get('/channels', (c) => {
    const query = q(c);
    const list = acc(c).channels.filter((ch) => query.phone === undefined || ch.phone === query.phone);
    return okList(list, query);
  });
  api.get('/channels/:id', (c) => {
    const channel = acc(c).channels.find((ch) => ch.id === idParam(c));
    if (!channel) throw notFound('Channel not found');
    return ok(channel);
  });

  // ----- §3 clients ------------------------------------------------------------------------------
  api.get('/clients', (c) => {
    const query = q(c);
    const order = orderParam(query);
    const tagIds = query.tags
      ?.split(',')
      .map((s) => Number(s.trim()))
      .filter(Number.isFinite);
    const list = acc(c).clients.filter(
      (cl) =>
        (query.phone === undefined || cl.phone === query.phone) &&
        (query.client_phone === undefined || cl.client_phone === query.client_phone) &&
        // GUESS: several tag ids match clients having any of them.
        (!tagIds?.length || cl.tags.some((t) => tagIds.includes(t.id))),
    );
    return okList(byId(list, order), query);
  });

  api.post('/clients', (c) => {
    const a = acc(c);
    const b = body(c);
    const phone = optString(b.phone, 'phone');
    if (!phone) throw invalid('phone', 'phone is required');
    assertDigitsPhone(phone, 'phone');
    const transport = optString(b.transport, 'transport');
    if (!transport) throw invalid('transport', 'transport is required');
    const channelId = optInt(b.channel_id, 'channel_id');
    const assignedPhone = optString(b.assigned_phone, 'assigned_phone');
    if (assignedPhone) assertDigitsPhone(assignedPhone, 'assigned_phone');
    let channel: C2DChannel;
    if (channelId !== undefined) {
      channel = findChannel(a, channelId);
      assertTransport(channel, transport);
    } else {
      // GUESS: without channel_id the first channel that supports the transport is used.
      const found = a.channels.find((ch) => ch.transports.includes(transport));
      if (!found) throw invalid('transport', `transport ${transport} is incorrect`);
      channel = found;
    }
    const existing = a.clients.find((cl) => cl.phone === phone);
    if (existing) {
      // error-client-already-exists.json: errors.client[1] carries the id as a JSON string.
      throw new ApiError(400, 'Client already exists', {
        client: ['Client already exists', JSON.stringify({ id: existing.id })],
      });
    }
    const client = newClient(state, {
      phone,
      transport,
      channelId: channel.id,
      nickname: optString(b.nickname, 'nickname') ?? null,
      clientPhone: assignedPhone ?? null,
    });
    a.clients.push(client);
    return ok(client);
  });

  api.get('/clients/:id', (c) => ok(clientOr404(c)));

  api.put('/clients/:id', (c) => {
    const client = clientOr404(c);
    const b = body(c);
    // §3 PUT /clients/{id}: nickname, comment, extra_comment_1..3, external_id, custom_fields.
    const nickname = optString(b.nickname, 'nickname');
    if (nickname !== undefined) client.assigned_name = nickname;
    for (const field of ['comment', 'extra_comment_1', 'extra_comment_2', 'extra_comment_3', 'external_id'] as const) {
      if (field in b) client[field] = b[field] === null ? null : (optString(b[field], field) ?? null);
    }
    const assignedPhone = optString(b.assigned_phone, 'assigned_phone');
    if (assignedPhone !== undefined) {
      assertDigitsPhone(assignedPhone, 'assigned_phone');
      client.client_phone = assignedPhone;
    }
    if (b.custom_fields !== undefined) {
      if (!isRecord(b.custom_fields)) throw invalid('custom_fields', 'custom_fields must be an object');
      Object.assign(client.custom_fields, b.custom_fields);
    }
    return ok(client);
  });

  api.get('/clients/:id/transport', (c) => ok(clientOr404(c).channels.map((ch) => ({ channel_id: ch.id, transports: [...ch.transports] }))));

  api.get('/clients/:id/dialogs', (c) => {
    const client = clientOr404(c);
    return okList(clientDialogs(acc(c), client.id), q(c), dialogView);
  });

  // GUESS (§3, kimaero only): the client's latest incoming message, or null.
  api.get('/clients/:id/last_question', (c) => {
    const client = clientOr404(c);
    const incoming = acc(c).messages.filter((m) => m.client_id === client.id && m.type === 'from_client');
    return ok(incoming.sort((x, y) => y.id - x.id)[0] ?? null);
  });

  // ----- §2 messages -----------------------------------------------------------------------------
  api.post('/messages', async (c) => {
    const a = acc(c);
    const b = body(c);
    const clientId = optInt(b.client_id, 'client_id');
    if (clientId === undefined) throw invalid('client_id', 'client_id is required');
    const client = findClient(a, clientId);
    if (!client) throw invalid('client_id', 'Client not found');

    const text = optString(b.text, 'text') ?? null;
    const attachment = optString(b.attachment, 'attachment');
    const pdf = optString(b.pdf, 'pdf') ?? null;
    if (!text && !attachment && !pdf) throw invalid('text', 'text is required');

    const type = (optString(b.type, 'type') ?? 'to_client') as MessageType;
    if (!['to_client', 'autoreply', 'system', 'comment'].includes(type)) {
      throw invalid('type', `type ${type} is incorrect`);
    }

    // §2: channel/transport default to those of the client's last message.
    const last = lastMessageOf(a, client.id);
    const channelId = optInt(b.channel_id, 'channel_id') ?? last?.channel_id ?? client.channels[0]?.id;
    if (channelId === undefined) throw invalid('channel_id', 'channel_id is required');
    const channel = findChannel(a, channelId);
    const clientTransports = client.channels.find((ch) => ch.id === channel.id)?.transports ?? [];
    const transport = optString(b.transport, 'transport') ?? (last?.channel_id === channel.id ? last.transport : undefined) ?? clientTransports[0] ?? channel.transports[0];
    if (!transport) throw invalid('transport', 'transport is required');
    assertTransport(channel, transport);

    const explicitOperator = optInt(b.operator_id, 'operator_id');
    if (explicitOperator !== undefined) findOperator(a, explicitOperator);
    const openDialog = optBool(b.open_dialog, 'open_dialog') ?? true;
    if (WHATSAPP_BUSINESS_TRANSPORTS.has(transport) && type === 'to_client') {
      const lastWrote = client.last_client_message ? parseC2DTime(client.last_client_message) : undefined;
      if (lastWrote === undefined || state.now() - lastWrote > DAY_MS) throw new ApiError(400, TEMPLATE_REQUIRED_MESSAGE, TEMPLATE_REQUIRED_MESSAGE);
    }
    if (attachment) await fetchAttachment(state, attachment);

    const { dialog, requestId } = dialogFor(state, a, client, {
      openDialog,
      operatorId: explicitOperator ?? null,
      channelId: channel.id,
    });
    const attachments = attachment ? [{ name: optString(b.attachment_filename, 'attachment_filename') ?? attachment.split('/').pop() ?? 'file', link: attachment }] : [];
    const message = storeMessage(state, a, {
      client,
      dialog,
      requestId,
      type,
      text,
      transport,
      channelId: channel.id,
      // §2: without operator_id the message goes to the current dialog's operator.
      operatorId: explicitOperator ?? dialog.operator_id,
      attachments,
      pdf,
      externalId: b.external_id === undefined || b.external_id === null ? null : String(b.external_id),
    });
    // post-messages-response.json
    return ok({
      message_id: message.id,
      channel_id: message.channel_id,
      operator_id: message.operator_id,
      transport: message.transport,
      type: message.type,
      client_id: message.client_id,
      dialog_id: message.dialog_id,
      request_id: message.request_id,
    });
  });

  api.get('/messages', (c) => {
    const query = q(c);
    const order = orderParam(query);
    const filters: Array<[string, (m: MessageRecord) => unknown]> = [
      ['client_id', (m) => m.client_id],
      ['dialog_id', (m) => m.dialog_id],
      ['channel_id', (m) => m.channel_id],
      ['operator_id', (m) => m.operator_id],
      ['read', (m) => m.read],
      ['type', (m) => m.type],
      ['transport', (m) => m.transport],
    ];
    const startId = optInt(query.start_id, 'start_id');
    const list = acc(c).messages.filter(
      (m) =>
        filters.every(([key, get]) => query[key] === undefined || String(get(m)) === query[key]) &&
        // GUESS: start_id is an inclusive cursor in the direction of `order`.
        (startId === undefined || (order === 'asc' ? m.id >= startId : m.id <= startId)),
    );
    return okList(byId(list, order), query, shownMessage);
  });

  api.get('/messages/:id', (c) => {
    const message = acc(c).messages.find((m) => m.id === idParam(c));
    if (!message) throw notFound(`message ${c.req.param('id')} not found`);
    return ok(shownMessage(message));
  });

  // ----- §4 dialogs ------------------------------------------------------------------------------
  api.get('/dialogs', (c) => {
    const query = q(c);
    const order = orderParam(query);
    if (query.state !== undefined && query.state !== 'open' && query.state !== 'closed') {
      throw invalid('state', 'state must be open or closed');
    }
    const list = acc(c).dialogs.filter(
      (d) =>
        (query.state === undefined || d.state === query.state) &&
        (query.operator_id === undefined || String(d.operator_id) === query.operator_id) &&
        (query.client_id === undefined || String(d.client_id) === query.client_id),
    );
    // docs/protocols.md C4 (assumption, gap polling): closed dialogs are listed by when they closed.
    const sorted = query.state === 'closed' ? byEnd(list, order) : byId(list, order);
    return okList(sorted, query, dialogView);
  });

  api.get('/dialogs/:id', (c) => {
    const dialog = acc(c).dialogs.find((d) => d.id === idParam(c));
    if (!dialog) throw notFound(); // error-not-found.json
    return ok(dialogView(dialog));
  });

  api.put('/dialogs/:id', (c) => {
    const a = acc(c);
    const b = body(c);
    const dialog = a.dialogs.find((d) => d.id === idParam(c));
    if (!dialog) throw notFound();
    const operatorId = optInt(b.operator_id, 'operator_id');
    const newState = optString(b.state, 'state');
    optBool(b.force_assign, 'force_assign'); // accepted (changelog 2025-07-30); no effect in the fake
    const initiatorId = optInt(b.initiator_id, 'initiator_id');
    if (initiatorId !== undefined) findOperator(a, initiatorId);
    if (operatorId === undefined && newState === undefined) {
      throw invalid('state', 'state or operator_id is required');
    }
    if (newState !== undefined && newState !== 'open' && newState !== 'closed') {
      throw invalid('state', `state ${newState} is incorrect`);
    }
    if (newState !== undefined && newState === dialog.state) {
      // error-dialog-already-closed.json, with the actual state.
      const text = `Dialog already has state ${dialog.state}`;
      throw new ApiError(400, text, text);
    }
    if (operatorId !== undefined) {
      findOperator(a, operatorId);
      dialog.operator_id = operatorId; // §4: operator_id alone transfers the dialog
    }
    if (newState === 'closed') {
      dialog.state = 'closed';
      dialog.end = state.time();
    } else if (newState === 'open') {
      dialog.state = 'open';
      dialog.end = null;
      const channelId = (dialog.last_message?.channel_id as number | undefined) ?? findClient(a, dialog.client_id)?.channels[0]?.id ?? 0;
      newRequest(state, a, dialog, channelId); // a reopened dialog starts a new request (§4)
    }
    return ok(dialogView(dialog));
  });

  api.get('/requests/:id/messages', (c) => {
    const a = acc(c);
    const requestId = idParam(c);
    if (!a.requests.some((r) => r.id === requestId)) throw notFound();
    return ok(
      byId(
        a.messages.filter((m) => m.request_id === requestId),
        'asc',
      ).map((m) => requestMessageView(a, m)),
    );
  });

  // ----- §6 operators ----------------------------------------------------------------------------
  api.get('/operators', (c) => {
    const query = q(c);
    const list = acc(c).operators.filter(
      (o) =>
        (query.email === undefined || String(o.email).toLowerCase() === query.email.toLowerCase()) &&
        (query.phone === undefined || o.phone === query.phone) &&
        (query.online === undefined || String(o.online) === query.online),
    );
    return okList(list, query);
  });

  // ----- §5 tags ---------------------------------------------------------------------------------
  api.get('/tags', (c) => okList(acc(c).tags, q(c)));
  api.get('/tags/:id', (c) => {
    const tag = acc(c).tags.find((t) => t.id === idParam(c));
    if (!tag) throw notFound('tag does not exist');
    return ok(tag);
  });

  const tagOrThrow = (a: AccountState, id: number): C2DTag => {
    const tag = a.tags.find((t) => t.id === id);
    if (!tag) throw new ApiError(400, 'tag does not exist', `tag does not exist (id ${id})`); // §5 errors
    return tag;
  };
  /** §5 errors: "client not found" vs "client does not belong" (the id is another company's). */
  const assigneeClient = (a: AccountState, id: number): ClientRecord => {
    const client = findClient(a, id);
    if (client) return client;
    if (state.ownerOfClient(id)) throw new ApiError(400, 'client does not belong to the company', 'client does not belong to the company');
    throw new ApiError(400, 'client not found', 'client not found');
  };
  const assigneeRequest = (a: AccountState, id: number): C2DRequestRecord => {
    const request = a.requests.find((r) => r.id === id);
    if (request) return request;
    if (state.ownerOfRequest(id)) throw new ApiError(400, 'request does not belong to the company', 'request does not belong to the company');
    throw new ApiError(400, 'request not found', 'request not found');
  };

  api.post('/tags/assign_to', (c) => {
    const a = acc(c);
    const b = body(c);
    if (!Array.isArray(b.tag_ids) || b.tag_ids.length === 0) throw invalid('tag_ids', 'tag_ids must be a non-empty array');
    const tags = b.tag_ids.map((raw) => tagOrThrow(a, optInt(raw, 'tag_ids') ?? NaN));
    const assigneeType = b.assignee_type;
    const assigneeId = optInt(b.assignee_id, 'assignee_id');
    if (assigneeId === undefined) throw invalid('assignee_id', 'assignee_id is required');
    // §5: tagging a dialog directly is not supported.
    if (assigneeType !== 'client' && assigneeType !== 'request') {
      throw invalid('assignee_type', 'assignee_type must be client or request');
    }
    const target = assigneeType === 'client' ? assigneeClient(a, assigneeId).tags : assigneeRequest(a, assigneeId).tags;
    for (const tag of tags) {
      if (target.some((t) => t.id === tag.id)) continue;
      target.push({ ...tag });
      state.tagEvents.push(tagEvent(state, a, tag.id, assigneeType === 'client' ? { clientId: assigneeId } : { requestId: assigneeId }));
    }
    // GUESS: the response body of assign_to is not documented.
    return ok({ tag_ids: tags.map((t) => t.id), assignee_type: assigneeType, assignee_id: assigneeId });
  });

  api.delete('/tags/:tagId/delete_from', (c) => {
    const a = acc(c);
    const b = body(c);
    const tagId = idParam(c, 'tagId');
    const tag = tagOrThrow(a, tagId ?? NaN);
    const clientId = optInt(b.client_id, 'client_id');
    const requestId = optInt(b.request_id, 'request_id');
    if ((clientId === undefined) === (requestId === undefined)) {
      throw invalid('client_id', 'exactly one of client_id or request_id is required');
    }
    const owner = clientId !== undefined ? assigneeClient(a, clientId) : assigneeRequest(a, requestId!);
    owner.tags = owner.tags.filter((t) => t.id !== tag.id);
    return ok(clientId !== undefined ? { tag_id: tag.id, client_id: clientId } : { tag_id: tag.id, request_id: requestId });
  });

  // ----- §7 webhooks -----------------------------------------------------------------------------
  const webhookFields = (a: AccountState, b: Record<string, unknown>, current?: WebhookRecord) => {
    const url = b.url === undefined ? current?.url : optString(b.url, 'url');
    if (!url) throw new ApiError(400, 'Validation error', { url: ['url is required'], order: [], events: [] });
    try {
      new URL(url);
    } catch {
      throw new ApiError(400, 'Validation error', { url: ['url is invalid'], order: [], events: [] });
    }
    const events = b.events === undefined ? current?.events : b.events;
    if (!Array.isArray(events) || events.length === 0) {
      throw new ApiError(400, 'Validation error', { url: [], order: [], events: ['events must be a non-empty array'] });
    }
    const unknown = events.filter((e) => typeof e !== 'string' || !WEBHOOK_EVENTS.includes(e));
    if (unknown.length) {
      throw new ApiError(400, 'Validation error', { url: [], order: [], events: [`unknown events: ${unknown.join(', ')}`] });
    }
    const channels = b.channels === undefined || b.channels === null ? (current?.channels ?? []) : b.channels;
    if (!Array.isArray(channels)) throw invalid('channels', 'channels must be an array');
    const channelIds = channels.map((ch) => {
      const id = optInt(ch, 'channels') ?? NaN;
      findChannel(a, id);
      return id;
    });
    const status = b.status === undefined ? (current?.status ?? 'enable') : b.status;
    if (status !== 'enable' && status !== 'disable') throw invalid('status', 'status must be enable or disable');
    if (a.webhooks.some((w) => w.url === url && w.id !== current?.id)) {
      // error-webhook-url-already-used.json
      throw new ApiError(400, 'Validation error', { url: ['URL is already used'] });
    }
    const name = b.name === undefined ? (current?.name ?? '') : (optString(b.name, 'name') ?? '');
    const order = b.order === undefined ? current?.order : (optInt(b.order, 'order') ?? null);
    return { url, events: events as string[], channels: channelIds, status: status as 'enable' | 'disable', name, order };
  };

  const webhookOr404 = (c: Ctx): WebhookRecord => {
    const webhook = acc(c).webhooks.find((w) => w.id === idParam(c));
    if (!webhook) throw notFound('webhook not found');
    return webhook;
  };

  api.get('/webhooks', (c) => ok(acc(c).webhooks));

  api.post('/webhooks', (c) => {
    const a = acc(c);
    if (a.webhooks.length >= MAX_WEBHOOKS) {
      throw new ApiError(400, 'Validation error', { url: [`maximum number of webhooks (${MAX_WEBHOOKS}) reached`], order: [], events: [] });
    }
    const f = webhookFields(a, body(c));
    const webhook: WebhookRecord = {
      id: state.nextId('webhook'),
      name: f.name,
      url: f.url,
      events: f.events,
      status: f.status,
      errors: [],
      source: 'client', // get-webhooks-response.json
      channels: f.channels,
      ...(f.order === undefined ? {} : { order: f.order }),
    };
    a.webhooks.push(webhook);
    return ok(webhook);
  });

  api.put('/webhooks/:id', (c) => {
    const a = acc(c);
    const webhook = webhookOr404(c);
    const b = body(c);
    if (b.url === null) {
      a.webhooks.splice(a.webhooks.indexOf(webhook), 1); // §7: url null deletes the webhook
      return ok(webhook);
    }
    Object.assign(webhook, webhookFields(a, b, webhook));
    if (webhook.order === undefined) delete webhook.order;
    return ok(webhook);
  });

  api.delete('/webhooks/:id', (c) => {
    const a = acc(c);
    const webhook = webhookOr404(c);
    a.webhooks.splice(a.webhooks.indexOf(webhook), 1);
    return ok(webhook);
  });

  return api;
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

export async function startFakeChat2Desk(options: FakeChat2DeskOptions = {}): Promise<FakeChat2Desk> {
  const tokens = options.tokens ?? [DEFAULT_TOKEN];
  if (tokens.length === 0) throw new Error('startFakeChat2Desk: at least one token is required');
  const now = options.now ?? Date.now;
  const rateLimit = options.rateLimit ?? false;
  const webhookTimeoutMs = options.webhookTimeoutMs ?? 5000;
  const state = new FakeState(tokens, now, options.echoExternalId ?? true);
  const calls: C2DCall[] = [];
  const replyFaults: ReplyFault[] = [];
  const delayFaults: DelayFault[] = [];
  const holdFaults: HoldFault[] = [];
  let down = false;
  const inFlight = new Map<string | undefined, { now: number; max: number }>();

  const accountOf = (token?: string): AccountState => {
    const a = state.accounts.get(token ?? tokens[0]!);
    if (!a) throw new Error(`fake chat2desk: unknown token ${token}`);
    return a;
  };

  const app = new Hono<Env>();

  // Requests being answered at once, per token: the client's concurrency limit is checked against it.
  app.use('*', async (c, next) => {
    const token = c.req.header('authorization');
    const counter = inFlight.get(token) ?? { now: 0, max: 0 };
    inFlight.set(token, counter);
    counter.now += 1;
    counter.max = Math.max(counter.max, counter.now);
    try {
      await next();
    } finally {
      counter.now -= 1;
    }
  });

  // One pipeline for every request, in this order: record → down → injected faults → auth →
  // rate limit → JSON body → route. The delay is applied last so the state change has happened.
  app.use('*', async (c, next) => {
    const method = c.req.method.toUpperCase();
    const fullPath = new URL(c.req.url).pathname;
    const path = fullPath === '/v1' ? '/' : fullPath.startsWith('/v1/') ? fullPath.slice(3) : fullPath;
    const raw = await c.req.text();
    let parsed: unknown;
    let badJson = false;
    if (raw.trim() !== '') {
      try {
        parsed = JSON.parse(raw);
      } catch {
        parsed = raw;
        badJson = true;
      }
    }
    const token = c.req.header('authorization');
    const call: C2DCall = { method, path, query: c.req.query(), body: parsed, token, status: 0, at: now() };
    const delay = take(delayFaults, method, path, fullPath);
    const hold = take(holdFaults, method, path, fullPath);
    const answer = async (res: Response): Promise<Response> => {
      call.status = res.status;
      calls.push(call);
      if (delay) await sleep(delay.ms);
      if (hold) {
        hold.arrive();
        if ((await hold.released) === 'lose') {
          call.status = 0;
          c.env.incoming.socket.destroy();
          return new Response(null, { status: 500 }); // never reaches the destroyed socket
        }
      }
      return res;
    };

    if (down) {
      return answer(new Response(DOWN_HTML, { status: 503, headers: { 'content-type': 'text/html' } }));
    }

    const fault = take(replyFaults, method, path, fullPath);
    if (fault) {
      if (fault.reply === 'network') {
        calls.push(call); // status stays 0: nothing was answered
        c.env.incoming.socket.destroy();
        return new Response(null, { status: 500 }); // never reaches the destroyed socket
      }
      const { status, body } = fault.reply;
      const res =
        typeof body === 'string' ? new Response(body, { status, headers: { 'content-type': body.trimStart().startsWith('<') ? 'text/html' : 'text/plain' } }) : json(body, status);
      return answer(res);
    }

    // §1 Auth: raw token, no Bearer prefix.
    const account = token === undefined ? undefined : state.accounts.get(token);
    if (!account) return answer(json(UNAUTHORIZED_BODY, 401));

    if (rateLimit) {
      const t = now();
      account.recentRequests = account.recentRequests.filter((at) => at > t - rateLimit.perMs);
      if (account.recentRequests.length >= rateLimit.requests) return answer(json(RATE_LIMIT_BODY, 429));
      account.recentRequests.push(t);
    }
    account.requestsThisMonth += 1;

    if (badJson) return answer(json(errorBody('Invalid JSON in request body', 'Invalid JSON in request body'), 400));
    if (parsed !== undefined && !isRecord(parsed) && method !== 'GET') {
      return answer(json(errorBody('Request body must be a JSON object', 'Request body must be a JSON object'), 400));
    }
    c.set('account', account);
    c.set('body', isRecord(parsed) ? parsed : {});
    await next();
    return answer(c.res);
  });

  app.route('/v1', buildApi(state));
  app.notFound(() => json(PAGE_NOT_FOUND_BODY, 404));
  app.onError((err) => {
    if (err instanceof ApiError) return json(errorBody(err.message, err.errors), err.httpStatus);
    return json(errorBody(`Internal fake error: ${err.message}`), 500);
  });

  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s as Server)) as Server;
  });
  const port = (server.address() as AddressInfo).port;

  const matchOf = (input: FaultMatch): FaultMatch => ({ ...input, method: input.method?.toUpperCase() });

  const fake: FakeChat2Desk = {
    url: `http://127.0.0.1:${port}/v1`,
    token: tokens[0]!,
    calls,
    account: (token) => accountOf(token),

    seedClient(input) {
      const a = accountOf(input.token);
      const channel = a.channels.find((ch) => ch.id === (input.channelId ?? a.channels[0]?.id));
      if (!channel) throw new Error(`fake chat2desk: unknown channel ${input.channelId}`);
      const transport = input.transport ?? channel.transports[0] ?? 'whatsapp';
      const client = newClient(state, { phone: input.phone, transport, channelId: channel.id, name: input.name ?? null });
      if (input.avatar !== undefined) client.avatar = input.avatar;
      a.clients.push(client);
      if (!input.withDialog) return { client };
      const dialog = newDialog(state, a, client.id, input.withDialog, null);
      newRequest(state, a, dialog, channel.id);
      return { client, dialog };
    },

    failNext(match, reply, times = 1) {
      replyFaults.push({ match: matchOf(match), reply, remaining: times });
    },
    delayNext(match, ms, times = 1) {
      delayFaults.push({ match: matchOf(match), ms, remaining: times });
    },
    holdNext(match) {
      let arrive = () => {};
      let settle: (how: 'answer' | 'lose') => void = () => {};
      const arrived = new Promise<void>((resolve) => {
        arrive = resolve;
      });
      const released = new Promise<'answer' | 'lose'>((resolve) => {
        settle = resolve;
      });
      holdFaults.push({ match: matchOf(match), remaining: 1, arrive, released });
      return { arrived, release: () => settle('answer'), lose: () => settle('lose') };
    },
    setDown(value) {
      down = value;
    },

    async deliverWebhook(body, token) {
      const apiToken = token ?? tokens[0]!;
      const a = accountOf(apiToken);
      const hookType = String(body.hook_type);
      const channelId = body.channel_id === undefined || body.channel_id === null ? undefined : Number(body.channel_id);
      const targets = a.webhooks.filter(
        (w) =>
          w.status === 'enable' &&
          w.events.includes(hookType) &&
          // Webhook filter by channels (changelog 2024-07-03): empty list = all channels.
          (w.channels.length === 0 || channelId === undefined || w.channels.includes(channelId)),
      );
      const raw = JSON.stringify(body);
      return Promise.all(
        targets.map(async (w) => {
          const timestamp = String(Math.floor(now() / 1000));
          const failed = (text: string) => w.errors.push({ text, created_at: Math.floor(now() / 1000) });
          try {
            const res = await fetch(w.url, {
              method: 'POST',
              headers: {
                'content-type': 'application/json',
                [SIGNATURE_HEADER]: signWebhook(apiToken, raw, timestamp),
                [TIMESTAMP_HEADER]: timestamp,
              },
              body: raw,
              signal: AbortSignal.timeout(webhookTimeoutMs),
            });
            await res.arrayBuffer().catch(() => undefined);
            // §7 Retries: success presumably means 2xx.
            if (res.status < 200 || res.status > 299) failed(`HTTP ${res.status}`);
            return res.status;
          } catch (err) {
            const timeout = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError');
            failed(timeout ? 'Timeout' : `Connection error: ${err instanceof Error ? err.message : String(err)}`);
            return 0;
          }
        }),
      );
    },

    assignTag(input) {
      const a = accountOf(input.token);
      const tag = a.tags.find((t) => t.id === input.tagId);
      if (!tag) throw new Error(`fake chat2desk: unknown tag ${input.tagId}`);
      const owner = input.requestId !== undefined ? a.requests.find((r) => r.id === input.requestId) : findClient(a, input.clientId);
      if (!owner) throw new Error(`fake chat2desk: unknown ${input.requestId !== undefined ? 'request' : 'client'}`);
      if (!owner.tags.some((t) => t.id === tag.id)) owner.tags.push({ ...tag });
      return tagEvent(state, a, tag.id, input.requestId !== undefined ? { requestId: input.requestId } : { clientId: input.clientId });
    },

    tagEvents: state.tagEvents,

    disableWebhook(id, token) {
      const webhook = accountOf(token).webhooks.find((w) => w.id === id);
      if (!webhook) throw new Error(`fake chat2desk: unknown webhook ${id}`);
      webhook.status = 'disable';
    },

    receiveMessage(input) {
      const a = accountOf(input.token);
      let client = findClient(a, input.clientId) ?? (input.phone ? a.clients.find((cl) => cl.phone === input.phone) : undefined);
      let isNewClient = false;
      if (!client) {
        if (!input.phone) throw new Error('fake chat2desk: receiveMessage needs an existing clientId or a phone');
        const channel = a.channels.find((ch) => ch.id === (input.channelId ?? a.channels[0]?.id));
        if (!channel) throw new Error(`fake chat2desk: unknown channel ${input.channelId}`);
        client = newClient(state, { phone: input.phone, transport: input.transport ?? channel.transports[0] ?? 'whatsapp', channelId: channel.id });
        a.clients.push(client);
        isNewClient = true;
      }
      const last = lastMessageOf(a, client.id);
      const channelId = input.channelId ?? last?.channel_id ?? client.channels[0]?.id ?? a.channels[0]!.id;
      const transport =
        input.transport ??
        (last?.channel_id === channelId ? last.transport : undefined) ??
        client.channels.find((ch) => ch.id === channelId)?.transports[0] ??
        findChannel(a, channelId).transports[0]!;
      const { dialog, requestId, isNewRequest } = dialogFor(state, a, client, { openDialog: true, operatorId: null, channelId });
      const message = storeMessage(state, a, {
        client,
        dialog,
        requestId,
        type: 'from_client',
        text: input.text ?? null,
        transport,
        channelId,
        operatorId: dialog.operator_id,
        attachments: input.attachments ?? [],
        pdf: null,
        externalId: input.externalId ?? null,
      });
      return { message, webhook: messageWebhook(a, message, { isNewRequest, isNewClient }) };
    },

    closeDialog(dialogId, token) {
      const a = accountOf(token);
      const dialog = a.dialogs.find((d) => d.id === dialogId);
      if (!dialog) throw new Error(`fake chat2desk: unknown dialog ${dialogId}`);
      if (dialog.state === 'closed' || dialog.last_request_id === null) throw new Error(`fake chat2desk: dialog ${dialogId} is not open`);
      dialog.state = 'closed';
      dialog.end = state.time();
      const request = a.requests.find((r) => r.id === dialog.last_request_id)!;
      const eventTime = new Date(parseC2DTime(dialog.end)).toISOString();
      const common = { client_id: dialog.client_id, dialog_id: dialog.id, channel_id: request.channel_id, request_id: request.id, event_time: eventTime };
      return {
        closeDialog: {
          hook_type: 'close_dialog',
          dialog_id: dialog.id,
          client_id: dialog.client_id,
          operator_id: dialog.operator_id,
          request_id: request.id,
          channel_id: request.channel_id,
          event_time: eventTime,
        },
        closeRequest: { hook_type: 'close_request', ...common },
        requestId: request.id,
      };
    },

    reopenDialog(dialogId, token) {
      const a = accountOf(token);
      const dialog = a.dialogs.find((d) => d.id === dialogId);
      if (dialog?.state !== 'closed') throw new Error(`fake chat2desk: dialog ${dialogId} is not closed`);
      dialog.state = 'open';
      dialog.end = null;
      const channelId = (dialog.last_message?.channel_id as number | undefined) ?? findClient(a, dialog.client_id)?.channels[0]?.id ?? 0;
      return { requestId: newRequest(state, a, dialog, channelId) };
    },

    messageWebhookBody(messageId, token) {
      const a = accountOf(token);
      const message = a.messages.find((m) => m.id === messageId);
      if (!message) throw new Error(`fake chat2desk: unknown message ${messageId}`);
      return messageWebhook(a, message, { isNewRequest: false, isNewClient: false });
    },

    fetchedAttachments: state.fetchedAttachments,
    fetchAttachment: (url) => fetchAttachment(state, url),

    maxInFlight(token) {
      return inFlight.get(token ?? tokens[0]!)?.max ?? 0;
    },

    resetCalls() {
      calls.length = 0;
      for (const counter of inFlight.values()) counter.max = counter.now;
    },

    close() {
      return new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections(); // keep-alive sockets from fetch would otherwise hold close() open
      });
    },
  };
  return fake;
}
