/**
 * A fake Bitrix24 portal and its OAuth server (oauth.bitrix.info), as two real HTTP servers on
 * 127.0.0.1, for behaviour tests of the app server over real HTTP.
 *
 * It follows docs/protocols.md ("§n" below is section Bn there) and the wire examples in
 * test/fixtures/protocol-examples/bitrix24/. Where the notes leave a gap the fake has to pick something;
 * every such pick is marked `GUESS:` so they can all be found, and corrected, with one search.
 *
 * The fake never logs: tokens and secrets stay in memory, where tests read them.
 */
import { randomBytes, randomInt } from 'node:crypto';
import type { Server } from 'node:http';
import { type HttpBindings, serve } from '@hono/node-server';
import { Hono, type Context } from 'hono';
import { cors } from 'hono/cors';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import qs from 'qs';

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

export interface FakeBitrix24Options {
  clientId?: string;
  clientSecret?: string;
  memberId?: string;
  /** The portal's domain name as Bitrix24 reports it; requests still go to the loopback URL. */
  domain?: string;
  /**
   * The portal's domain is its own loopback address (`127.0.0.1:<port>`), so a browser test's fake
   * parent page, the SDK's REST calls and the install's domain check all agree (pages-and-modes §3.7).
   */
  domainIsAddress?: boolean;
  applicationToken?: string;
  /** The one admin user; every other user is not an admin. */
  adminUserId?: number;
  accessTokenTtlSeconds?: number;
  /** §4 leaky bucket; `false` turns it off. */
  rateLimit?: { drainPerSecond: number; burst: number } | false;
  /** Scope string reported in tokens and app.info. */
  scope?: string;
  /** The portal's language, app.info LANGUAGE_ID (§1); default `en`. */
  languageId?: string;
}

export interface RecordedCall {
  method: string;
  params: Record<string, unknown>;
  status: number;
  error?: string;
  at: number;
  accessToken?: string;
}

export interface InstallOverrides {
  memberId?: string;
  domain?: string;
  applicationToken?: string;
  accessToken?: string;
}

export interface RobotCallInput {
  code: string;
  properties: Record<string, string | string[]>;
  /** Defaults to a deal the fake creates for the occasion (a workflow always runs on a document). */
  documentId?: [string, string, string];
  eventToken?: string;
  applicationToken?: string;
  /** Defaults to what the robot was registered with; only an explicit 'N' means "don't wait" (§5). */
  useSubscription?: 'Y' | 'N';
  /** Sends the call to this origin, at the registered handler's path: one of several processes behind a load balancer. */
  via?: string;
}

export interface BitrixAuth {
  access_token: string;
  refresh_token: string;
  expires: string;
  expires_in: string;
  scope: string;
  domain: string;
  server_endpoint: string;
  client_endpoint: string;
  member_id: string;
  user_id: string;
  status: string;
  application_token: string;
}

export interface EventBinding {
  id: number;
  event: string;
  handler: string;
  /** User whose tokens the handler receives; 0 = whoever caused the event (§11). */
  authType: number;
  offline: boolean;
}

export interface PlacementBinding {
  placement: string;
  handler: string;
  title: string;
  description: string;
  groupName: string;
  langAll: Record<string, unknown>;
  options: Record<string, unknown>;
  userId: number;
}

export interface SentEvent {
  eventToken: string;
  returnValues: Record<string, unknown>;
  logMessage?: string;
}

export interface TimelineComment {
  id: number;
  entityType: string;
  entityId: number;
  comment: string;
  authorId: number;
  created: string;
}

export interface TimelineLogMessage {
  id: number;
  entityTypeId: number;
  entityId: number;
  title: string;
  text: string;
  iconCode: string;
  authorId: number;
  created: string;
}

/** A crm.automation.trigger.execute the fake accepted. */
export interface TriggerExecution {
  code: string;
  ownerTypeId: number;
  ownerId: number;
}

/** A notification of im.notify.system.add that is still there (a later one with its TAG replaced it otherwise). */
export interface SystemNotification {
  id: number;
  userId: number;
  message: string;
  tag: string;
}

export interface Delivery {
  kind: 'robot' | 'event';
  url: string;
  body: string;
  status: number;
}

/** An Open Channel (imopenlines.config.*, §12.4); the fake starts with line 1. */
export interface OpenLine {
  id: number;
  name: string;
  active: boolean;
}

/** A connector's state on one line: the flags SETTING_CONNECTOR shows (pages-and-modes §2.1). */
export interface ConnectorLineState {
  connector: string;
  line: number;
  /** imconnector.activate ACTIVE=1. */
  active: boolean;
  /** Raised by imconnector.connector.data.set (both CONNECTION_STATUS and REGISTER_STATUS). */
  connected: boolean;
  /** Raised by imconnector.set.error, lowered by a later data.set or activate. */
  error: boolean;
  data: Record<string, unknown>;
}

/** A file of an Open Channel message. */
export interface OpenLineFile {
  name: string;
  /** A client's file: the url the connector gave, and what the fake got fetching it as Bitrix24 does (§12.5). */
  url?: string;
  download?: { status: number; contentType: string; body: Buffer } | { error: string };
  /** An operator's file: served at downloadLink (with an access token) to the connector. */
  mime?: string;
  size?: number;
}

export interface OpenLineMessage {
  /** Bitrix24's own message id (`im.message_id` of the events). */
  imMessageId: number;
  /** `client` came in by imconnector.send.messages; `operator` was written in Bitrix24 (operatorWrites). */
  from: 'client' | 'operator';
  /**
   * send.messages with message.user_id: sent "on behalf of the manager" (ru:imconnector-send-messages.md);
   * 0 = the portal's system user (third-party, estvita/separator#5). GUESS: how the chat then shows it.
   */
  sentAsUserId?: number;
  /** The connector's ids: message.id of send.messages, or the ids confirmed by send.status.delivery. */
  externalIds: string[];
  /** Portal user: the client's connector user, or the operator. */
  authorId: number;
  text: string;
  files: OpenLineFile[];
  /** unix seconds */
  date: number;
  deleted: boolean;
  /**
   * An operator's message stays `undelivered` (what the operator sees) until imconnector.send.status.delivery
   * confirms it with message.id as an ARRAY (pages-and-modes §6).
   */
  delivery: 'undelivered' | 'delivered';
  /** imconnector.send.status.reading confirmed it (message.id as an array). */
  read: boolean;
}

/** An Open Channel chat of one external chat of a connector on a line (§12.5). */
export interface OpenLineChat {
  line: number;
  connector: string;
  externalChatId: string;
  chatId: number;
  sessionId: number;
  /** The client as the connector named them (user.id, name, last_name). */
  externalUserId: string;
  userId: number;
  name: string;
  lastName: string;
  /** user.picture.url of the latest message that gave one (§12.5: "a link to the user's avatar available for the account"). */
  picture: string | null;
  messages: OpenLineMessage[];
}

/** A send.status.delivery / .reading the fake received, per message whether Bitrix24 would accept it. */
export interface ConnectorStatusReport {
  method: 'imconnector.send.status.delivery' | 'imconnector.send.status.reading';
  connector: string;
  line: number;
  messages: Array<{ imMessageId: number; externalChatId: string; ids: unknown; accepted: boolean }>;
}

export interface OperatorWritesInput {
  line: number;
  externalChatId: string;
  /** The operator (a portal user); defaults to the admin. */
  userId?: number;
  text: string;
  files?: Array<{ name: string; content: string | Uint8Array; mime?: string }>;
  /** false: the message is written but its event not delivered (a test posts one of its own). */
  deliver?: boolean;
}

export interface SettingConnectorInput {
  line: number;
  connector: string;
  /** Each flag defaults to the fake's own state of the connector on the line. */
  activeStatus?: boolean;
  connectionStatus?: boolean;
  registerStatus?: boolean;
  errorStatus?: boolean;
  status?: boolean;
}

export type DeliveryReply = { handler: string; status: number; text: string };

export type CrmRecord = Record<string, unknown>;

export interface CrmStore {
  leads: Map<number, CrmRecord>;
  contacts: Map<number, CrmRecord>;
  deals: Map<number, CrmRecord>;
  companies: Map<number, CrmRecord>;
}

export interface SeedPerson {
  name?: string;
  lastName?: string;
  title?: string;
  phones?: string[];
  emails?: string[];
  /** Any other fields, UPPER_CASE as Bitrix24 names them. */
  fields?: Record<string, unknown>;
}

export interface SeedDeal {
  title?: string;
  contactId?: number;
  /** All the deal's contacts (crm.deal.contact.items.get), the first one primary; CONTACT_ID becomes the first. */
  contactIds?: number[];
  companyId?: number;
  fields?: Record<string, unknown>;
}

export interface ErrorReply {
  status: number;
  error: string;
  error_description: string;
  /** The method runs (its change is made) and only then the error is answered: an answer lost on the way back. */
  afterRunning?: boolean;
}

/** Requests held by the fake: `arrived` resolves once all of them are held, `release()` lets them go on. */
export interface Hold {
  readonly arrived: Promise<void>;
  release(): void;
}

/** What a hold catches: a top-level REST method of the portal, or an endpoint of the OAuth server. */
/** `command` narrows a `batch` hold to batches carrying that method (confirmations and results both travel in batches). */
/** `afterRunning` holds the answer instead: the method runs (its change is made) and the caller waits for the reply. */
export type HoldTarget = { rest: string; command?: string; afterRunning?: boolean } | { oauth: 'oauth.token' | 'app.info' };

export interface FakeBitrix24 {
  portalUrl: string;
  clientEndpoint: string;
  oauthUrl: string;
  clientId: string;
  clientSecret: string;
  memberId: string;
  domain: string;
  applicationToken: string;
  scope: string;
  calls: RecordedCall[];
  oauthCalls: RecordedCall[];
  robots: Map<string, Record<string, unknown>>;
  activities: Map<string, Record<string, unknown>>;
  eventBindings: EventBinding[];
  placements: PlacementBinding[];
  sentEvents: SentEvent[];
  activityLog: Array<{ eventToken: string; message: string }>;
  timelineComments: TimelineComment[];
  timelineLogMessages: TimelineLogMessage[];
  deliveries: Delivery[];
  crm: CrmStore;
  /** The app's CRM automation triggers, CODE → NAME. */
  triggers: Map<string, string>;
  triggerExecutions: TriggerExecution[];
  notifications: SystemNotification[];
  installed: boolean;
  issueAuth(userId?: number): BitrixAuth;
  /**
   * A token the portal issued to ANOTHER application installed on it (§1: REST accepts it as any
   * token; app.info on the authorization server names that app's client_id).
   */
  issueOtherAppToken(userId?: number): string;
  installEventBody(overrides?: InstallOverrides): string;
  installPageRequest(overrides?: InstallOverrides): { query: string; body: string };
  placementPageRequest(placement: string, options: Record<string, unknown>, overrides?: InstallOverrides): { query: string; body: string };
  uninstallEventBody(overrides?: { applicationToken?: string; clean?: boolean }): string;
  eventBody(event: string, data: unknown, options?: { userId?: number; applicationToken?: string }): string;
  deliverEvent(event: string, data: unknown, options?: { applicationToken?: string }): Promise<Array<{ handler: string; status: number; text: string }>>;
  robotCallBody(input: RobotCallInput): { body: string; eventToken: string };
  callRobot(input: RobotCallInput): Promise<{ status: number; text: string; eventToken: string }>;
  installFinish(): void;
  /** Serves an HTML page at `path` on the portal's own origin (a test's fake parent frame). */
  servePage(path: string, html: string): void;
  expireAccessTokens(): void;
  expireRefreshTokens(): void;
  failNext(method: string, reply: ErrorReply, times?: number): void;
  failNextOAuth(endpoint: 'oauth.token' | 'app.info', reply: ErrorReply, times?: number): void;
  /** imconnector.send.messages refuses the message of this external id in its own entry of the answer (SUCCESS false, ERRORS); the call's other messages go. */
  refuseClientMessage(messageId: string, error: { code: string; message: string }): void;
  /**
   * The next `times` requests of a top-level method lose their connection: the socket is destroyed
   * before the method runs, or once it ran (`afterRunning`: the change is made, no answer comes).
   */
  dropNext(method: string, options?: { afterRunning?: boolean }, times?: number): void;
  setOperatingLimit(method: string, blockedUntilUnixSeconds: number): void;
  /** Holds the next `count` matching requests before they run (auth is checked on release), or their answers after (`afterRunning`); one the rate limit refuses is not held. */
  hold(target: HoldTarget, count?: number): Hold;
  seedLead(input?: SeedPerson): number;
  seedContact(input?: SeedPerson): number;
  seedCompany(input?: SeedPerson): number;
  /** A user of the portal (never an admin) in these departments (user.get UF_DEPARTMENT, §10); returns the id. */
  seedUser(input?: { name?: string; email?: string; departments?: number[] }): number;
  /** Moves a user to other departments, as an HR change in the portal does. */
  setUserDepartments(userId: number, departments: number[]): void;
  seedDeal(input?: SeedDeal): number;
  /** A smart process (crm.type.list) with this entity type id; its card tab is CRM_DYNAMIC_<id>_DETAIL_TAB. */
  seedSmartProcess(entityTypeId: number, title?: string): void;
  /** An item of a smart process (crm.item.get), linked to contacts and a company. */
  seedSmartItem(entityTypeId: number, input?: { title?: string; contactIds?: number[]; companyId?: number }): number;
  /**
   * This user may not read this record: crm.*.get, crm.item.get and crm.deal.contact.items.get answer
   * as Bitrix24 does for a record outside the user's CRM permissions (docs/protocols.md B18).
   */
  denyRead(userId: number, entityTypeId: number, id: number): void;
  /**
   * From now on crm.<entity>.add refuses a record without these fields, as a portal whose admin
   * made them required does (400, the field named in error_description; §10). [] lifts it.
   */
  requireFields(entity: 'lead' | 'contact' | 'deal' | 'company', fields: string[]): void;
  /** Open Channels (§12): lines, registered connectors (ID → register params), connector states per line. */
  openLines: Map<number, OpenLine>;
  connectors: Map<string, Record<string, unknown>>;
  connectorLines: Map<string, ConnectorLineState>;
  connectorStatusReports: ConnectorStatusReport[];
  openLineChats(line: number): OpenLineChat[];
  openLineMessages(line: number, externalChatId: string): OpenLineMessage[];
  /**
   * Bitrix24's Open Channels CRM logic binds a chat to the record it made or found (an OpenLine activity
   * on the record, docs/protocols.md B25). The fake makes no CRM records for Open Channel chats, so a
   * test links an existing chat (made by imconnector.send.messages) to a record here; the latest link of
   * a record is what imopenlines.crm.chat.getLastId answers. Returns the chat's Bitrix24 id.
   */
  linkOpenLineChatToCrm(input: { line: number; externalChatId: string; entityTypeId: number; entityId: number }): number;
  /** An operator writes in an Open Channel chat: ONIMCONNECTORMESSAGEADD to the bound handlers (§12.6). */
  operatorWrites(input: OperatorWritesInput): Promise<{ imMessageId: number; imChatId: number; replies: DeliveryReply[]; data: Params }>;
  /** The operator edits / deletes their message: ONIMCONNECTORMESSAGEUPDATE / …DELETE (§12.8). */
  operatorEdits(input: { line: number; externalChatId: string; imMessageId: number; text: string }): Promise<DeliveryReply[]>;
  operatorDeletes(input: { line: number; externalChatId: string; imMessageId: number }): Promise<DeliveryReply[]>;
  /** An admin deletes the line: ONIMCONNECTORLINEDELETE with data = the line id (§12.8). */
  deleteOpenLine(line: number): Promise<DeliveryReply[]>;
  /** An admin disconnects the connector from the line: ONIMCONNECTORSTATUSDELETE (§12.8). */
  disconnectConnector(input: { connector: string; line: number }): Promise<DeliveryReply[]>;
  /** The connector settings page open: PLACEMENT=SETTING_CONNECTOR (pages-and-modes §2.1). */
  settingConnectorPageRequest(input: SettingConnectorInput, overrides?: InstallOverrides): { query: string; body: string };
  resetCalls(): void;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Wire helpers (§0)
// ---------------------------------------------------------------------------------------------

type Params = Record<string, unknown>;

/** qs settings that read bodies the way PHP fills $_REQUEST: deep brackets, last duplicate wins. */
const PHP_PARSE_OPTIONS: qs.IParseOptions = {
  depth: 20,
  arrayLimit: 1000,
  parameterLimit: 10_000,
  duplicates: 'last',
  ignoreQueryPrefix: true,
};

export function parsePhpQuery(query: string): Params {
  return qs.parse(query, PHP_PARSE_OPTIONS) as Params;
}

/** PHP urlencode(): everything but [A-Za-z0-9_.-] is percent-encoded, space becomes '+'. */
function phpUrlencode(value: unknown): string {
  return encodeURIComponent(String(value))
    .replace(/[!'()*~]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%20/g, '+');
}

/** PHP's http_build_query scalars: true→"1", false→"0", null dropped, numbers as text (§0). */
function toPhpScalars(value: unknown): unknown {
  if (value === null || value === undefined) return undefined;
  if (typeof value === 'boolean') return value ? '1' : '0';
  if (typeof value === 'number') return String(value);
  if (Array.isArray(value)) return value.map(toPhpScalars);
  if (isRecord(value)) {
    const out: Params = {};
    for (const [key, inner] of Object.entries(value)) {
      const converted = toPhpScalars(inner);
      if (converted !== undefined) out[key] = converted;
    }
    return out;
  }
  return value;
}

/** A form body exactly as Bitrix24 builds it with PHP http_build_query (§0, examples/*.form.txt). */
export function phpHttpBuildQuery(data: Record<string, unknown>): string {
  return qs.stringify(toPhpScalars(data), {
    encoder: phpUrlencode,
    format: 'RFC1738',
    arrayFormat: 'indices',
    skipNulls: true,
  });
}

/** PHP arrays serialise as a JSON list when keyed 0..n-1, and an empty one is always `[]` (§3 batch). */
function phpArray(entries: Array<[string, unknown]>): unknown {
  if (entries.every(([key], index) => key === String(index))) return entries.map(([, value]) => value);
  return Object.fromEntries(entries);
}

/** PHP empty(): the test Bitrix24 applies to required fields. */
function phpEmpty(value: unknown): boolean {
  if (value === undefined || value === null || value === false || value === '' || value === '0' || value === 0) {
    return true;
  }
  if (Array.isArray(value)) return value.length === 0;
  if (isRecord(value)) return Object.keys(value).length === 0;
  return false;
}

/** PHP json_encode escapes slashes; PLACEMENT_OPTIONS arrives that way (examples/placement-*.printr.txt). */
function phpJsonEncode(value: unknown): string {
  return JSON.stringify(value).replace(/\//g, '\\/');
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The parameters of an Open Channels method (imconnector.*, imopenlines.*) as given: PHP reads
 * `$params['CONNECTOR']`, so a lower-case `connector` is no parameter at all (bitrix24.md §12 spells
 * them upper-case; the CRM's legacy methods are the ones that forgive the case, upperKeys).
 */
function connectorParams(params: Params): Params {
  return params;
}

function upperKeys(params: Params): Params {
  return Object.fromEntries(Object.entries(params).map(([key, value]) => [key.toUpperCase(), value]));
}

function text(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  return '';
}

function positiveInt(value: unknown): number | undefined {
  const n = typeof value === 'number' ? value : Number(text(value));
  return Number.isInteger(n) && n > 0 ? n : undefined;
}

function randomHex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

function randomAlnum(length: number): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  let out = '';
  for (let i = 0; i < length; i++) out += alphabet[randomInt(alphabet.length)];
  return out;
}

/** Wall-clock milliseconds with sub-millisecond precision, for the `time` block. */
function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** Bitrix24 prints dates as ISO 8601 with an offset and no fraction: 2024-08-29T10:30:38+03:00. */
function isoSeconds(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, '+00:00');
}

async function readRequestParams(request: Request): Promise<Params> {
  const fromQuery = parsePhpQuery(new URL(request.url).search);
  if (request.method === 'GET' || request.method === 'HEAD') return fromQuery;
  const contentType = request.headers.get('content-type') ?? '';
  let fromBody: Params = {};
  if (contentType.includes('application/json')) {
    const raw = await request.text();
    if (raw.trim() !== '') {
      const parsed: unknown = JSON.parse(raw);
      if (isRecord(parsed)) fromBody = parsed;
    }
  } else if (contentType.includes('multipart/form-data')) {
    // File parts are dropped: Bitrix24 REST takes files as base64 fields, not uploads.
    const flat = new URLSearchParams();
    for (const [key, value] of await request.formData()) if (typeof value === 'string') flat.append(key, value);
    fromBody = parsePhpQuery(flat.toString());
  } else {
    fromBody = parsePhpQuery(await request.text());
  }
  return { ...fromQuery, ...fromBody };
}

function injectedBody(reply: ErrorReply): Record<string, unknown> {
  return { error: reply.error, error_description: reply.error_description };
}

function jsonResponse(c: Context, body: unknown, status: number): Response {
  return c.json(body, status as ContentfulStatusCode);
}

// ---------------------------------------------------------------------------------------------
// REST errors (§2, §3 and the per-method sections)
// ---------------------------------------------------------------------------------------------

class RestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly description: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(`${code}: ${description}`);
  }

  body(): Record<string, unknown> {
    return { error: this.code, error_description: this.description, ...this.extra };
  }
}

const noAuthFound = (): RestError => new RestError(401, 'NO_AUTH_FOUND', 'Wrong authorization data');
const expiredToken = (): RestError => new RestError(401, 'expired_token', 'The access token provided has expired');
const methodNotFound = (): RestError => new RestError(404, 'ERROR_METHOD_NOT_FOUND', 'Method not found!');
/** Bitrix\Rest\AccessException: "Access denied!" plus an optional detail. */
const accessDenied = (detail = ''): RestError => new RestError(403, 'ACCESS_DENIED', detail === '' ? 'Access denied!' : `Access denied! ${detail}`);
/** Bitrix ArgumentNullException as REST shows it (examples/placement-bind.error-argument.json). */
const argumentNull = (argument: string): RestError => new RestError(400, 'ERROR_ARGUMENT', `Argument '${argument}' is null or empty`, { argument });
const handlerAlreadyBound = (): RestError => new RestError(400, 'ERROR_CORE', 'Handler already binded'); // examples/event-bind.error-already-bound.json
const activityValidation = (description: string): RestError => new RestError(400, 'ERROR_ACTIVITY_VALIDATION_FAILURE', description);
const crmNotFound = (): RestError => new RestError(400, '', 'Not found'); // §3: legacy CRM, empty code
/** GUESS (docs/protocols.md B18): legacy CRM methods refuse a record outside the user's rights like "Not found", with its own text. */
const crmAccessDenied = (): RestError => new RestError(400, '', 'Access denied.');

/** HandlerHelper::checkCallback: a host with a dot, then http(s) only (§5). */
function checkHandlerUrl(handler: unknown): void {
  let url: URL | undefined;
  try {
    url = new URL(text(handler));
  } catch {
    url = undefined;
  }
  if (url === undefined || url.hostname.indexOf('.') <= 0) {
    throw new RestError(400, 'ERROR_WRONG_HANDLER_URL', 'Wrong handler URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new RestError(400, 'ERROR_UNSUPPORTED_PROTOCOL', 'Unsupported handler protocol');
  }
  // GUESS: the "same domain as the application" check (ERROR_WRONG_HANDLER_URL) is not modelled:
  // the fake does not know the app's URL.
}

// ---------------------------------------------------------------------------------------------
// Internal state shapes
// ---------------------------------------------------------------------------------------------

interface ResolvedOptions {
  clientId: string;
  clientSecret: string;
  memberId: string;
  domain: string;
  applicationToken: string;
  adminUserId: number;
  accessTokenTtlSeconds: number;
  rateLimit: { drainPerSecond: number; burst: number } | false;
  scope: string;
  languageId: string;
}

interface PortalUser {
  id: number;
  name: string;
  lastName: string;
  email: string;
  /** UF_DEPARTMENT of user.get (§10); the one department "Company" unless seeded otherwise. */
  departments?: number[];
}

interface Caller {
  user: PortalUser;
  accessToken: string;
}

interface MethodResult {
  result: unknown;
  total?: number;
  next?: number;
}

/** Most methods answer at once; a few wait on the network as Bitrix24 does (imconnector.send.messages downloads files). */
type MethodHandler = (params: Params, caller: Caller) => MethodResult | Promise<MethodResult>;

interface RestTime {
  start: number;
  finish: number;
  duration: number;
  processing: number;
  date_start: string;
  date_finish: string;
  operating_reset_at: number;
  operating: number;
}

type Outcome = { ok: true; result: unknown; total?: number; next?: number; time: RestTime } | { ok: false; status: number; body: Record<string, unknown> };

interface EventTokenRecord {
  code: string;
  waiting: boolean;
  completed: boolean;
}

type ActivityKind = 'robot' | 'activity';
type CrmEntity = 'lead' | 'contact' | 'deal' | 'company';

const CRM_COLLECTION: Record<CrmEntity, keyof CrmStore> = {
  lead: 'leads',
  contact: 'contacts',
  deal: 'deals',
  company: 'companies',
};

/** Separate id ranges per entity so that code mixing up entity types fails loudly in tests. */
const CRM_FIRST_ID: Record<CrmEntity, number> = { lead: 101, contact: 201, deal: 301, company: 401 };

const CRM_MULTIFIELDS = new Set(['PHONE', 'EMAIL', 'WEB', 'IM']);

/** Deal pipelines of the fake portal (crm.category.list). */
const DEAL_CATEGORIES = [
  { id: 0, name: 'General', sort: 100, isDefault: 'Y' },
  { id: 3, name: 'Wholesale', sort: 200, isDefault: 'N' },
];

/** crm.status.list entries by ENTITY_ID: each pipeline's stages (ids prefixed C<id>: outside the general one) and the sources. */
const CRM_STATUSES: Record<string, Array<{ STATUS_ID: string; NAME: string; CATEGORY_ID?: string }>> = {
  DEAL_STAGE: [
    { STATUS_ID: 'NEW', NAME: 'New', CATEGORY_ID: '0' },
    { STATUS_ID: 'PREPARATION', NAME: 'Preparing documents', CATEGORY_ID: '0' },
    { STATUS_ID: 'WON', NAME: 'Deal won', CATEGORY_ID: '0' },
  ],
  DEAL_STAGE_3: [
    { STATUS_ID: 'C3:NEW', NAME: 'Incoming', CATEGORY_ID: '3' },
    { STATUS_ID: 'C3:NEGOTIATION', NAME: 'Negotiation', CATEGORY_ID: '3' },
    { STATUS_ID: 'C3:WON', NAME: 'Shipped', CATEGORY_ID: '3' },
  ],
  SOURCE: [
    { STATUS_ID: 'CALL', NAME: 'Call' },
    { STATUS_ID: 'WEB', NAME: 'Website' },
    { STATUS_ID: 'OTHER', NAME: 'Other' },
  ],
};

/** crm.item entityTypeId → legacy entity (§10). */
const CRM_ENTITY_TYPE_ID: Record<number, CrmEntity> = { 1: 'lead', 2: 'deal', 3: 'contact', 4: 'company' };
const ENTITY_TYPE_OF: Record<CrmEntity, number> = { lead: 1, deal: 2, contact: 3, company: 4 };

/**
 * Events event.bind accepts. GUESS: the real list depends on the app's scopes; this is the set the
 * notes mention (§1, §11, §12) plus every ONCRM* event.
 */
const KNOWN_EVENTS = new Set([
  'ONAPPINSTALL',
  'ONAPPUNINSTALL',
  'ONAPPUPDATE',
  'ONAPPPAYMENT',
  'ONAPPTEST',
  'ONOFFLINEEVENT',
  'ONIMCONNECTORMESSAGEADD',
  'ONIMCONNECTORMESSAGEUPDATE',
  'ONIMCONNECTORMESSAGEDELETE',
  'ONIMCONNECTORLINEDELETE',
  'ONIMCONNECTORSTATUSDELETE',
  'ONIMCONNECTORDIALOGSTART',
  'ONIMCONNECTORDIALOGFINISH',
  'ONUSERADD',
]);

function isKnownEvent(event: string): boolean {
  return KNOWN_EVENTS.has(event) || /^ONCRM[A-Z0-9_]+$/.test(event);
}

const BATCH_LIMIT = 50; // §3
const LIST_PAGE = 50; // §3
const BATCH_REFERENCE = /\$(result|result_error|result_total|result_next|result_time)((?:\[[^\]]*\])+)/g;
const BATCH_REFERENCE_WHOLE = new RegExp(`^${BATCH_REFERENCE.source}$`);

class LeakyBucket {
  private level = 0;
  private updatedAtMs = nowMs();

  constructor(
    private readonly drainPerSecond: number,
    private readonly burst: number,
  ) {}

  /** Adds one request; false when the portal must answer 503 QUERY_LIMIT_EXCEEDED (§4). */
  tryAdd(): boolean {
    const now = nowMs();
    this.level = Math.max(0, this.level - ((now - this.updatedAtMs) / 1000) * this.drainPerSecond);
    this.updatedAtMs = now;
    if (this.level + 1 > this.burst) return false;
    this.level += 1;
    return true;
  }
}

// ---------------------------------------------------------------------------------------------
// The fake
// ---------------------------------------------------------------------------------------------

class FakePortal implements FakeBitrix24 {
  portalUrl = '';
  clientEndpoint = '';
  oauthUrl = '';
  readonly clientId: string;
  readonly clientSecret: string;
  readonly memberId: string;
  domain: string;
  readonly applicationToken: string;
  readonly scope: string;

  calls: RecordedCall[] = [];
  oauthCalls: RecordedCall[] = [];
  readonly robots = new Map<string, Record<string, unknown>>();
  readonly activities = new Map<string, Record<string, unknown>>();
  readonly eventBindings: EventBinding[] = [];
  readonly placements: PlacementBinding[] = [];
  readonly sentEvents: SentEvent[] = [];
  readonly activityLog: Array<{ eventToken: string; message: string }> = [];
  readonly timelineComments: TimelineComment[] = [];
  readonly timelineLogMessages: TimelineLogMessage[] = [];
  readonly deliveries: Delivery[] = [];
  readonly crm: CrmStore = { leads: new Map(), contacts: new Map(), deals: new Map(), companies: new Map() };
  readonly triggers = new Map<string, string>();
  readonly triggerExecutions: TriggerExecution[] = [];
  readonly notifications: SystemNotification[] = [];
  installed = false;

  private readonly options: ResolvedOptions;
  private readonly domainIsAddress: boolean;
  private readonly users = new Map<number, PortalUser>();
  private readonly accessTokens = new Map<string, { userId: number; expiresAtMs: number; clientId?: string }>();
  private readonly refreshTokens = new Map<string, { userId: number; used: boolean }>();
  private readonly eventTokens = new Map<string, EventTokenRecord>();
  private readonly injectedFailures = new Map<string, ErrorReply[]>();
  private readonly refusedClientMessages = new Map<string, { code: string; message: string }>();
  private readonly injectedDrops = new Map<string, Array<{ afterRunning: boolean }>>();
  private readonly injectedOAuthFailures = new Map<string, ErrorReply[]>();
  private readonly operatingBlockedUntil = new Map<string, number>();
  private readonly requiredCrmFields = new Map<CrmEntity, string[]>();
  private readonly holds: Array<{ key: string; command: string | undefined; remaining: number; arrive: () => void; released: Promise<void> }> = [];
  private readonly operatingSeconds = new Map<string, number>();
  private readonly bucket: LeakyBucket | undefined;
  private readonly methods: Map<string, MethodHandler>;
  private readonly servers: Server[] = [];
  private readonly pages = new Map<string, string>();
  private nextCrmId: Record<CrmEntity, number> = { ...CRM_FIRST_ID };
  private readonly smartProcesses = new Map<number, { id: number; entityTypeId: number; title: string }>();
  private readonly smartItems = new Map<string, Record<string, unknown>>();
  private nextSmartItemId = 1;
  /** `<userId> <entityTypeId> <id>` the user may not read. */
  private readonly deniedReads = new Set<string>();
  private nextMultifieldId = 1;
  private nextEventHandlerId = 1;
  private nextCommentId = 1;
  private nextLogMessageId = 1;
  private nextNotificationId = 1;

  // Open Channels (§12). GUESS: the id ranges only echo the docs examples' magnitudes.
  readonly openLines = new Map<number, OpenLine>([[1, { id: 1, name: 'Open Channel', active: true }]]);
  readonly connectors = new Map<string, Record<string, unknown>>();
  readonly connectorLines = new Map<string, ConnectorLineState>();
  readonly connectorStatusReports: ConnectorStatusReport[] = [];
  /** `<line> <external chat id>` → chat. */
  private readonly chats = new Map<string, OpenLineChat>();
  /** Chats bound to CRM records, oldest first (linkOpenLineChatToCrm): the OpenLine activities' order of LAST_UPDATED. */
  private readonly openLineCrmLinks: Array<{ chatId: number; entityTypeId: number; entityId: number }> = [];
  /** `<connector> <external user id>` → the connector user Bitrix24 made for the client. */
  private readonly connectorUsers = new Map<string, number>();
  /** token of /rest/download.json → an operator's file. */
  private readonly operatorFiles = new Map<string, { name: string; mime: string; body: Buffer }>();
  private nextLineId = 2;
  private nextConnectorUserId = 585;
  private nextOpenLineChatId = 1767;
  private nextSessionId = 323;
  private nextImMessageId = 86497;

  constructor(options: FakeBitrix24Options) {
    this.options = {
      clientId: options.clientId ?? 'local.c2dtest0000000.00000001',
      clientSecret: options.clientSecret ?? randomAlnum(50),
      memberId: options.memberId ?? 'a223c6b3710f85df22e9377d6c4f7553',
      domain: options.domain ?? 'test-portal.bitrix24.com',
      applicationToken: options.applicationToken ?? randomHex(16),
      adminUserId: options.adminUserId ?? 1,
      accessTokenTtlSeconds: options.accessTokenTtlSeconds ?? 3600,
      rateLimit: options.rateLimit ?? { drainPerSecond: 2, burst: 50 },
      scope: options.scope ?? 'crm,bizproc,placement,imopenlines,imconnector,im,user_brief',
      languageId: options.languageId ?? 'en',
    };
    this.clientId = this.options.clientId;
    this.clientSecret = this.options.clientSecret;
    this.memberId = this.options.memberId;
    this.domain = this.options.domain;
    this.applicationToken = this.options.applicationToken;
    this.scope = this.options.scope;
    this.domainIsAddress = options.domainIsAddress ?? false;
    this.bucket = this.options.rateLimit ? new LeakyBucket(this.options.rateLimit.drainPerSecond, this.options.rateLimit.burst) : undefined;

    this.users.set(1, { id: 1, name: 'Anna', lastName: 'Admin', email: 'admin@example.com' });
    this.users.set(2, { id: 2, name: 'Max', lastName: 'Manager', email: 'manager@example.com' });
    if (!this.users.has(this.options.adminUserId)) {
      const id = this.options.adminUserId;
      this.users.set(id, { id, name: 'Portal', lastName: 'Owner', email: `user${id}@example.com` });
    }
    this.methods = this.buildMethodTable();
  }

  async start(): Promise<void> {
    this.portalUrl = await this.listen(this.buildPortalApp());
    this.clientEndpoint = `${this.portalUrl}/rest/`;
    if (this.domainIsAddress) {
      this.domain = new URL(this.portalUrl).host;
      this.options.domain = this.domain;
    }
    this.oauthUrl = await this.listen(this.buildOAuthApp());
  }

  async close(): Promise<void> {
    await Promise.all(
      this.servers.map(
        (server) =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            server.closeAllConnections();
          }),
      ),
    );
    this.servers.length = 0;
  }

  private listen(app: Hono): Promise<string> {
    return new Promise((resolve) => {
      const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) => {
        resolve(`http://127.0.0.1:${info.port}`);
      });
      this.servers.push(server as Server);
    });
  }

  // ----- tokens (§2) ---------------------------------------------------------------------------

  private mintTokenPair(userId: number): { accessToken: string; refreshToken: string; expires: number } {
    if (!this.users.has(userId)) throw new Error(`fake Bitrix24 has no user ${userId}`);
    // Real tokens are 70 hex characters (examples/activity-handler-call.real-capture.printr.txt).
    const accessToken = randomHex(35);
    const refreshToken = randomHex(35);
    const expiresAtMs = Date.now() + this.options.accessTokenTtlSeconds * 1000;
    this.accessTokens.set(accessToken, { userId, expiresAtMs });
    this.refreshTokens.set(refreshToken, { userId, used: false });
    return { accessToken, refreshToken, expires: Math.floor(expiresAtMs / 1000) };
  }

  issueOtherAppToken(userId = 1): string {
    const { accessToken } = this.mintTokenPair(userId);
    this.accessTokens.set(accessToken, { ...this.accessTokens.get(accessToken)!, clientId: 'local.otherapp0000000.00000000' });
    return accessToken;
  }

  issueAuth(userId = 1): BitrixAuth {
    const pair = this.mintTokenPair(userId);
    return {
      access_token: pair.accessToken,
      refresh_token: pair.refreshToken,
      expires: String(pair.expires),
      expires_in: String(this.options.accessTokenTtlSeconds),
      scope: this.scope,
      domain: this.domain,
      server_endpoint: `${this.oauthUrl}/rest/`,
      client_endpoint: this.clientEndpoint,
      member_id: this.memberId,
      user_id: String(userId),
      status: 'L',
      application_token: this.applicationToken,
    };
  }

  expireAccessTokens(): void {
    for (const record of this.accessTokens.values()) record.expiresAtMs = 0;
  }

  expireRefreshTokens(): void {
    for (const record of this.refreshTokens.values()) record.used = true;
  }

  /** Resolves a REST `auth` value to its user, with the §2/§3 errors for missing, unknown or expired tokens. */
  private resolveCaller(token: string | undefined): Caller {
    if (token === undefined || token === '') throw noAuthFound();
    const record = this.accessTokens.get(token);
    if (record === undefined) throw noAuthFound();
    if (Date.now() >= record.expiresAtMs) throw expiredToken();
    const user = this.users.get(record.userId);
    if (user === undefined) throw noAuthFound();
    return { user, accessToken: token };
  }

  private isAdmin(user: PortalUser): boolean {
    return user.id === this.options.adminUserId;
  }

  private requireAdmin(caller: Caller): void {
    if (!this.isAdmin(caller.user)) throw accessDenied();
  }

  // ----- lifecycle bodies (§1, §7, §9, §11) ----------------------------------------------------

  /**
   * The no-UI install callback (ONAPPINSTALL shape, §1). Building it is the server-side install:
   * the portal counts the app as installed from this moment.
   */
  installEventBody(overrides: InstallOverrides = {}): string {
    const auth = this.issueAuth();
    this.installed = true;
    return phpHttpBuildQuery({
      event: 'ONAPPINSTALL',
      event_handler_id: String(this.nextEventHandlerId++),
      data: { VERSION: '1', ACTIVE: 'Y', INSTALLED: 'Y', LANGUAGE_ID: 'en' },
      ts: String(nowSeconds()),
      // Key order of the real capture (examples/install-event-onappinstall.real-capture.json).
      auth: {
        access_token: overrides.accessToken ?? auth.access_token,
        expires: auth.expires,
        expires_in: auth.expires_in,
        scope: auth.scope,
        domain: overrides.domain ?? auth.domain,
        server_endpoint: auth.server_endpoint,
        status: auth.status,
        client_endpoint: auth.client_endpoint,
        member_id: overrides.memberId ?? auth.member_id,
        user_id: auth.user_id,
        refresh_token: auth.refresh_token,
        application_token: overrides.applicationToken ?? auth.application_token,
      },
    });
  }

  /** The UI install: the app page opened in an iframe with PLACEMENT=DEFAULT (§0, §1). Needs installFinish(). */
  installPageRequest(overrides: InstallOverrides = {}): { query: string; body: string } {
    return this.framePageRequest('DEFAULT', undefined, overrides);
  }

  /** A placement page open, e.g. CRM_DEAL_DETAIL_TAB with {ID: '8061'} (§9). */
  placementPageRequest(placement: string, options: Record<string, unknown>, overrides: InstallOverrides = {}): { query: string; body: string } {
    return this.framePageRequest(placement, options, overrides);
  }

  private framePageRequest(placement: string, placementOptions: Record<string, unknown> | undefined, overrides: InstallOverrides): { query: string; body: string } {
    const auth = this.issueAuth();
    const query = phpHttpBuildQuery({
      DOMAIN: overrides.domain ?? this.domain,
      PROTOCOL: '1',
      LANG: 'en',
      APP_SID: randomHex(16), // a per-render session id, not the application token (§0)
    });
    const body = phpHttpBuildQuery({
      AUTH_ID: overrides.accessToken ?? auth.access_token,
      AUTH_EXPIRES: auth.expires_in,
      REFRESH_ID: auth.refresh_token,
      SERVER_ENDPOINT: auth.server_endpoint,
      APPLICATION_TOKEN: overrides.applicationToken ?? this.applicationToken,
      APPLICATION_SCOPE: this.scope,
      member_id: overrides.memberId ?? this.memberId,
      status: 'L',
      PLACEMENT: placement,
      PLACEMENT_OPTIONS: placementOptions === undefined ? undefined : phpJsonEncode(placementOptions),
    });
    return { query, body };
  }

  /**
   * ONAPPUNINSTALL (§1): auth carries no tokens. Building it is the uninstall: Bitrix24 drops the
   * app's event handlers, placements and robots/activities and revokes its API access.
   */
  uninstallEventBody(overrides: { applicationToken?: string; clean?: boolean } = {}): string {
    this.installed = false;
    this.eventBindings.length = 0;
    this.placements.length = 0;
    this.robots.clear();
    this.activities.clear();
    this.accessTokens.clear();
    this.refreshTokens.clear();
    return phpHttpBuildQuery({
      event: 'ONAPPUNINSTALL',
      data: { LANGUAGE_ID: 'en', CLEAN: overrides.clean === false ? '0' : '1' },
      ts: String(nowSeconds()),
      auth: {
        domain: this.domain,
        server_endpoint: `${this.oauthUrl}/rest/`,
        client_endpoint: this.clientEndpoint,
        member_id: this.memberId,
        application_token: overrides.applicationToken ?? this.applicationToken,
      },
    });
  }

  /** An event delivery body (§11 payload); only ONAPPINSTALL carries a refresh token, so this one doesn't. */
  eventBody(event: string, data: unknown, options: { userId?: number; applicationToken?: string } = {}): string {
    return this.buildEventBody(event.toUpperCase(), this.nextEventHandlerId++, data, options);
  }

  private buildEventBody(event: string, handlerId: number, data: unknown, options: { userId?: number; applicationToken?: string }): string {
    const auth = this.issueAuth(options.userId);
    return phpHttpBuildQuery({
      event,
      event_handler_id: String(handlerId),
      data,
      ts: String(nowSeconds()),
      auth: {
        access_token: auth.access_token,
        expires: auth.expires,
        expires_in: auth.expires_in,
        scope: auth.scope,
        domain: auth.domain,
        server_endpoint: auth.server_endpoint,
        status: auth.status,
        client_endpoint: auth.client_endpoint,
        member_id: auth.member_id,
        user_id: auth.user_id,
        application_token: options.applicationToken ?? auth.application_token,
      },
    });
  }

  /** Delivers an event to every online handler bound for it, once, no retry; nothing before install (§0). */
  async deliverEvent(event: string, data: unknown, options: { applicationToken?: string } = {}): Promise<Array<{ handler: string; status: number; text: string }>> {
    return this.deliverEventCausedBy(event, data, 1, options);
  }

  /** `auth_type` 0 handlers get the tokens of the user who caused the event (§11), e.g. the writing operator. */
  private async deliverEventCausedBy(event: string, data: unknown, causedBy: number, options: { applicationToken?: string } = {}): Promise<DeliveryReply[]> {
    if (!this.installed) return [];
    const name = event.toUpperCase();
    const targets = this.eventBindings.filter((binding) => binding.event === name && !binding.offline);
    const replies: DeliveryReply[] = [];
    for (const binding of targets) {
      const userId = binding.authType > 0 ? binding.authType : causedBy;
      const body = this.buildEventBody(name, binding.id, data, { userId, ...options });
      const reply = await this.postForm('event', binding.handler, body);
      replies.push({ handler: binding.handler, ...reply });
    }
    return replies;
  }

  installFinish(): void {
    this.installed = true;
  }

  /** The robot/activity handler POST of §7, registering its event token as a waiting workflow step. */
  robotCallBody(input: RobotCallInput): { body: string; eventToken: string } {
    const registered = this.robots.get(input.code) ?? this.activities.get(input.code);
    const useSubscription = input.useSubscription ?? (registered?.USE_SUBSCRIPTION === 'N' ? 'N' : 'Y');
    const eventToken = input.eventToken ?? mintEventToken();
    const workflowId = eventToken.split('|')[0] ?? '';
    const documentId = input.documentId ?? ['crm', 'CCrmDocumentDeal', `DEAL_${this.seedDeal()}`];
    // document_type[2] is document_id[2] without its trailing id: DEAL_17 → DEAL, DYNAMIC_147_1 → DYNAMIC_147.
    const documentType = [documentId[0], documentId[1], documentId[2].replace(/_[^_]*$/, '')];
    const authUserId = positiveInt(registered?.AUTH_USER_ID) ?? 1;
    const auth = this.issueAuth(authUserId);
    this.eventTokens.set(eventToken, { code: input.code, waiting: useSubscription === 'Y', completed: false });

    const body = phpHttpBuildQuery({
      workflow_id: workflowId,
      code: input.code,
      document_id: documentId,
      document_type: documentType,
      event_token: eventToken,
      properties: input.properties,
      use_subscription: useSubscription,
      timeout_duration: '0',
      ts: String(nowSeconds()),
      // Key order of examples/robot-handler-call.form.txt.
      auth: {
        access_token: auth.access_token,
        refresh_token: auth.refresh_token,
        expires: auth.expires,
        server_endpoint: auth.server_endpoint,
        client_endpoint: auth.client_endpoint,
        scope: auth.scope,
        status: auth.status,
        application_token: input.applicationToken ?? auth.application_token,
        expires_in: auth.expires_in,
        domain: auth.domain,
        member_id: auth.member_id,
        user_id: auth.user_id,
      },
    });
    return { body, eventToken };
  }

  async callRobot(input: RobotCallInput): Promise<{ status: number; text: string; eventToken: string }> {
    const registered = this.robots.get(input.code) ?? this.activities.get(input.code);
    if (registered === undefined) {
      throw new Error(`fake Bitrix24: no robot or activity registered with CODE "${input.code}"`);
    }
    const { body, eventToken } = this.robotCallBody(input);
    const handler = text(registered.HANDLER);
    const url = input.via ? new URL(new URL(handler).pathname + new URL(handler).search, input.via).toString() : handler;
    const reply = await this.postForm('robot', url, body);
    return { ...reply, eventToken };
  }

  /** What the queue server does (§0, §7): one form POST, no retry. */
  private async postForm(kind: Delivery['kind'], url: string, body: string): Promise<{ status: number; text: string }> {
    const response = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        'user-agent': 'Bitrix24 Webhook Engine', // GUESS: the queue servers' user agent
      },
      body,
      signal: AbortSignal.timeout(10_000),
    });
    const replyText = await response.text();
    this.deliveries.push({ kind, url, body, status: response.status });
    return { status: response.status, text: replyText };
  }

  // ----- fault injection ----------------------------------------------------------------------

  failNext(method: string, reply: ErrorReply, times = 1): void {
    const queue = this.injectedFailures.get(method.toLowerCase()) ?? [];
    for (let i = 0; i < times; i++) queue.push(reply);
    this.injectedFailures.set(method.toLowerCase(), queue);
  }

  refuseClientMessage(messageId: string, error: { code: string; message: string }): void {
    this.refusedClientMessages.set(messageId, error);
  }

  dropNext(method: string, options: { afterRunning?: boolean } = {}, times = 1): void {
    const queue = this.injectedDrops.get(method.toLowerCase()) ?? [];
    for (let i = 0; i < times; i++) queue.push({ afterRunning: options.afterRunning ?? false });
    this.injectedDrops.set(method.toLowerCase(), queue);
  }

  failNextOAuth(endpoint: 'oauth.token' | 'app.info', reply: ErrorReply, times = 1): void {
    const queue = this.injectedOAuthFailures.get(endpoint) ?? [];
    for (let i = 0; i < times; i++) queue.push(reply);
    this.injectedOAuthFailures.set(endpoint, queue);
  }

  requireFields(entity: CrmEntity, fields: string[]): void {
    this.requiredCrmFields.set(entity, fields);
  }

  setOperatingLimit(method: string, blockedUntilUnixSeconds: number): void {
    this.operatingBlockedUntil.set(method.toLowerCase(), blockedUntilUnixSeconds);
  }

  hold(target: HoldTarget, count = 1): Hold {
    const key = 'rest' in target ? `${target.afterRunning ? 'answer ' : ''}rest ${target.rest.toLowerCase()}` : `oauth ${target.oauth}`;
    let arrive = () => {};
    let release = () => {};
    const arrived = new Promise<void>((resolve) => {
      arrive = resolve;
    });
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    this.holds.push({ key, command: 'rest' in target ? target.command?.toLowerCase() : undefined, remaining: count, arrive, released });
    return { arrived, release };
  }

  /** Waits at the first hold that still catches `key`; the last request it catches resolves `arrived`. */
  private async waitAtHold(key: string, commands: string[] = []): Promise<void> {
    const hold = this.holds.find((item) => item.key === key && item.remaining > 0 && (item.command === undefined || commands.includes(item.command)));
    if (hold === undefined) return;
    hold.remaining -= 1;
    if (hold.remaining === 0) {
      this.holds.splice(this.holds.indexOf(hold), 1);
      hold.arrive();
    }
    await hold.released;
  }

  resetCalls(): void {
    this.calls.length = 0;
    this.oauthCalls.length = 0;
  }

  // ----- CRM seeding ---------------------------------------------------------------------------

  seedLead(input: SeedPerson = {}): number {
    return this.createCrmRecord('lead', personFields(input), this.options.adminUserId);
  }

  seedContact(input: SeedPerson = {}): number {
    return this.createCrmRecord('contact', personFields(input), this.options.adminUserId);
  }

  seedUser(input: { name?: string; email?: string; departments?: number[] } = {}): number {
    const id = Math.max(...this.users.keys()) + 1;
    this.users.set(id, { id, name: input.name ?? `User${id}`, lastName: 'Seeded', email: input.email ?? `user${id}@example.com`, departments: input.departments });
    return id;
  }

  setUserDepartments(userId: number, departments: number[]): void {
    const user = this.users.get(userId);
    if (!user) throw new Error(`fake Bitrix24 has no user ${userId}`);
    user.departments = departments;
  }

  seedCompany(input: SeedPerson = {}): number {
    return this.createCrmRecord('company', personFields(input), this.options.adminUserId);
  }

  seedDeal(input: SeedDeal = {}): number {
    const fields: Params = { ...input.fields };
    if (input.title !== undefined) fields.TITLE = input.title;
    if (input.contactId !== undefined) fields.CONTACT_ID = input.contactId;
    if (input.contactIds !== undefined) {
      fields.CONTACT_ID = input.contactIds[0] ?? null;
      fields.CONTACT_IDS = input.contactIds.map(String);
    }
    if (input.companyId !== undefined) fields.COMPANY_ID = input.companyId;
    return this.createCrmRecord('deal', fields, this.options.adminUserId);
  }

  seedSmartProcess(entityTypeId: number, title = `Smart process ${entityTypeId}`): void {
    this.smartProcesses.set(entityTypeId, { id: this.smartProcesses.size + 1, entityTypeId, title });
  }

  seedSmartItem(entityTypeId: number, input: { title?: string; contactIds?: number[]; companyId?: number } = {}): number {
    if (!this.smartProcesses.has(entityTypeId)) throw new Error(`fake Bitrix24 has no smart process ${entityTypeId}`);
    const id = this.nextSmartItemId++;
    const contactIds = input.contactIds ?? [];
    // crm.item.* speaks camelCase with integer ids (§10 crm.item.*).
    this.smartItems.set(`${entityTypeId} ${id}`, {
      id,
      entityTypeId,
      title: input.title ?? `Item #${id}`,
      contactId: contactIds[0] ?? null,
      contactIds,
      companyId: input.companyId ?? 0,
      assignedById: this.options.adminUserId,
    });
    return id;
  }

  denyRead(userId: number, entityTypeId: number, id: number): void {
    this.deniedReads.add(`${userId} ${entityTypeId} ${id}`);
  }

  private mayRead(caller: Caller, entityTypeId: number, id: number): boolean {
    return !this.deniedReads.has(`${caller.user.id} ${entityTypeId} ${id}`);
  }

  /** Stores a record the way legacy crm.*.get returns it: UPPER_CASE keys, ids as strings (§10). */
  private createCrmRecord(entity: CrmEntity, fields: Params, userId: number): number {
    const id = this.nextCrmId[entity]++;
    const now = isoSeconds(Date.now());
    const record: CrmRecord = {
      ID: String(id),
      ...(entity === 'deal' ? { TITLE: `Deal #${id}`, STAGE_ID: 'NEW', CATEGORY_ID: '0', CONTACT_ID: null } : {}),
      ...(entity === 'lead' ? { TITLE: `Lead #${id}`, STATUS_ID: 'NEW' } : {}),
      ...(entity === 'company' ? { TITLE: `Company #${id}` } : {}),
      ASSIGNED_BY_ID: String(userId),
      CREATED_BY_ID: String(userId),
      MODIFY_BY_ID: String(userId),
      DATE_CREATE: now,
      DATE_MODIFY: now,
    };
    for (const [key, value] of Object.entries(fields)) {
      const name = key.toUpperCase();
      if (name === 'ID') continue;
      if (CRM_MULTIFIELDS.has(name)) record[name] = this.toMultifield(name, value);
      else record[name] = typeof value === 'number' ? String(value) : value;
    }
    if (entity !== 'deal') {
      record.HAS_PHONE = hasItems(record.PHONE) ? 'Y' : 'N';
      record.HAS_EMAIL = hasItems(record.EMAIL) ? 'Y' : 'N';
      record.HAS_IMOL = 'N';
    }
    this.crm[CRM_COLLECTION[entity]].set(id, record);
    return id;
  }

  /** Multifield input [{VALUE, VALUE_TYPE}] (or {n0: {...}}) → stored [{ID, VALUE_TYPE, VALUE, TYPE_ID}] (§10). */
  private toMultifield(typeId: string, value: unknown): CrmRecord[] {
    const items = Array.isArray(value) ? value : isRecord(value) ? Object.values(value) : [];
    return items
      .filter(isRecord)
      .filter((item) => text(item.VALUE) !== '')
      .map((item) => ({
        ID: String(this.nextMultifieldId++),
        VALUE_TYPE: text(item.VALUE_TYPE) || 'WORK',
        VALUE: text(item.VALUE),
        TYPE_ID: typeId,
      }));
  }

  // ----- HTTP: the portal ------------------------------------------------------------------------

  servePage(path: string, html: string): void {
    this.pages.set(path, html);
  }

  private buildPortalApp(): Hono {
    const app = new Hono();
    app.get('/page/*', (c) => {
      const html = this.pages.get(c.req.path);
      return html === undefined ? c.text('Not found', 404) : c.html(html);
    });
    // An app page calls the portal's REST from the browser, cross-origin (pages-and-modes §3.5):
    // the preflight is answered and every answer names the calling origin. GUESS: Bitrix24's exact
    // CORS headers are not documented; these are what the b24jssdk call needs.
    app.use('/rest/*', cors({ origin: (origin) => origin, allowMethods: ['GET', 'POST'], allowHeaders: ['content-type'] }));
    app.get('/rest/download.json', (c) => this.downloadOperatorFile(c));
    app.all('/rest/*', async (c) => {
      const startedAt = nowMs();
      const pathMethod = decodeURIComponent(c.req.path.slice('/rest/'.length));
      let params: Params;
      try {
        params = await readRequestParams(c.req.raw);
      } catch {
        // GUESS: the reply to an unparsable JSON body is undocumented.
        return jsonResponse(c, { error: 'INVALID_REQUEST', error_description: 'Invalid JSON body' }, 400);
      }
      const { auth, ...rest } = params;
      const token = typeof auth === 'string' ? auth : undefined;
      const method = pathMethod.toLowerCase().replace(/\.json$/, '');

      if (this.bucket !== undefined && !this.bucket.tryAdd()) {
        const error = new RestError(503, 'QUERY_LIMIT_EXCEEDED', 'Too many requests'); // §4
        this.record(this.calls, method, rest, token, error.status, error.code);
        return jsonResponse(c, error.body(), error.status);
      }
      if (method.includes('/')) {
        // REST v3 (/rest/api/...) and webhook paths (/rest/{user}/{code}/...) are not part of this fake.
        const error = method.startsWith('api/') ? methodNotFound() : noAuthFound();
        this.record(this.calls, method, rest, token, error.status, error.code);
        return jsonResponse(c, error.body(), error.status);
      }

      const drop = this.injectedDrops.get(method)?.shift();
      if (drop !== undefined) {
        if (drop.afterRunning) await this.execute(method, rest, token, startedAt);
        (c.env as HttpBindings).incoming.socket.destroy();
        return c.body(null, 500); // never written: the socket is gone
      }
      const batchCommands = method === 'batch' ? Object.values(isRecord(rest.cmd) ? rest.cmd : {}).map((command) => String(command).split('?')[0]!.toLowerCase()) : [];
      await this.waitAtHold(`rest ${method}`, batchCommands);
      const outcome = await this.execute(method, rest, token, startedAt);
      await this.waitAtHold(`answer rest ${method}`, batchCommands);
      if (!outcome.ok) return jsonResponse(c, outcome.body, outcome.status);
      const envelope: Record<string, unknown> = { result: outcome.result };
      if (outcome.next !== undefined) envelope.next = outcome.next;
      if (outcome.total !== undefined) envelope.total = outcome.total;
      envelope.time = outcome.time;
      return jsonResponse(c, envelope, 200);
    });
    return app;
  }

  private record(log: RecordedCall[], method: string, params: Params, accessToken: string | undefined, status: number, error?: string): RecordedCall {
    const entry: RecordedCall = { method, params, status, at: Date.now() };
    if (error !== undefined) entry.error = error;
    if (accessToken !== undefined) entry.accessToken = accessToken;
    log.push(entry);
    return entry;
  }

  /**
   * Runs one REST method (top level or batch sub-command) and records it. Order: injected fault,
   * auth (§2), operating block (§4), method lookup (§3), the method itself.
   */
  private async execute(method: string, params: Params, token: string | undefined, startedAt = nowMs()): Promise<Outcome> {
    const entry = this.record(this.calls, method, params, token, 0);
    const outcome = await this.runMethod(method, params, token, startedAt);
    entry.status = outcome.ok ? 200 : outcome.status;
    if (!outcome.ok) entry.error = text(outcome.body.error);
    return outcome;
  }

  private async runMethod(method: string, params: Params, token: string | undefined, startedAt: number, injectable = true): Promise<Outcome> {
    // The method run behind an answer lost (afterRunning) takes no injected failure of its own: each queued one is one request's.
    const injected = injectable ? this.injectedFailures.get(method)?.shift() : undefined;
    if (injected !== undefined) {
      if (injected.afterRunning) await this.runMethod(method, params, token, startedAt, false);
      return { ok: false, status: injected.status, body: injectedBody(injected) };
    }
    try {
      const caller = this.resolveCaller(token);
      const blockedUntil = this.operatingBlockedUntil.get(method);
      if (blockedUntil !== undefined && Date.now() / 1000 < blockedUntil) {
        // §4; the description text is undocumented (examples/rest-error-operation-time-limit.json).
        throw new RestError(429, 'OPERATION_TIME_LIMIT', 'Method is blocked due to operation time limit.');
      }
      const handler = this.methods.get(method);
      if (handler === undefined) throw methodNotFound();
      const result = await handler(params, caller);
      return { ok: true, ...result, time: this.timeBlock(method, startedAt) };
    } catch (error) {
      if (error instanceof RestError) return { ok: false, status: error.status, body: error.body() };
      const description = error instanceof Error ? error.message : String(error);
      return { ok: false, status: 500, body: { error: 'INTERNAL_SERVER_ERROR', error_description: description } };
    }
  }

  /** The `time` block of §3/§4; `operating` accumulates per method over the fake's life. */
  private timeBlock(method: string, startedAt: number): RestTime {
    const finishedAt = nowMs();
    const seconds = (finishedAt - startedAt) / 1000;
    const operating = (this.operatingSeconds.get(method) ?? 0) + seconds;
    this.operatingSeconds.set(method, operating);
    return {
      start: startedAt / 1000,
      finish: finishedAt / 1000,
      duration: seconds,
      processing: seconds,
      date_start: isoSeconds(startedAt),
      date_finish: isoSeconds(finishedAt),
      operating_reset_at: Math.floor(finishedAt / 1000) + 600,
      operating,
    };
  }

  // ----- HTTP: the OAuth server (§1 app.info, §2) ------------------------------------------------

  private buildOAuthApp(): Hono {
    const app = new Hono();
    const token = async (c: Context): Promise<Response> => {
      const params = await readRequestParams(c.req.raw);
      const { client_secret: _secret, ...recorded } = params; // the client secret is never recorded
      await this.waitAtHold('oauth oauth.token');
      const reply = this.oauthToken(params);
      const error = text(reply.body.error) || undefined;
      this.record(this.oauthCalls, 'oauth.token', recorded, undefined, reply.status, error);
      return jsonResponse(c, reply.body, reply.status);
    };
    app.all('/oauth/token/', token);
    app.all('/oauth/token', token);
    const appInfo = async (c: Context): Promise<Response> => {
      const { auth, ...rest } = await readRequestParams(c.req.raw);
      const accessToken = typeof auth === 'string' ? auth : undefined;
      await this.waitAtHold('oauth app.info');
      const reply = this.oauthAppInfo(accessToken);
      const error = text(reply.body.error) || undefined;
      this.record(this.oauthCalls, 'app.info', rest, accessToken, reply.status, error);
      return jsonResponse(c, reply.body, reply.status);
    };
    app.all('/rest/app.info', appInfo);
    app.all('/rest/app.info.json', appInfo);
    return app;
  }

  private oauthToken(params: Params): { status: number; body: Record<string, unknown> } {
    const injected = this.injectedOAuthFailures.get('oauth.token')?.shift();
    if (injected !== undefined) {
      return { status: injected.status, body: injectedBody(injected) };
    }
    if (params.client_id !== this.clientId || params.client_secret !== this.clientSecret) {
      // GUESS: description text; code and status per §2.
      return { status: 401, body: { error: 'invalid_client', error_description: 'Invalid client credentials' } };
    }
    if (params.grant_type !== 'refresh_token') {
      // GUESS: the fake mints no authorization codes, so every other grant is refused this way.
      return { status: 400, body: { error: 'invalid_request', error_description: 'Unsupported grant_type' } };
    }
    const refreshToken = text(params.refresh_token);
    const record = this.refreshTokens.get(refreshToken);
    if (record === undefined || record.used) {
      // examples/oauth-error-invalid-grant.json
      return {
        status: 400,
        body: {
          error: 'invalid_grant',
          error_description: 'The provided authorization grant is invalid, expired, revoked',
        },
      };
    }
    // Rotation (§2): the old refresh token dies now; the old access token lives until it expires.
    record.used = true;
    const pair = this.mintTokenPair(record.userId);
    // Key order and types of examples/oauth-refresh.response.json.
    return {
      status: 200,
      body: {
        access_token: pair.accessToken,
        client_endpoint: this.clientEndpoint,
        domain: 'oauth.bitrix.info',
        expires: pair.expires,
        expires_in: this.options.accessTokenTtlSeconds,
        member_id: this.memberId,
        refresh_token: pair.refreshToken,
        scope: this.scope,
        server_endpoint: `${this.oauthUrl}/rest/`,
        status: 'L',
        user_id: record.userId,
      },
    };
  }

  /** app.info on the authorization server: the trusted install status (§1, b24pysdk shape). */
  private oauthAppInfo(accessToken: string | undefined): { status: number; body: Record<string, unknown> } {
    const injected = this.injectedOAuthFailures.get('app.info')?.shift();
    if (injected !== undefined) {
      return { status: injected.status, body: injectedBody(injected) };
    }
    const record = accessToken === undefined ? undefined : this.accessTokens.get(accessToken);
    if (record === undefined) {
      // GUESS: description text.
      const body = { error: 'invalid_token', error_description: 'The access token provided is invalid' };
      return { status: 401, body };
    }
    if (Date.now() >= record.expiresAtMs) return { status: 401, body: expiredToken().body() };
    return {
      status: 200,
      body: {
        result: {
          client_id: record.clientId ?? this.clientId,
          scope: this.scope,
          expires: isoSeconds(record.expiresAtMs),
          user_id: String(record.userId),
          install: {
            installed: this.installed,
            version: '1',
            status: 'L',
            scope: this.scope,
            domain: this.domain,
            uri: `https://${this.domain}`, // GUESS: the portal's public address, not the loopback one
            client_endpoint: this.clientEndpoint,
            member_id: this.memberId,
            member_type: 'user',
          },
        },
      },
    };
  }

  // ----- REST methods ------------------------------------------------------------------------------

  private buildMethodTable(): Map<string, MethodHandler> {
    const crmGet =
      (entity: CrmEntity): MethodHandler =>
      (params, caller) =>
        this.crmGet(entity, params, caller);
    const crmAdd =
      (entity: CrmEntity): MethodHandler =>
      (params, caller) =>
        this.crmAdd(entity, params, caller);
    const crmUpdate =
      (entity: CrmEntity): MethodHandler =>
      (params) =>
        this.crmUpdate(entity, params);
    return new Map<string, MethodHandler>([
      ['app.info', () => ({ result: this.portalAppInfo() })],
      ['profile', (_params, caller) => ({ result: this.profile(caller.user) })],
      ['user.current', (_params, caller) => ({ result: this.userView(caller.user) })],
      ['user.get', (params) => this.userGet(params)],
      ['department.get', (params) => this.departmentGet(params)],
      ['batch', (params, caller) => this.batch(params, caller)],

      ['bizproc.robot.add', (params, caller) => this.addActivity('robot', params, caller)],
      ['bizproc.robot.update', (params, caller) => this.updateActivity('robot', params, caller)],
      ['bizproc.robot.delete', (params, caller) => this.deleteActivity('robot', params, caller)],
      ['bizproc.robot.list', (_params, caller) => this.listActivities('robot', caller)],
      ['bizproc.activity.add', (params, caller) => this.addActivity('activity', params, caller)],
      ['bizproc.activity.update', (params, caller) => this.updateActivity('activity', params, caller)],
      ['bizproc.activity.delete', (params, caller) => this.deleteActivity('activity', params, caller)],
      ['bizproc.activity.list', (_params, caller) => this.listActivities('activity', caller)],
      ['bizproc.event.send', (params) => this.eventSend(params)],
      ['bizproc.activity.log', (params) => this.activityLogWrite(params)],

      ['event.bind', (params, caller) => this.eventBind(params, caller)],
      ['event.unbind', (params, caller) => this.eventUnbind(params, caller)],
      ['event.get', (_params, caller) => this.eventGet(caller)],
      ['placement.bind', (params) => this.placementBind(params)],
      ['placement.unbind', (params) => this.placementUnbind(params)],
      ['placement.get', () => ({ result: this.placements.map(placementView) })],

      ['crm.category.list', (params) => this.categoryList(params)],
      ['crm.status.list', (params) => this.statusList(params)],

      ['crm.lead.add', crmAdd('lead')],
      ['crm.contact.add', crmAdd('contact')],
      ['crm.deal.add', crmAdd('deal')],
      ['crm.company.add', crmAdd('company')],
      ['crm.lead.get', crmGet('lead')],
      ['crm.contact.get', crmGet('contact')],
      ['crm.deal.get', crmGet('deal')],
      ['crm.company.get', crmGet('company')],
      ['crm.lead.list', (params) => this.crmList('lead', params)],
      ['crm.contact.list', (params) => this.crmList('contact', params)],
      ['crm.deal.list', (params) => this.crmList('deal', params)],
      ['crm.company.list', (params) => this.crmList('company', params)],
      ['crm.lead.update', crmUpdate('lead')],
      ['crm.contact.update', crmUpdate('contact')],
      ['crm.deal.update', crmUpdate('deal')],
      ['crm.company.update', crmUpdate('company')],
      ['crm.duplicate.findbycomm', (params) => this.findByComm(params)],
      ['crm.deal.contact.items.get', (params, caller) => this.dealContactItems(params, caller)],
      ['crm.item.get', (params, caller) => this.itemGet(params, caller)],
      ['crm.type.list', () => this.typeList()],
      ['crm.automation.trigger.add', (params, caller) => this.triggerAdd(params, caller)],
      ['crm.automation.trigger.list', (_params, caller) => this.triggerList(caller)],
      ['crm.automation.trigger.delete', (params, caller) => this.triggerDelete(params, caller)],
      ['crm.automation.trigger.execute', (params, caller) => this.triggerExecute(params, caller)],
      ['im.notify.system.add', (params) => this.notifySystemAdd(params)],
      ['crm.timeline.comment.add', (params, caller) => this.timelineCommentAdd(params, caller)],
      ['crm.timeline.comment.list', (params) => this.timelineCommentList(params)],
      ['crm.timeline.logmessage.add', (params, caller) => this.timelineLogMessageAdd(params, caller)],

      ['imconnector.register', (params) => this.connectorRegister(params)],
      ['imconnector.unregister', (params) => this.connectorUnregister(params)],
      ['imconnector.list', () => ({ result: { ...BUILT_IN_CONNECTORS, ...Object.fromEntries([...this.connectors].map(([id, data]) => [id, text(data.NAME)])) } })],
      ['imconnector.activate', (params) => this.connectorActivate(params)],
      ['imconnector.status', (params) => this.connectorStatus(params)],
      ['imconnector.connector.data.set', (params) => this.connectorDataSet(params)],
      ['imconnector.set.error', (params) => this.connectorSetError(params)],
      ['imconnector.send.messages', (params) => this.connectorSendMessages(params)],
      ['imconnector.update.messages', (params) => this.connectorUpdateMessages(params)],
      ['imconnector.delete.messages', (params) => this.connectorDeleteMessages(params)],
      ['imconnector.send.status.delivery', (params) => this.connectorStatusReport('imconnector.send.status.delivery', params)],
      ['imconnector.send.status.reading', (params) => this.connectorStatusReport('imconnector.send.status.reading', params)],
      ['imopenlines.config.list.get', () => ({ result: [...this.openLines.values()].map(openLineView) })],
      ['imopenlines.config.get', (params) => this.openLineGet(params)],
      ['imopenlines.config.add', (params) => this.openLineAdd(params)],
      ['imopenlines.crm.chat.getlastid', (params, caller) => this.crmChatLastId(params, caller)],
      ['imopenlines.session.history.get', (params, caller) => this.sessionHistory(params, caller)],
    ]);
  }

  /** crm.category.list {entityTypeId}: deal pipelines, the general one (id 0) first. GUESS: the names. */
  private categoryList(params: Params): MethodResult {
    const entityTypeId = Number(params.entityTypeId ?? upperKeys(params).ENTITYTYPEID);
    if (entityTypeId !== 2) return { result: { categories: [] } };
    return { result: { categories: DEAL_CATEGORIES.map((category) => ({ ...category, entityTypeId: 2 })) } };
  }

  /** crm.status.list {filter: {ENTITY_ID}}: deal stages per pipeline (DEAL_STAGE, DEAL_STAGE_<id>) and sources. */
  private statusList(params: Params): MethodResult {
    const upper = upperKeys(params);
    const filter = upperKeys(isRecord(upper.FILTER) ? upper.FILTER : {});
    const entityId = text(filter.ENTITY_ID);
    const statuses = CRM_STATUSES[entityId] ?? [];
    return { result: statuses.map((status, index) => ({ ID: String(index + 1), ENTITY_ID: entityId, SORT: String((index + 1) * 10), ...status })) };
  }

  /** app.info on the portal (§1). GUESS: ID and LICENSE values are illustrative. */
  private portalAppInfo(): Record<string, unknown> {
    return {
      ID: 7,
      CODE: this.clientId,
      VERSION: 1,
      STATUS: 'L',
      INSTALLED: this.installed,
      PAYMENT_EXPIRED: 'N',
      DAYS: null,
      LANGUAGE_ID: this.options.languageId,
      LICENSE: 'en_project',
      LICENSE_TYPE: 'project',
      LICENSE_FAMILY: 'project',
    };
  }

  /** `profile` (§10): the token's user and whether they are an admin. */
  private profile(user: PortalUser): Record<string, unknown> {
    return {
      ID: String(user.id),
      ADMIN: this.isAdmin(user),
      NAME: user.name,
      LAST_NAME: user.lastName,
      PERSONAL_GENDER: '',
      TIME_ZONE: '',
      TIME_ZONE_OFFSET: 0,
    };
  }

  private userView(user: PortalUser): Record<string, unknown> {
    return {
      ID: String(user.id),
      ACTIVE: true,
      NAME: user.name,
      LAST_NAME: user.lastName,
      EMAIL: user.email,
      IS_ONLINE: 'Y',
      PERSONAL_GENDER: '',
      UF_DEPARTMENT: user.departments ?? [1],
    };
  }

  /** user.get: filter by ID/EMAIL/NAME/LAST_NAME/ACTIVE, either in FILTER or at top level (§10). */
  private userGet(params: Params): MethodResult {
    const upper = upperKeys(params);
    const filter = upperKeys(isRecord(upper.FILTER) ? upper.FILTER : upper);
    const users = [...this.users.values()].map((user) => this.userView(user));
    const matching = users.filter((view) => ['ID', 'EMAIL', 'NAME', 'LAST_NAME'].every((key) => filter[key] === undefined || text(filter[key]) === view[key]));
    return paginate(matching, upper.START);
  }

  private departmentGet(params: Params): MethodResult {
    const departments = [{ ID: '1', NAME: 'Company', SORT: 500, UF_HEAD: String(this.options.adminUserId) }];
    const id = upperKeys(params).ID;
    return paginate(id === undefined ? departments : departments.filter((d) => d.ID === text(id)), undefined);
  }

  // ----- batch (§3) ------------------------------------------------------------------------------

  private async batch(params: Params, caller: Caller): Promise<MethodResult> {
    const cmd = params.cmd;
    const commands: Array<[string, string]> = Array.isArray(cmd)
      ? cmd.map((command, index) => [String(index), text(command)])
      : isRecord(cmd)
        ? Object.entries(cmd).map(([key, command]) => [key, text(command)])
        : [];
    if (commands.length > BATCH_LIMIT) {
      throw new RestError(400, 'ERROR_BATCH_LENGTH_EXCEEDED', 'Max batch length exceeded');
    }
    const halt = text(params.halt) === '1' || params.halt === true;
    const results: Array<[string, unknown]> = [];
    const errors: Array<[string, unknown]> = [];
    const totals: Array<[string, unknown]> = [];
    const nexts: Array<[string, unknown]> = [];
    const times: Array<[string, unknown]> = [];
    const maps: Record<string, Array<[string, unknown]>> = {
      result: results,
      result_error: errors,
      result_total: totals,
      result_next: nexts,
      result_time: times,
    };

    for (const [key, command] of commands) {
      const startedAt = nowMs();
      const questionMark = command.indexOf('?');
      const method = (questionMark < 0 ? command : command.slice(0, questionMark))
        .trim()
        .toLowerCase()
        .replace(/\.json$/, '');
      // The inner query is URL-encoded once more than the outer body (§3 "Encoding"); qs decodes it.
      const innerQuery = questionMark < 0 ? '' : command.slice(questionMark + 1);
      const { auth: _innerAuth, ...innerParams } = parsePhpQuery(innerQuery);
      const subParams = substituteBatchReferences(innerParams, maps) as Params;

      let outcome: Outcome;
      if (method === 'batch') {
        const nested = new RestError(405, 'ERROR_BATCH_METHOD_NOT_ALLOWED', 'Method is not allowed for batch usage');
        outcome = { ok: false, status: nested.status, body: nested.body() };
        this.record(this.calls, method, subParams, caller.accessToken, nested.status, nested.code);
      } else {
        outcome = await this.execute(method, subParams, caller.accessToken, startedAt);
      }

      if (!outcome.ok) {
        errors.push([key, { error: outcome.body.error, error_description: outcome.body.error_description }]);
        if (halt) break;
        continue;
      }
      results.push([key, outcome.result]);
      if (outcome.total !== undefined) totals.push([key, outcome.total]);
      if (outcome.next !== undefined) nexts.push([key, outcome.next]);
      times.push([key, outcome.time]);
    }

    return {
      result: {
        result: phpArray(results),
        result_error: phpArray(errors),
        result_total: phpArray(totals),
        result_next: phpArray(nexts),
        result_time: phpArray(times),
      },
    };
  }

  // ----- robots and activities (§5, §6, §8) ------------------------------------------------------

  private registry(kind: ActivityKind): Map<string, Record<string, unknown>> {
    return kind === 'robot' ? this.robots : this.activities;
  }

  private addActivity(kind: ActivityKind, params: Params, caller: Caller): MethodResult {
    this.requireAdmin(caller);
    const data = prepareActivityData(params);
    if (phpEmpty(data)) throw activityValidation('Empty data!');
    validateActivityCode(data.CODE);
    checkHandlerUrl(data.HANDLER);
    if (phpEmpty(data.NAME)) throw activityValidation('Empty activity NAME!');
    if (data.PROPERTIES !== undefined) validateActivityProperties(data.PROPERTIES);
    if (data.RETURN_PROPERTIES !== undefined) validateActivityProperties(data.RETURN_PROPERTIES);
    if (kind === 'activity' && data.DOCUMENT_TYPE !== undefined) validateDocumentType(data.DOCUMENT_TYPE);
    if (data.FILTER !== undefined && !isRecord(data.FILTER) && !Array.isArray(data.FILTER)) {
      throw activityValidation('Wrong activity FILTER!');
    }
    const code = text(data.CODE);
    // Robots and activities share one CODE namespace per app (§5).
    if (this.robots.has(code) || this.activities.has(code)) {
      const description = kind === 'robot' ? 'Activity or Automation rule already installed!' : 'Activity or Robot already installed!';
      throw new RestError(400, 'ERROR_ACTIVITY_ALREADY_INSTALLED', description);
    }
    if (data.USE_PLACEMENT === 'Y') checkHandlerUrl(data.PLACEMENT_HANDLER);
    this.registry(kind).set(code, data);
    return { result: true };
  }

  private updateActivity(kind: ActivityKind, params: Params, caller: Caller): MethodResult {
    this.requireAdmin(caller);
    const data = prepareActivityData(params);
    validateActivityCode(data.CODE);
    const stored = this.registry(kind).get(text(data.CODE));
    if (stored === undefined) throw new RestError(400, 'ERROR_ACTIVITY_NOT_FOUND', 'Activity or Robot not found!');
    const fields = data.FIELDS;
    if (!isRecord(fields) || phpEmpty(fields)) throw activityValidation('No fields to update');

    const update: Params = {};
    if (fields.HANDLER !== undefined) {
      checkHandlerUrl(fields.HANDLER);
      update.HANDLER = fields.HANDLER;
    }
    for (const key of ['AUTH_USER_ID', 'USE_SUBSCRIPTION', 'USE_PLACEMENT', 'DESCRIPTION']) {
      if (fields[key] !== undefined) update[key] = fields[key];
    }
    if (!phpEmpty(fields.NAME)) update.NAME = fields.NAME;
    for (const key of ['PROPERTIES', 'RETURN_PROPERTIES']) {
      if (fields[key] === undefined) continue;
      validateActivityProperties(fields[key]);
      update[key] = fields[key];
    }
    if (fields.DOCUMENT_TYPE !== undefined) {
      if (!phpEmpty(fields.DOCUMENT_TYPE)) validateDocumentType(fields.DOCUMENT_TYPE);
      update.DOCUMENT_TYPE = fields.DOCUMENT_TYPE;
    }
    if (fields.FILTER !== undefined) {
      if (!phpEmpty(fields.FILTER) && !isRecord(fields.FILTER) && !Array.isArray(fields.FILTER)) {
        throw activityValidation('Wrong activity FILTER!');
      }
      update.FILTER = fields.FILTER;
    }
    if (fields.PLACEMENT_HANDLER !== undefined) {
      checkHandlerUrl(fields.PLACEMENT_HANDLER);
      update.PLACEMENT_HANDLER = fields.PLACEMENT_HANDLER;
    }
    if (Object.keys(update).length === 0) throw activityValidation('No fields to update');
    Object.assign(stored, update);
    return { result: true };
  }

  private deleteActivity(kind: ActivityKind, params: Params, caller: Caller): MethodResult {
    this.requireAdmin(caller);
    const data = upperKeys(params);
    validateActivityCode(data.CODE);
    if (!this.registry(kind).delete(text(data.CODE))) {
      throw new RestError(400, 'ERROR_ACTIVITY_NOT_FOUND', 'Activity or Robot not found!');
    }
    return { result: true };
  }

  /** Listing is admin-only too ("admin only" for the whole bizproc.robot family, §5). */
  private listActivities(kind: ActivityKind, caller: Caller): MethodResult {
    this.requireAdmin(caller);
    return { result: [...this.registry(kind).keys()] };
  }

  /** §8: unknown token → 403; a finished or non-waiting step → `true`, silently ignored. */
  private eventSend(params: Params): MethodResult {
    const data = upperKeys(params);
    const eventToken = text(data.EVENT_TOKEN);
    const record = this.eventTokens.get(eventToken);
    if (record === undefined) throw accessDenied();
    if (record.completed || !record.waiting) return { result: true };
    record.completed = true;

    const registered = this.robots.get(record.code) ?? this.activities.get(record.code);
    const allowed = isRecord(registered?.RETURN_PROPERTIES) ? registered.RETURN_PROPERTIES : {};
    const given = isRecord(data.RETURN_VALUES) ? data.RETURN_VALUES : {};
    // Keys not declared in RETURN_PROPERTIES are discarded (§8).
    const returnValues = Object.fromEntries(Object.entries(given).filter(([key]) => key in allowed));
    const sent: SentEvent = { eventToken, returnValues };
    const logMessage = text(data.LOG_MESSAGE);
    if (logMessage !== '') sent.logMessage = logMessage;
    this.sentEvents.push(sent);
    return { result: true };
  }

  private activityLogWrite(params: Params): MethodResult {
    const data = upperKeys(params);
    const eventToken = text(data.EVENT_TOKEN);
    if (!this.eventTokens.has(eventToken)) throw accessDenied();
    const message = text(data.LOG_MESSAGE);
    if (phpEmpty(message)) throw new RestError(400, 'ERROR_EMPTY_LOG_MESSAGE', 'Empty log message!');
    this.activityLog.push({ eventToken, message });
    return { result: true };
  }

  // ----- events and placements (§9, §11) ---------------------------------------------------------

  private eventBind(params: Params, caller: Caller): MethodResult {
    const data = upperKeys(params);
    const event = text(data.EVENT).toUpperCase();
    const eventType = text(data.EVENT_TYPE).toLowerCase() || 'online';
    let authType = positiveInt(data.AUTH_TYPE) ?? 0;
    const admin = this.isAdmin(caller.user);
    if (authType > 0 && !admin && authType !== caller.user.id) {
      throw accessDenied('Event binding with AUTH_TYPE requires administrator access rights');
    }
    if (authType === 0 && !admin) authType = caller.user.id; // a non-admin's handler gets their own tokens
    if (event === '') throw argumentNull('EVENT');
    if (eventType !== 'online' && eventType !== 'offline') {
      throw new RestError(400, 'ERROR_ARGUMENT', 'Value must be one of {online|offline}', { argument: 'EVENT_TYPE' });
    }
    const offline = eventType === 'offline';
    let handler = text(data.HANDLER);
    if (offline) {
      if (!admin) throw accessDenied('Offline events binding requires administrator access rights');
      handler = '';
      authType = 0;
    } else {
      if (handler === '') throw argumentNull('HANDLER');
      checkHandlerUrl(handler);
    }
    if (!isKnownEvent(event)) throw new RestError(400, 'ERROR_EVENT_NOT_FOUND', 'Event not found');
    const duplicate = this.eventBindings.some((b) => b.event === event && b.handler === handler && b.authType === authType && b.offline === offline);
    if (duplicate) throw handlerAlreadyBound();
    this.eventBindings.push({ id: this.nextEventHandlerId++, event, handler, authType, offline });
    return { result: true };
  }

  private eventUnbind(params: Params, caller: Caller): MethodResult {
    const data = upperKeys(params);
    const event = text(data.EVENT).toUpperCase();
    if (event === '') throw argumentNull('EVENT');
    const offline = text(data.EVENT_TYPE).toLowerCase() === 'offline';
    const admin = this.isAdmin(caller.user);
    if (offline && !admin) throw accessDenied('Offline events unbinding requires administrator access rights');
    const handler = offline ? '' : text(data.HANDLER);
    if (!offline && handler === '') throw argumentNull('HANDLER');
    let authType: number | undefined;
    if (!offline && data.AUTH_TYPE !== undefined) {
      authType = positiveInt(data.AUTH_TYPE) ?? 0;
      if (!admin && authType !== caller.user.id) {
        throw accessDenied('Event unbinding with AUTH_TYPE requires administrator access rights');
      }
    } else if (!offline && !admin) {
      authType = caller.user.id;
    }
    const matches = (b: EventBinding): boolean => b.event === event && b.handler === handler && b.offline === offline && (authType === undefined || b.authType === authType);
    const remaining = this.eventBindings.filter((b) => !matches(b));
    const count = this.eventBindings.length - remaining.length;
    this.eventBindings.splice(0, this.eventBindings.length, ...remaining);
    return { result: { count } };
  }

  private eventGet(caller: Caller): MethodResult {
    const admin = this.isAdmin(caller.user);
    const visible = this.eventBindings.filter((b) => admin || b.authType === caller.user.id);
    return {
      result: visible.map((b) =>
        b.offline ? { event: b.event, connector_id: '', offline: 1 } : { event: b.event, handler: b.handler, auth_type: String(b.authType), offline: 0 },
      ),
    };
  }

  private placementBind(params: Params): MethodResult {
    const data = upperKeys(params);
    const placement = text(data.PLACEMENT).toUpperCase();
    const handler = text(data.HANDLER);
    if (placement === '') throw argumentNull('PLACEMENT');
    if (handler === '') throw argumentNull('HANDLER');
    checkHandlerUrl(handler);
    if (this.placements.some((p) => p.placement === placement && p.handler === handler)) throw handlerAlreadyBound();
    const title = text(data.TITLE);
    const description = text(data.DESCRIPTION);
    const groupName = text(data.GROUP_NAME);
    this.placements.push({
      placement,
      handler,
      title,
      description,
      groupName,
      // GUESS: without LANG_ALL the portal derives one entry from TITLE for its own language.
      langAll: isRecord(data.LANG_ALL) ? data.LANG_ALL : { en: { TITLE: title, DESCRIPTION: description, GROUP_NAME: groupName } },
      options: isRecord(data.OPTIONS) ? data.OPTIONS : {},
      userId: positiveInt(data.USER_ID) ?? 0,
    });
    return { result: true };
  }

  private placementUnbind(params: Params): MethodResult {
    const data = upperKeys(params);
    const placement = text(data.PLACEMENT).toUpperCase();
    if (placement === '') throw argumentNull('PLACEMENT');
    const handler = text(data.HANDLER);
    // Without HANDLER every handler of the placement goes (§9).
    const matches = (p: PlacementBinding): boolean => p.placement === placement && (handler === '' || p.handler === handler);
    const remaining = this.placements.filter((p) => !matches(p));
    const count = this.placements.length - remaining.length;
    this.placements.splice(0, this.placements.length, ...remaining);
    return { result: { count } };
  }

  // ----- Open Channels connector (§12; pages-and-modes §2.1, §6) -------------------------------------

  /**
   * imconnector.register (§12.1): errors come as HTTP 200 with result.result=false
   * (examples/imconnector-register.error-200.json); registering the same ID again replaces it.
   */
  private connectorRegister(params: Params): MethodResult {
    const data = connectorParams(params);
    const refuse = (error: string, description: string): MethodResult => ({ result: { result: false, error, error_description: description } });
    const rawId = text(data.ID);
    // GUESS: the descriptions; the docs example's (German) text is "Connector-ID nicht angegeben".
    if (rawId === '') return refuse('CONNECTOR_ID_REQUIRED', 'Connector ID is not specified');
    if (rawId.includes('.')) return refuse('APPLICATION_REGISTRATION_ERROR_POINT', 'The connector ID must not contain a point');
    const id = rawId.toLowerCase(); // §12.1: lower-cased
    // GUESS: other characters outside [a-z0-9_] are refused with this code and text.
    if (!/^[a-z0-9_]+$/.test(id)) return refuse('CONNECTOR_ID_REQUIRED', 'The connector ID may only hold a-z, 0-9 and _');
    if (phpEmpty(data.NAME)) return refuse('NAME_REQUIRED', 'Connector name is not specified'); // GUESS: code and text
    const icon = isRecord(data.ICON) ? connectorParams(data.ICON) : {};
    if (phpEmpty(icon.DATA_IMAGE)) return refuse('ICON_REQUIRED', 'Connector icon is not specified'); // GUESS: code and text
    if (phpEmpty(data.PLACEMENT_HANDLER)) return refuse('HANDLER_URL_REQUIRED', 'Placement handler is not specified'); // GUESS: code and text
    this.connectors.set(id, { ...data, ID: id, ICON: icon });
    return { result: { result: true } };
  }

  /** GUESS: unregister answers like register, and drops the connector's state on every line. */
  private connectorUnregister(params: Params): MethodResult {
    const id = text(connectorParams(params).ID).toLowerCase();
    if (!this.connectors.delete(id)) return { result: { result: false, error: 'CONNECTOR_NOT_FOUND', error_description: 'Connector not found' } };
    for (const [key, state] of this.connectorLines) if (state.connector === id) this.connectorLines.delete(key);
    return { result: { result: true } };
  }

  /** CONNECTOR and LINE of a connector method: a registered connector (§12.5 IMCONNECTOR_NO_CORRECT_PROVIDER) and a line id. */
  private connectorAndLine(data: Params): { connector: string; line: number } {
    if (phpEmpty(data.CONNECTOR)) throw argumentNull('CONNECTOR');
    if (phpEmpty(data.LINE)) throw argumentNull('LINE');
    const connector = text(data.CONNECTOR).toLowerCase();
    if (!this.connectors.has(connector)) {
      throw new RestError(400, 'IMCONNECTOR_NO_CORRECT_PROVIDER', 'Could not find a suitable provider for the connector');
    }
    return { connector, line: positiveInt(data.LINE) ?? 0 };
  }

  private connectorLineState(connector: string, line: number): ConnectorLineState {
    const key = `${connector} ${line}`;
    let state = this.connectorLines.get(key);
    if (state === undefined) {
      state = { connector, line, active: false, connected: false, error: false, data: {} };
      this.connectorLines.set(key, state);
    }
    return state;
  }

  /** The line exists and is active, and the connector is activated on it; else NOT_ACTIVE_LINE (§12.5). */
  private requireActiveLine(connector: string, line: number): void {
    const open = this.openLines.get(line);
    const state = this.connectorLines.get(`${connector} ${line}`);
    // GUESS: a line the connector is not activated on counts as inactive too.
    if (open === undefined || !open.active || state === undefined || !state.active) {
      throw new RestError(400, 'NOT_ACTIVE_LINE', 'Line with this ID is inactive or does not exist');
    }
  }

  /** imconnector.activate {CONNECTOR, LINE, ACTIVE 1/0} → true (§12.3, examples/imconnector-activate.*). */
  private connectorActivate(params: Params): MethodResult {
    const data = connectorParams(params);
    const { connector, line } = this.connectorAndLine(data);
    // ACTIVE=0 is a value here, not "empty".
    if (data.ACTIVE === undefined || text(data.ACTIVE) === '') throw argumentNull('ACTIVE');
    if (!this.openLines.has(line)) throw new RestError(400, 'NOT_ACTIVE_LINE', 'Line with this ID is inactive or does not exist'); // GUESS
    const state = this.connectorLineState(connector, line);
    state.active = text(data.ACTIVE) === '1' || data.ACTIVE === true;
    return { result: true };
  }

  /** imconnector.status → {LINE, CONNECTOR, ERROR, CONFIGURED, STATUS} (ru:imconnector-status.md); LINE=0 gives false flags (§12.4). */
  private connectorStatus(params: Params): MethodResult {
    const data = connectorParams(params);
    const connector = text(data.CONNECTOR).toLowerCase();
    const line = positiveInt(data.LINE) ?? 0;
    const state = this.connectorLines.get(`${connector} ${line}`);
    const flags = this.connectorFlags(state);
    return {
      result: {
        LINE: String(line),
        CONNECTOR: connector,
        ERROR: flags.ERROR_STATUS,
        CONFIGURED: flags.CONNECTION_STATUS,
        STATUS: flags.STATUS,
      },
    };
  }

  /** The flags of pages-and-modes §2.1; STATUS = "configured and without an error" (ru:imconnector-status.md). */
  private connectorFlags(state: ConnectorLineState | undefined): Record<'STATUS' | 'ACTIVE_STATUS' | 'CONNECTION_STATUS' | 'REGISTER_STATUS' | 'ERROR_STATUS', boolean> {
    const active = state?.active ?? false;
    const connected = state?.connected ?? false;
    const error = state?.error ?? false;
    return { STATUS: connected && !error, ACTIVE_STATUS: active, CONNECTION_STATUS: connected, REGISTER_STATUS: connected, ERROR_STATUS: error };
  }

  /** imconnector.connector.data.set {CONNECTOR, LINE, DATA{ID, URL, URL_IM, NAME}} → true; overwrites the whole DATA (§12.4). */
  private connectorDataSet(params: Params): MethodResult {
    const data = connectorParams(params);
    const { connector, line } = this.connectorAndLine(data);
    if (!isRecord(data.DATA) || phpEmpty(data.DATA)) throw argumentNull('DATA');
    const state = this.connectorLineState(connector, line);
    state.data = { ...data.DATA };
    state.connected = true;
    state.error = false; // GUESS: a new connection clears an earlier error
    return { result: true };
  }

  /** imconnector.set.error {CONNECTOR, LINE} → true: the connector shows as failed on the line (pages-and-modes §2.1). */
  private connectorSetError(params: Params): MethodResult {
    const data = connectorParams(params);
    const { connector, line } = this.connectorAndLine(data);
    this.connectorLineState(connector, line).error = true;
    return { result: true };
  }

  /** MESSAGES of the imconnector.*.messages methods: a non-empty list of records (§12.5, examples/imconnector-send-messages.error.json). */
  private connectorMessages(data: Params): Params[] {
    if (phpEmpty(data.MESSAGES)) throw argumentNull('MESSAGES');
    const list = Array.isArray(data.MESSAGES) ? data.MESSAGES : isRecord(data.MESSAGES) ? Object.values(data.MESSAGES) : [];
    if (list.length === 0 || !list.every(isRecord)) {
      throw new RestError(400, '100', 'The MESSAGES parameter must be an array of messages (arrays)'); // docs error table
    }
    return list;
  }

  /**
   * imconnector.send.messages (§12.5): a client writes. Each message lands in the line's chat of its
   * chat.id (made at the first message, with a session), files are downloaded from their url before
   * the answer, as Bitrix24 does. Answer shape: examples/imconnector-send-messages.response.json.
   */
  private async connectorSendMessages(params: Params): Promise<MethodResult> {
    const data = connectorParams(params);
    const { connector, line } = this.connectorAndLine(data);
    const messages = this.connectorMessages(data);
    this.requireActiveLine(connector, line);
    const results: Params[] = [];
    for (const item of messages) results.push(await this.receiveClientMessage(connector, line, item));
    // GUESS: the call's SUCCESS is false when any message was refused.
    return { result: { SUCCESS: results.every((r) => r.SUCCESS === true), DATA: { RESULT: results } } };
  }

  private async receiveClientMessage(connector: string, line: number, item: Params): Promise<Params> {
    const user = isRecord(item.user) ? item.user : {};
    const message = isRecord(item.message) ? item.message : {};
    const chat = isRecord(item.chat) ? item.chat : {};
    const problem = clientMessageProblem(user, message, chat);
    // GUESS: a refused message is reported in its own entry (SUCCESS false, ERRORS) rather than failing the call.
    if (problem !== undefined) return { ...item, SUCCESS: false, ERRORS: [{ code: 'IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA', message: problem }] };
    const refused = this.refusedClientMessages.get(text(message.id));
    if (refused !== undefined) return { ...item, SUCCESS: false, ERRORS: [refused] };

    const externalUserId = text(user.id);
    const userKey = `${connector} ${externalUserId}`;
    const userId = this.connectorUsers.get(userKey) ?? this.nextConnectorUserId++;
    this.connectorUsers.set(userKey, userId);
    const externalChatId = text(chat.id);
    const chatKey = `${line} ${externalChatId}`;
    let openChat = this.chats.get(chatKey);
    if (openChat === undefined) {
      openChat = {
        line,
        connector,
        externalChatId,
        chatId: this.nextOpenLineChatId++,
        sessionId: this.nextSessionId++,
        externalUserId,
        userId,
        name: text(user.name),
        lastName: text(user.last_name),
        picture: null,
        messages: [],
      };
      this.chats.set(chatKey, openChat);
    }
    const picture = isRecord(user.picture) ? text(user.picture.url) : '';
    if (picture !== '') openChat.picture = picture;
    const files: OpenLineFile[] = [];
    const given = Array.isArray(message.files) ? message.files : isRecord(message.files) ? Object.values(message.files) : [];
    for (const file of given.filter(isRecord)) {
      const url = text(file.url);
      files.push({ name: text(file.name) || (url.split('/').pop() ?? ''), url, download: await fetchClientFile(url) });
    }
    const stored: OpenLineMessage = {
      imMessageId: this.nextImMessageId++,
      from: 'client',
      externalIds: text(message.id) === '' ? [] : [text(message.id)],
      authorId: userId,
      text: text(message.text),
      files,
      date: positiveInt(message.date) ?? nowSeconds(),
      deleted: false,
      delivery: 'delivered',
      read: false,
    };
    if (text(message.user_id) !== '') stored.sentAsUserId = Number(text(message.user_id));
    openChat.messages.push(stored);

    const chatView: Params = { id: externalChatId };
    if (text(chat.name) !== '') chatView.name = text(chat.name);
    if (text(chat.url) !== '') chatView.description = `Link to the original post: ${text(chat.url)}`;
    const extra: Params = {};
    if (text(user.skip_phone_validate) === 'Y') extra.skip_phone_validate = 'Y';
    if (text(message.disable_crm) === 'Y') extra.disable_tracker = 'Y'; // GUESS: disable_crm shows as extra.disable_tracker
    return {
      user: String(userId),
      // `date` is a PHP DateTime, JSON-encoded as {}; files come back empty (the docs example, which sent one).
      message: { id: text(message.id), date: {}, text: text(message.text), files: [] },
      chat: chatView,
      extra,
      SUCCESS: true,
      session: { ID: String(openChat.sessionId), CHAT_ID: String(openChat.chatId) },
    };
  }

  /** imconnector.update.messages: same shape, message.id = the external id of the client's message (§12.5). GUESS: the answer. */
  private connectorUpdateMessages(params: Params): MethodResult {
    const data = connectorParams(params);
    const { connector, line } = this.connectorAndLine(data);
    const messages = this.connectorMessages(data);
    this.requireActiveLine(connector, line);
    const results = messages.map((item) => {
      const found = this.clientMessage(line, item);
      if (found === undefined) return { ...item, SUCCESS: false, ERRORS: [{ code: 'MESSAGE_NOT_FOUND', message: 'Message not found' }] };
      const message = isRecord(item.message) ? item.message : {};
      if (message.text !== undefined) found.text = text(message.text);
      return { ...item, SUCCESS: true };
    });
    return { result: { SUCCESS: results.every((r) => r.SUCCESS === true), DATA: { RESULT: results } } };
  }

  /** imconnector.delete.messages {user{id}, message{id}, chat{id}} (§12.5). GUESS: the answer. */
  private connectorDeleteMessages(params: Params): MethodResult {
    const data = connectorParams(params);
    const { connector, line } = this.connectorAndLine(data);
    const messages = this.connectorMessages(data);
    this.requireActiveLine(connector, line);
    const results = messages.map((item) => {
      const found = this.clientMessage(line, item);
      if (found === undefined) return { ...item, SUCCESS: false, ERRORS: [{ code: 'MESSAGE_NOT_FOUND', message: 'Message not found' }] };
      found.deleted = true;
      return { ...item, SUCCESS: true };
    });
    return { result: { SUCCESS: results.every((r) => r.SUCCESS === true), DATA: { RESULT: results } } };
  }

  private clientMessage(line: number, item: Params): OpenLineMessage | undefined {
    const chat = isRecord(item.chat) ? item.chat : {};
    const message = isRecord(item.message) ? item.message : {};
    const id = text(message.id);
    return this.chats.get(`${line} ${text(chat.id)}`)?.messages.find((m) => m.from === 'client' && m.externalIds.includes(id));
  }

  /**
   * imconnector.send.status.delivery / .reading (§12.7): recorded as received. A message counts as
   * confirmed only when message.id is an ARRAY, even of one id; otherwise it stays "undelivered"
   * (pages-and-modes §6, examples/imconnector-send-status-delivery.*).
   */
  private connectorStatusReport(method: ConnectorStatusReport['method'], params: Params): MethodResult {
    const data = connectorParams(params);
    const { connector, line } = this.connectorAndLine(data);
    const messages = this.connectorMessages(data);
    const report: ConnectorStatusReport = { method, connector, line, messages: [] };
    for (const item of messages) {
      const im = isRecord(item.im) ? item.im : {};
      const message = isRecord(item.message) ? item.message : {};
      const chat = isRecord(item.chat) ? item.chat : {};
      const imMessageId = positiveInt(im.message_id) ?? 0;
      const externalChatId = text(chat.id);
      // JSON keeps an array; a PHP form body gives message[id][0]=… which parses to an array too.
      const accepted = Array.isArray(message.id) && message.id.length > 0;
      report.messages.push({ imMessageId, externalChatId, ids: message.id, accepted });
      const target = this.chats.get(`${line} ${externalChatId}`)?.messages.find((m) => m.imMessageId === imMessageId && m.from === 'operator');
      if (target === undefined || !accepted) continue;
      const ids = (message.id as unknown[]).map(text);
      if (method === 'imconnector.send.status.delivery') {
        target.delivery = 'delivered';
        target.externalIds = ids;
      } else {
        target.read = true;
      }
    }
    this.connectorStatusReports.push(report);
    return { result: { SUCCESS: true, DATA: [] } };
  }

  /** imopenlines.config.get {CONFIG_ID} (§12.4). GUESS: the not-found error. */
  private openLineGet(params: Params): MethodResult {
    const id = positiveInt(connectorParams(params).CONFIG_ID);
    const line = id === undefined ? undefined : this.openLines.get(id);
    if (line === undefined) throw new RestError(400, 'CONFIG_NOT_FOUND', 'Config not found');
    return { result: openLineView(line) };
  }

  /** imopenlines.config.add {PARAMS{LINE_NAME, ACTIVE?}} → the new line's id (§12.4). */
  private openLineAdd(params: Params): MethodResult {
    const data = connectorParams(params);
    const settings = isRecord(data.PARAMS) ? connectorParams(data.PARAMS) : {};
    const id = this.nextLineId++;
    this.openLines.set(id, { id, name: text(settings.LINE_NAME) || `Open Channel ${id}`, active: text(settings.ACTIVE) !== 'N' });
    return { result: id };
  }

  /**
   * imopenlines.crm.chat.getLastId {CRM_ENTITY_TYPE, CRM_ENTITY} → the chat id (docs/protocols.md B25;
   * ru:`api-reference/imopenlines/openlines/chats/imopenlines-crm-chat-get-last-id.md`): the chat of the
   * record's most recent OpenLine activity, which the user's CRM rights filter. The type is a name, any
   * case (the portal upper-cases it). Scope `imopenlines`. GUESS: insufficient_scope's wording, as for im.
   */
  private crmChatLastId(params: Params, caller: Caller): MethodResult {
    if (!this.scope.split(',').includes('imopenlines')) {
      throw new RestError(403, 'insufficient_scope', 'The request requires higher privileges than provided by the access token');
    }
    const data = upperKeys(params);
    const type = text(data.CRM_ENTITY_TYPE).toUpperCase();
    const raw = text(data.CRM_ENTITY);
    if (type === '' || raw === '' || raw === '0') throw new RestError(400, 'CRM_CHAT_EMPTY_CRM_DATA', 'Empty CRM data');
    const entityId = /^\d+$/.test(raw) ? Number(raw) : 0;
    if (entityId <= 0) throw new RestError(400, 'ERROR_ARGUMENT', 'The value of an argument CRM_ENTITY has an invalid type');
    const entityTypeId = { LEAD: 1, DEAL: 2, CONTACT: 3, COMPANY: 4 }[type];
    const link =
      entityTypeId !== undefined && this.mayRead(caller, entityTypeId, entityId)
        ? [...this.openLineCrmLinks].reverse().find((item) => item.entityTypeId === entityTypeId && item.entityId === entityId)
        : undefined;
    // No chat, an unknown type, a missing record and one the user may not read all answer alike.
    if (link === undefined) throw new RestError(400, 'CRM_CHAT_EMPTY_CRM_DATA', 'Could not find CRM entity');
    return { result: link.chatId };
  }

  linkOpenLineChatToCrm(input: { line: number; externalChatId: string; entityTypeId: number; entityId: number }): number {
    const chat = this.requireChat(input.line, input.externalChatId);
    this.openLineCrmLinks.push({ chatId: chat.chatId, entityTypeId: input.entityTypeId, entityId: input.entityId });
    return chat.chatId;
  }

  /**
   * imopenlines.session.history.get {CHAT_ID*, SESSION_ID*} (docs:`api-reference/imopenlines/openlines/sessions/imopenlines-session-history-get.md`):
   * the session's messages keyed by id (`senderid`, `text`, ids as strings) and the chat with its `entityId`,
   * `<connector>|<line>|<chat.id>|<client user id>` as the docs' livechat example (`livechat|58|1981|450`). The docs'
   * access rule: with CHAT_ID alone a user who is not in the chat gets ACCESS_DENIED; with SESSION_ID, no error.
   * Errors CHAT_ID (a wrong chat id), CHAT_TYPE (not an Open Channel chat). GUESS: the HTTP statuses; who is in the
   * chat (its client's connector user, and every operator who wrote in it); a deleted message's text and params.
   */
  private sessionHistory(params: Params, caller: Caller): MethodResult {
    const data = connectorParams(params);
    const chatId = positiveInt(data.CHAT_ID);
    const chat = chatId === undefined ? undefined : [...this.chats.values()].find((candidate) => candidate.chatId === chatId);
    if (chat === undefined) throw new RestError(400, 'CHAT_ID', 'Incorrect chat ID');
    const sessionId = positiveInt(data.SESSION_ID);
    if (sessionId === undefined && !this.openLineChatMembers(chat).includes(caller.user.id)) {
      throw new RestError(403, 'ACCESS_DENIED', 'You cannot open this conversation because you do not have sufficient rights.');
    }
    const messages = sessionId === undefined || sessionId === chat.sessionId ? chat.messages : [];
    const message = Object.fromEntries(
      messages.map((m) => [
        String(m.imMessageId),
        {
          id: String(m.imMessageId),
          chatid: String(chat.chatId),
          senderid: String(m.authorId),
          recipientid: `chat${chat.chatId}`,
          date: new Date(m.date * 1000).toISOString().replace(/\.\d{3}Z$/, '+00:00'),
          text: m.deleted ? 'This message was deleted.' : m.text,
          textlegacy: m.deleted ? 'This message was deleted.' : m.text,
          params: m.deleted ? { IS_DELETED: 'Y' } : m.externalIds.length > 0 ? { connectorMid: m.externalIds } : [],
        },
      ]),
    );
    return {
      result: {
        chatId: chat.chatId,
        canJoin: 'Y',
        sessionId: chat.sessionId,
        userId: `chat${chat.chatId}`,
        message,
        usersMessage: { [`chat${chat.chatId}`]: Object.keys(message).reverse() },
        users: {},
        chat: {
          [String(chat.chatId)]: {
            id: String(chat.chatId),
            name: `${chat.name} ${chat.lastName}`.trim(),
            owner: '0',
            entityType: 'LINES',
            entityId: `${chat.connector}|${chat.line}|${chat.externalChatId}|${chat.userId}`,
            type: 'lines',
            messageType: 'L',
          },
        },
        userInChat: { [String(chat.chatId)]: this.openLineChatMembers(chat) },
        files: [],
      },
    };
  }

  /** Who is in an Open Channel chat: its client's connector user and the operators who wrote in it (GUESS: no other member). */
  private openLineChatMembers(chat: OpenLineChat): number[] {
    return [...new Set([chat.userId, ...chat.messages.filter((m) => m.from === 'operator').map((m) => m.authorId)])];
  }

  openLineChats(line: number): OpenLineChat[] {
    return [...this.chats.values()].filter((chat) => chat.line === line);
  }

  openLineMessages(line: number, externalChatId: string): OpenLineMessage[] {
    return this.chats.get(`${line} ${externalChatId}`)?.messages ?? [];
  }

  /** NEED_SIGNATURE (§12.1, default true): false, 'N' or 0 as the connector registered it turns the signature off. */
  private signsFor(connector: string): boolean {
    const need = this.connectors.get(connector)?.NEED_SIGNATURE;
    if (need === undefined || need === true) return true;
    if (need === false) return false;
    return !['N', 'n', '0', 'false', ''].includes(text(need));
  }

  private requireChat(line: number, externalChatId: string): OpenLineChat {
    const chat = this.chats.get(`${line} ${externalChatId}`);
    if (chat === undefined) throw new Error(`fake Bitrix24: line ${line} has no chat "${externalChatId}" (a client writes first, by imconnector.send.messages)`);
    return chat;
  }

  /**
   * The operator's message as ONIMCONNECTORMESSAGEADD carries it (examples/onimconnectormessageadd.form.txt):
   * with NEED_SIGNATURE (default yes, §12.1) the text starts with the operator's name in BBCode. GUESS:
   * a files-only message keeps its empty text unsigned (examples/onimconnectormessageadd-with-file.form.txt).
   */
  async operatorWrites(input: OperatorWritesInput): Promise<{ imMessageId: number; imChatId: number; replies: DeliveryReply[]; data: Params }> {
    const chat = this.requireChat(input.line, input.externalChatId);
    const operatorId = input.userId ?? this.options.adminUserId;
    const operator = this.users.get(operatorId);
    if (operator === undefined) throw new Error(`fake Bitrix24 has no user ${operatorId}`);
    const signed = this.signsFor(chat.connector) && input.text !== '';
    const messageText = signed ? `[b]${operator.name} ${operator.lastName}:[/b] [br]${input.text}` : input.text;
    const files: OpenLineFile[] = [];
    const wireFiles: Params[] = [];
    for (const file of input.files ?? []) {
      const body = Buffer.from(file.content);
      const mime = file.mime ?? 'application/octet-stream';
      const diskId = randomInt(100, 1_000_000);
      // GUESS: the disk token's content; its shape (disk|<base64>) and the link's keys follow the example.
      const token = `disk|${Buffer.from(`id=${diskId}&_=${randomAlnum(16)}`).toString('base64url')}`;
      this.operatorFiles.set(token, { name: file.name, mime, body });
      files.push({ name: file.name, mime, size: body.length });
      wireFiles.push({
        name: file.name,
        // GUESS: `link` needs a browser session on the portal; the fake does not serve it.
        link: `${this.portalUrl}/disk/showFile/${diskId}/?&ncc=1&ts=${nowSeconds()}&filename=${encodeURIComponent(file.name)}`,
        // Relative, like the example. GUESS: without `auth` (one third-party test shows `?token=…` alone, the
        // example `auth=...&token=…`): the fake serves it only when the app adds `auth=<access token>`, which
        // works whichever of the two Bitrix24 really sends (PHP reads the last `auth`).
        downloadLink: `/rest/download.json?token=${encodeURIComponent(token)}`,
        mime,
        size: body.length,
        type: mime.startsWith('image/') ? 'image' : 'file', // GUESS: the type values
      });
    }
    const message: OpenLineMessage = {
      imMessageId: this.nextImMessageId++,
      from: 'operator',
      externalIds: [],
      authorId: operatorId,
      text: messageText,
      files,
      date: nowSeconds(),
      deleted: false,
      delivery: 'undelivered',
      read: false,
    };
    chat.messages.push(message);
    const wireMessage: Params = { user_id: operatorId, text: messageText };
    if (wireFiles.length > 0) wireMessage.files = wireFiles;
    const data = {
      CONNECTOR: chat.connector,
      LINE: chat.line,
      MESSAGES: [{ im: { chat_id: chat.chatId, message_id: message.imMessageId }, message: wireMessage, chat: { id: chat.externalChatId } }],
    };
    if (input.deliver === false) return { imMessageId: message.imMessageId, imChatId: chat.chatId, replies: [], data };
    const replies = await this.deliverEventCausedBy('ONIMCONNECTORMESSAGEADD', data, operatorId);
    return { imMessageId: message.imMessageId, imChatId: chat.chatId, replies, data };
  }

  private requireOperatorMessage(chat: OpenLineChat, imMessageId: number): OpenLineMessage {
    const message = chat.messages.find((m) => m.imMessageId === imMessageId && m.from === 'operator');
    if (message === undefined) throw new Error(`fake Bitrix24: chat "${chat.externalChatId}" has no operator message ${imMessageId}`);
    return message;
  }

  /** ONIMCONNECTORMESSAGEUPDATE: message.id is the LIST of ids the delivery confirmed (examples/onimconnectormessageupdate.form.txt). */
  async operatorEdits(input: { line: number; externalChatId: string; imMessageId: number; text: string }): Promise<DeliveryReply[]> {
    const chat = this.requireChat(input.line, input.externalChatId);
    const message = this.requireOperatorMessage(chat, input.imMessageId);
    const operator = this.users.get(message.authorId);
    const signed = this.signsFor(chat.connector) && operator !== undefined;
    // The update example signs without the space before [br] that the add example has.
    message.text = signed ? `[b]${operator.name} ${operator.lastName}:[/b][br] ${input.text}` : input.text;
    return this.deliverEventCausedBy(
      'ONIMCONNECTORMESSAGEUPDATE',
      {
        CONNECTOR: chat.connector,
        LINE: chat.line,
        MESSAGES: [{ im: { chat_id: chat.chatId, message_id: message.imMessageId }, message: { id: message.externalIds, text: message.text }, chat: { id: chat.externalChatId } }],
      },
      message.authorId,
    );
  }

  /** ONIMCONNECTORMESSAGEDELETE: message.id is ONE id here (examples/onimconnectormessagedelete.form.txt). GUESS: the first confirmed id. */
  async operatorDeletes(input: { line: number; externalChatId: string; imMessageId: number }): Promise<DeliveryReply[]> {
    const chat = this.requireChat(input.line, input.externalChatId);
    const message = this.requireOperatorMessage(chat, input.imMessageId);
    message.deleted = true;
    return this.deliverEventCausedBy(
      'ONIMCONNECTORMESSAGEDELETE',
      {
        CONNECTOR: chat.connector,
        LINE: chat.line,
        MESSAGES: [{ im: { chat_id: chat.chatId, message_id: message.imMessageId }, message: { id: message.externalIds[0] ?? '' }, chat: { id: chat.externalChatId } }],
      },
      message.authorId,
    );
  }

  /** ONIMCONNECTORLINEDELETE: `data` is the line id itself (examples/onimconnectorlinedelete.form.txt). */
  async deleteOpenLine(line: number): Promise<DeliveryReply[]> {
    if (!this.openLines.delete(line)) throw new Error(`fake Bitrix24 has no open line ${line}`);
    for (const [key, state] of this.connectorLines) if (state.line === line) this.connectorLines.delete(key);
    for (const [key, chat] of this.chats) if (chat.line === line) this.chats.delete(key);
    return this.deliverEventCausedBy('ONIMCONNECTORLINEDELETE', line, this.options.adminUserId);
  }

  /** ONIMCONNECTORSTATUSDELETE: data{connector, line} in lower case (examples/onimconnectorstatusdelete.form.txt). */
  async disconnectConnector(input: { connector: string; line: number }): Promise<DeliveryReply[]> {
    this.connectorLines.delete(`${input.connector} ${input.line}`);
    return this.deliverEventCausedBy('ONIMCONNECTORSTATUSDELETE', { connector: input.connector, line: input.line }, this.options.adminUserId);
  }

  /** examples/placement-setting-connector.printr.txt: PLACEMENT_OPTIONS in its key order, LINE a string, CONNECTOR lower-cased. */
  settingConnectorPageRequest(input: SettingConnectorInput, overrides: InstallOverrides = {}): { query: string; body: string } {
    const connector = input.connector.toLowerCase();
    const flags = this.connectorFlags(this.connectorLines.get(`${connector} ${input.line}`));
    return this.framePageRequest(
      'SETTING_CONNECTOR',
      {
        CONNECTOR: connector,
        LINE: String(input.line),
        STATUS: input.status ?? flags.STATUS,
        ACTIVE_STATUS: input.activeStatus ?? flags.ACTIVE_STATUS,
        CONNECTION_STATUS: input.connectionStatus ?? flags.CONNECTION_STATUS,
        REGISTER_STATUS: input.registerStatus ?? flags.REGISTER_STATUS,
        ERROR_STATUS: input.errorStatus ?? flags.ERROR_STATUS,
        URI: `/contact_center/connector/?ID=${connector}&IFRAME=Y&IFRAME_TYPE=SIDE_SLIDER`,
      },
      overrides,
    );
  }

  /** An operator's file at its downloadLink: only with a valid access token of the portal (GUESS: the error replies). */
  private downloadOperatorFile(c: Context): Response {
    try {
      this.resolveCaller(c.req.query('auth'));
    } catch (error) {
      const rest = error as RestError;
      return jsonResponse(c, rest.body(), rest.status);
    }
    const file = this.operatorFiles.get(c.req.query('token') ?? '');
    if (file === undefined) return jsonResponse(c, { error: 'ERROR_NOT_FOUND', error_description: 'File not found' }, 404);
    return new Response(new Uint8Array(file.body), {
      status: 200,
      headers: { 'content-type': file.mime, 'content-disposition': `attachment; filename="${encodeURIComponent(file.name)}"` },
    });
  }

  // ----- CRM (§10) -----------------------------------------------------------------------------------

  private crmAdd(entity: CrmEntity, params: Params, caller: Caller): MethodResult {
    // Legacy CRM methods read `fields`, falling back to `FIELDS`.
    const fields = params.fields ?? params.FIELDS;
    if (!isRecord(fields)) {
      throw new RestError(400, '', "Parameter 'fields' must be array."); // GUESS: text
    }
    const missing = (this.requiredCrmFields.get(entity) ?? []).find((name) => phpEmpty(fields[name]));
    // GUESS: the text; Bitrix24 names the missing field in error_description with an empty code (§10 legacy errors).
    if (missing !== undefined) throw new RestError(400, '', `Required field "${missing}" is not filled.`);
    return { result: this.createCrmRecord(entity, fields, caller.user.id) };
  }

  /**
   * Legacy crm.*.list (§3 lists, §10): `filter` by field equality (an array is "any of"), `select`
   * (default: every field; `*` too), `order` by one field, pages of 50 by `start`. Derived fields:
   * a lead's STATUS_SEMANTIC_ID from its STATUS_ID (CONVERTED → S, JUNK → F, else P) and a deal's
   * CLOSED from its STAGE_ID (WON/LOSE, with or without a pipeline prefix) unless stored.
   */
  private crmList(entity: CrmEntity, params: Params): MethodResult {
    const filter = isRecord(params.filter) ? params.filter : {};
    const records = [...this.crm[CRM_COLLECTION[entity]].values()].map((record) => this.withDerivedFields(entity, record));
    const matching = records.filter((record) =>
      Object.entries(filter).every(([key, wanted]) => {
        const value = text(record[key.toUpperCase()]);
        return Array.isArray(wanted) ? wanted.map(text).includes(value) : text(wanted) === value;
      }),
    );
    const order = isRecord(params.order) ? Object.entries(params.order)[0] : undefined;
    if (order) {
      const [field, direction] = [order[0].toUpperCase(), text(order[1]).toUpperCase() === 'DESC' ? -1 : 1];
      const numeric = field === 'ID' || field.endsWith('_ID');
      matching.sort((a, b) => {
        const [x, y] = [text(a[field]), text(b[field])];
        const compared = numeric ? Number(x) - Number(y) : x < y ? -1 : x > y ? 1 : 0;
        return compared * direction;
      });
    }
    const select = Array.isArray(params.select) ? params.select.map((name) => text(name).toUpperCase()) : [];
    const shown =
      select.length === 0 || select.includes('*')
        ? matching
        : matching.map((record) => Object.fromEntries(Object.entries(record).filter(([key]) => key === 'ID' || select.includes(key))));
    return paginate(structuredClone(shown), params.start);
  }

  private withDerivedFields(entity: CrmEntity, record: CrmRecord): CrmRecord {
    if (entity === 'lead' && record.STATUS_SEMANTIC_ID === undefined) {
      const status = text(record.STATUS_ID);
      return { ...record, STATUS_SEMANTIC_ID: status === 'CONVERTED' ? 'S' : status === 'JUNK' ? 'F' : 'P' };
    }
    if (entity === 'deal' && record.CLOSED === undefined) return { ...record, CLOSED: /(^|:)(WON|LOSE)$/.test(text(record.STAGE_ID)) ? 'Y' : 'N' };
    return record;
  }

  /**
   * crm.<entity>.update {id, fields} → true (§10; docs:`crm/deals/crm-deal-update.md`). A missing
   * record answers like crm.<entity>.get. Only the fields sent change; multifields are not modelled here.
   */
  private crmUpdate(entity: CrmEntity, params: Params): MethodResult {
    const id = positiveInt(params.id ?? params.ID);
    if (id === undefined) throw new RestError(400, '', 'ID is not defined or invalid.');
    const record = this.crm[CRM_COLLECTION[entity]].get(id);
    if (record === undefined) throw crmNotFound();
    const fields = isRecord(params.fields) ? params.fields : isRecord(params.FIELDS) ? params.FIELDS : {};
    for (const [key, value] of Object.entries(fields)) record[key] = typeof value === 'number' ? String(value) : value;
    record.DATE_MODIFY = new Date().toISOString();
    return { result: true };
  }

  // ----- CRM automation triggers (docs:`api-reference/crm/automation/triggers/*.md`) -------------
  // Application context and an administrator; CODE `[a-zA-Z0-9._-]`; add with an existing CODE
  // renames it; execute needs a registered CODE and answers true whether or not anything moved.

  private triggerCode(params: Params): string {
    const code = text(params.CODE ?? params.code);
    if (code === '' || code === '0') throw new RestError(400, '', 'Empty trigger code!');
    if (!/^[a-zA-Z0-9._-]+$/.test(code)) throw new RestError(400, '', 'Wrong trigger code!');
    return code;
  }

  private triggerAdd(params: Params, caller: Caller): MethodResult {
    if (!this.isAdmin(caller.user)) throw accessDenied('Admin permissions required');
    const code = this.triggerCode(params);
    const name = text(params.NAME ?? params.name);
    if (name === '' || name === '0') throw new RestError(400, '', 'Empty trigger name!');
    this.triggers.set(code, name);
    return { result: true };
  }

  private triggerList(caller: Caller): MethodResult {
    if (!this.isAdmin(caller.user)) throw accessDenied('Admin permissions required');
    return { result: [...this.triggers].map(([code, name]) => ({ NAME: name, CODE: code })) };
  }

  private triggerDelete(params: Params, caller: Caller): MethodResult {
    if (!this.isAdmin(caller.user)) throw accessDenied('Admin permissions required');
    const code = this.triggerCode(params);
    // GUESS: the answer for an unknown CODE is undocumented; it is refused like execute's.
    if (!this.triggers.delete(code)) throw new RestError(400, '', `Trigger with code ${code} is not registered.`);
    return { result: true };
  }

  private triggerExecute(params: Params, caller: Caller): MethodResult {
    if (!this.isAdmin(caller.user)) throw accessDenied('Admin permissions required');
    const code = this.triggerCode(params);
    if (!this.triggers.has(code)) throw new RestError(400, '', `Trigger with code ${code} is not registered.`);
    const ownerTypeId = positiveInt(params.OWNER_TYPE_ID);
    // Leads, deals, contacts, companies (crm.enum.ownertype); estimates, invoices and SPAs are not modelled.
    if (ownerTypeId === undefined || ownerTypeId > 4) throw new RestError(400, '', 'Incorrect parameter OWNER_TYPE_ID.');
    const ownerId = positiveInt(params.OWNER_ID);
    if (ownerId === undefined) throw new RestError(400, '', 'Incorrect parameter OWNER_ID.');
    this.triggerExecutions.push({ code, ownerTypeId, ownerId });
    return { result: true };
  }

  /**
   * im.notify.system.add (docs:`api-reference/chats/notifications/im-notify-system-add.md`): scope
   * `im`, else 403 insufficient_scope (§2, §3); a notification with a TAG already used replaces the
   * earlier ones with that TAG. Answers the notification id.
   */
  private notifySystemAdd(params: Params): MethodResult {
    if (!this.scope.split(',').includes('im')) {
      // GUESS: the description is the OAuth 2.0 wording; the code and status are §3's.
      throw new RestError(403, 'insufficient_scope', 'The request requires higher privileges than provided by the access token');
    }
    const userId = positiveInt(params.USER_ID);
    if (userId === undefined) throw new RestError(400, 'USER_ID_EMPTY', "User ID can't be empty");
    const message = text(params.MESSAGE).trim();
    if (message === '') throw new RestError(400, 'MESSAGE_EMPTY', "Message can't be empty");
    const tag = text(params.TAG);
    if (tag !== '') {
      for (let index = this.notifications.length - 1; index >= 0; index--) if (this.notifications[index]!.tag === tag) this.notifications.splice(index, 1);
    }
    const id = this.nextNotificationId++;
    this.notifications.push({ id, userId, message, tag });
    return { result: id };
  }

  private crmGet(entity: CrmEntity, params: Params, caller: Caller): MethodResult {
    const id = positiveInt(params.id ?? params.ID);
    if (id === undefined) throw new RestError(400, '', 'ID is not defined or invalid.');
    const record = this.crm[CRM_COLLECTION[entity]].get(id);
    if (record === undefined) throw crmNotFound();
    if (!this.mayRead(caller, ENTITY_TYPE_OF[entity], id)) throw crmAccessDenied();
    const { CONTACT_IDS: _links, ...shown } = structuredClone(record);
    return { result: shown };
  }

  /**
   * crm.deal.contact.items.get {id} → `[{CONTACT_ID, SORT, ROLE_ID, IS_PRIMARY}]` (docs/protocols.md B18;
   * the primary contact first). The deal's own read rights apply.
   */
  private dealContactItems(params: Params, caller: Caller): MethodResult {
    const id = positiveInt(params.id ?? params.ID);
    if (id === undefined) throw new RestError(400, '', 'ID is not defined or invalid.');
    const deal = this.crm.deals.get(id);
    if (deal === undefined) throw crmNotFound();
    if (!this.mayRead(caller, 2, id)) throw crmAccessDenied();
    const ids = Array.isArray(deal.CONTACT_IDS) ? deal.CONTACT_IDS.map(Number) : positiveInt(deal.CONTACT_ID) !== undefined ? [Number(deal.CONTACT_ID)] : [];
    return { result: ids.map((contactId, index) => ({ CONTACT_ID: contactId, SORT: (index + 1) * 10, ROLE_ID: 0, IS_PRIMARY: index === 0 ? 'Y' : 'N' })) };
  }

  /** crm.item.get {entityTypeId, id} → `{item: {…camelCase}}` for a smart process's item (docs/protocols.md B18). */
  private itemGet(params: Params, caller: Caller): MethodResult {
    const entityTypeId = positiveInt(params.entityTypeId);
    const id = positiveInt(params.id);
    if (entityTypeId === undefined || id === undefined) throw new RestError(400, 'ENTITY_TYPE_NOT_SUPPORTED', 'entityTypeId and id are required'); // GUESS: code and text
    const item = this.smartItems.get(`${entityTypeId} ${id}`);
    if (item === undefined) throw new RestError(400, 'NOT_FOUND', 'Element not found'); // GUESS: text
    if (!this.mayRead(caller, entityTypeId, id)) throw new RestError(403, 'ACCESS_DENIED', 'Access denied');
    return { result: { item: structuredClone(item) } };
  }

  /** crm.type.list → `{types: [{id, entityTypeId, title}]}` with `total`: the portal's smart processes (docs/protocols.md B18). */
  private typeList(): MethodResult {
    const types = [...this.smartProcesses.values()].map((type) => ({ ...type }));
    return { result: { types }, total: types.length };
  }

  /** `[]` when nothing matches; ids are integers; only types with hits appear (§10). */
  private findByComm(params: Params): MethodResult {
    const type = text(params.type ?? params.TYPE).toUpperCase();
    const rawValues = params.values ?? params.VALUES;
    const values = (Array.isArray(rawValues) ? rawValues : rawValues === undefined ? [] : [rawValues]).map(text);
    if (type === '') throw new RestError(400, 'Communication type is not defined', "Parameter 'type' is required.");
    if (values.length === 0 || values.every((v) => v === '')) {
      // GUESS: description text; the code (a sentence, not a code) is the docs'.
      throw new RestError(400, 'Communication values is not defined', "Parameter 'values' is required.");
    }
    if (type !== 'PHONE' && type !== 'EMAIL') {
      // GUESS: description text.
      throw new RestError(400, `Communication type '${type}' is not supported in current context`, '');
    }
    const entityFilter = text(params.entity_type ?? params.ENTITY_TYPE).toUpperCase();
    // GUESS: phones match on their digits only; Bitrix24 normalises with its own phone parser.
    const normalise = type === 'PHONE' ? (v: string) => v.replace(/\D/g, '') : (v: string) => v.trim().toLowerCase();
    const wanted = new Set(values.map(normalise).filter((v) => v !== ''));

    const found: Array<[string, unknown]> = [];
    for (const entity of ['lead', 'contact', 'company'] as const) {
      const typeName = entity.toUpperCase();
      if (entityFilter !== '' && entityFilter !== typeName) continue;
      const ids: number[] = [];
      for (const [id, record] of this.crm[CRM_COLLECTION[entity]]) {
        const items = Array.isArray(record[type]) ? (record[type] as unknown[]) : [];
        if (items.some((item) => isRecord(item) && wanted.has(normalise(text(item.VALUE))))) ids.push(id);
      }
      if (ids.length === 0) continue;
      found.push([typeName, ids]);
      if (ids.length >= 20) break; // a type with 20+ hits suppresses the remaining types (§10)
    }
    return { result: phpArray(found) };
  }

  private timelineCommentAdd(params: Params, caller: Caller): MethodResult {
    // Only lowercase `fields` since crm 23.100.0 (§10).
    const fields = isRecord(params.fields) ? params.fields : undefined;
    const entityId = positiveInt(fields?.ENTITY_ID);
    const entityType = text(fields?.ENTITY_TYPE).toLowerCase();
    if (fields === undefined || entityId === undefined || entityType === '') {
      throw new RestError(400, '100', 'Required fields are missing: ENTITY_ID, ENTITY_TYPE'); // GUESS: text
    }
    const comment = text(fields.COMMENT);
    if (comment.trim() === '') throw new RestError(400, 'INVALID_ARG_VALUE', 'Comment is empty'); // GUESS: text
    const entity = (['lead', 'deal', 'contact', 'company'] as const).find((e) => e === entityType);
    if (entity === undefined || !this.crm[CRM_COLLECTION[entity]].has(entityId)) {
      throw new RestError(400, 'OWNER_NOT_FOUND', 'Owner not found.'); // GUESS: text
    }
    const id = this.nextCommentId++;
    this.timelineComments.push({
      id,
      entityType,
      entityId,
      comment,
      authorId: positiveInt(fields.AUTHOR_ID) ?? caller.user.id,
      created: isoSeconds(Date.now()),
    });
    return { result: id };
  }

  /**
   * The owner's comments (§10): `filter` must name ENTITY_ID and ENTITY_TYPE; `order` by ID, CREATED
   * or AUTHOR_ID; pages of 50 by `start`; UPPER_CASE keys, ids as strings, FILES a map.
   */
  private timelineCommentList(params: Params): MethodResult {
    const filter = isRecord(params.filter) ? params.filter : {};
    const entityId = positiveInt(filter.ENTITY_ID);
    const entityType = text(filter.ENTITY_TYPE).toLowerCase();
    if (entityId === undefined || entityType === '') throw new RestError(400, '', 'ENTITY_ID and ENTITY_TYPE are required in the filter'); // GUESS: text
    const order = isRecord(params.order) ? params.order : {};
    const descending = text(order.ID ?? order.CREATED).toUpperCase() === 'DESC';
    const items = this.timelineComments
      .filter((item) => item.entityType === entityType && item.entityId === entityId)
      .sort((a, b) => (descending ? b.id - a.id : a.id - b.id))
      .map((item) => ({
        ID: String(item.id),
        ENTITY_ID: String(item.entityId),
        ENTITY_TYPE: item.entityType,
        CREATED: item.created,
        COMMENT: item.comment,
        AUTHOR_ID: String(item.authorId),
        FILES: {},
      }));
    return paginate(items, params.start);
  }

  private timelineLogMessageAdd(params: Params, caller: Caller): MethodResult {
    const fields = isRecord(params.fields) ? params.fields : {};
    const entityTypeId = positiveInt(fields.entityTypeId);
    const entityId = positiveInt(fields.entityId);
    const [title, messageText, iconCode] = [text(fields.title), text(fields.text), text(fields.iconCode)];
    if (entityTypeId === undefined || entityId === undefined || title === '' || messageText === '' || iconCode === '') {
      throw new RestError(400, '100', 'Required fields are missing'); // GUESS: text
    }
    const entity = CRM_ENTITY_TYPE_ID[entityTypeId];
    if (entity === undefined || !this.crm[CRM_COLLECTION[entity]].has(entityId)) {
      throw new RestError(400, 'OWNER_NOT_FOUND', 'Owner not found.'); // GUESS: text
    }
    const logMessage: TimelineLogMessage = {
      id: this.nextLogMessageId++,
      entityTypeId,
      entityId,
      title,
      text: messageText,
      iconCode,
      authorId: caller.user.id,
      created: isoSeconds(Date.now()),
    };
    this.timelineLogMessages.push(logMessage);
    const { id, created, authorId } = logMessage;
    return { result: { logMessage: { id, created, authorId, title, text: messageText, iconCode } } };
  }
}

// ---------------------------------------------------------------------------------------------
// Pure helpers for the methods above
// ---------------------------------------------------------------------------------------------

/**
 * bizproc's prepareActivityData: UPPER_CASE keys at every level except the property codes directly
 * under PROPERTIES / RETURN_PROPERTIES / OPTIONS, whose case is the app's (§5).
 */
function prepareActivityData(data: Params, keepKeyCase = false): Params {
  const out: Params = {};
  for (const [key, value] of Object.entries(data)) {
    const name = keepKeyCase ? key : key.toUpperCase();
    const keepInner = name === 'PROPERTIES' || name === 'RETURN_PROPERTIES' || name === 'OPTIONS';
    out[name] = isRecord(value) ? prepareActivityData(value, keepInner) : value;
  }
  return out;
}

function validateActivityCode(code: unknown): void {
  if (phpEmpty(code)) throw activityValidation('Empty activity code!');
  if (typeof code !== 'string' || !/^[a-z0-9.\-_]+$/i.test(code)) throw activityValidation('Wrong activity code!');
}

function validateActivityProperties(properties: unknown): void {
  if (!isRecord(properties) && !Array.isArray(properties)) throw activityValidation('Wrong properties array!');
  for (const [key, property] of Object.entries(properties)) {
    if (!/^[a-z][a-z0-9_]*$/i.test(key)) throw activityValidation(`Wrong property key (${key})!`);
    if (!isRecord(property) || phpEmpty(property.NAME)) throw activityValidation(`Empty property NAME (${key})!`);
  }
}

/** GUESS: Bitrix24 asks its document service; the fake accepts any three non-empty strings. */
function validateDocumentType(documentType: unknown): void {
  const parts = Array.isArray(documentType) ? documentType : [];
  if (parts.length !== 3 || parts.some((part) => text(part) === '')) {
    throw activityValidation('Wrong activity DOCUMENT_TYPE!');
  }
}

/** `<workflow_id>|<activity name>|<32 chars>.<64 hex>` (§7). */
function mintEventToken(): string {
  const workflowId = `${randomHex(7)}.${String(randomInt(10_000_000, 100_000_000))}`;
  const activityName = `A${[0, 0, 0, 0].map(() => randomInt(10_000, 100_000)).join('_')}`;
  return `${workflowId}|${activityName}|${randomAlnum(32)}.${randomHex(32)}`;
}

function personFields(input: SeedPerson): Params {
  const fields: Params = { ...input.fields };
  if (input.name !== undefined) fields.NAME = input.name;
  if (input.lastName !== undefined) fields.LAST_NAME = input.lastName;
  if (input.title !== undefined) fields.TITLE = input.title;
  if (input.phones !== undefined) fields.PHONE = input.phones.map((VALUE) => ({ VALUE, VALUE_TYPE: 'WORK' }));
  if (input.emails !== undefined) fields.EMAIL = input.emails.map((VALUE) => ({ VALUE, VALUE_TYPE: 'WORK' }));
  return fields;
}

function hasItems(value: unknown): boolean {
  return Array.isArray(value) && value.length > 0;
}

function placementView(p: PlacementBinding): Record<string, unknown> {
  return {
    placement: p.placement,
    userId: p.userId,
    handler: p.handler,
    options: phpArray(Object.entries(p.options)),
    title: p.title,
    description: p.description,
    langAll: phpArray(Object.entries(p.langAll)),
  };
}

/**
 * imconnector.list names every connector of the portal, Bitrix24's own too (ru:imconnector-list.md example).
 * GUESS: which built-ins; they are not REST connectors, so send.messages refuses them.
 */
const BUILT_IN_CONNECTORS: Record<string, string> = { livechat: 'Live chat', telegrambot: 'Telegram', whatsappbytwilio: 'WhatsApp' };

/** imopenlines.config.get / list.get entry. GUESS: the fields beyond ID, LINE_NAME, ACTIVE are not modelled. */
function openLineView(line: OpenLine): Record<string, unknown> {
  return { ID: String(line.id), LINE_NAME: line.name, ACTIVE: line.active ? 'Y' : 'N' };
}

/** §12.5: letters, spaces, hyphens and apostrophes only, at most 25 characters (digits rejected). */
const CLIENT_NAME = /^[\p{L} '-]{0,25}$/u;

/** Why send.messages refuses a client message, or undefined (§12.5 and the docs' error table). */
function clientMessageProblem(user: Params, message: Params, chat: Params): string | undefined {
  if (text(user.id) === '') return 'user.id is required';
  if (text(chat.id) === '') return 'chat.id is required';
  for (const field of ['name', 'last_name'] as const) {
    if (!CLIENT_NAME.test(text(user[field]))) return `user.${field} may hold only letters, spaces, hyphens and apostrophes, at most 25`;
  }
  const hasFiles = Array.isArray(message.files) ? message.files.length > 0 : isRecord(message.files) && Object.keys(message.files).length > 0;
  if (text(message.text) === '' && !hasFiles) return 'message.text or message.files is required';
  return undefined;
}

/** What Bitrix24 gets downloading a client's file url (§12.5: it must be reachable by the portal). */
async function fetchClientFile(url: string): Promise<NonNullable<OpenLineFile['download']>> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
    const body = Buffer.from(await response.arrayBuffer());
    return { status: response.status, contentType: response.headers.get('content-type') ?? '', body };
  } catch (error) {
    return { error: error instanceof Error ? error.message : String(error) };
  }
}

/** Pages of 50 with `next`/`total`; `start=-1` turns counting off (§3). */
function paginate(items: unknown[], start: unknown): MethodResult {
  if (text(start) === '-1') return { result: items.slice(0, LIST_PAGE) };
  const offset = positiveInt(start) ?? 0;
  const page = items.slice(offset, offset + LIST_PAGE);
  const result: MethodResult = { result: page, total: items.length };
  if (offset + LIST_PAGE < items.length) result.next = offset + LIST_PAGE;
  return result;
}

/**
 * Replaces `$result[key][field]...` (and `$result_total`, ...) in already-parsed batch parameters (§3).
 * A value that is only a reference takes the referenced value as is; references inside longer text
 * are spliced in as text. GUESS: an unresolvable reference becomes ''.
 */
function substituteBatchReferences(value: unknown, maps: Record<string, Array<[string, unknown]>>): unknown {
  const lookup = (kind: string, path: string): unknown => {
    const segments = [...path.matchAll(/\[([^\]]*)\]/g)].map((m) => m[1] ?? '');
    const [key, ...rest] = segments;
    let current: unknown = maps[kind]?.find(([k]) => k === key)?.[1];
    for (const segment of rest) {
      if (Array.isArray(current)) current = current[Number(segment)];
      else if (isRecord(current)) current = current[segment];
      else return undefined;
    }
    return current;
  };
  if (typeof value === 'string') {
    const whole = BATCH_REFERENCE_WHOLE.exec(value);
    if (whole !== null) return lookup(whole[1] ?? '', whole[2] ?? '') ?? '';
    return value.replace(BATCH_REFERENCE, (_match, kind: string, path: string) => {
      const found = lookup(kind, path);
      return typeof found === 'string' || typeof found === 'number' ? String(found) : '';
    });
  }
  if (Array.isArray(value)) return value.map((inner) => substituteBatchReferences(inner, maps));
  if (isRecord(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, inner]) => [k, substituteBatchReferences(inner, maps)]));
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------------------------

/** Starts a fake portal and its OAuth server on 127.0.0.1 (random ports). Call close() when done. */
export async function startFakeBitrix24(options: FakeBitrix24Options = {}): Promise<FakeBitrix24> {
  const portal = new FakePortal(options);
  await portal.start();
  return portal;
}
