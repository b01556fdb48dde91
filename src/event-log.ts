import type { RobotRegistry } from './activities/index.js';
import { timelineOwner } from './bitrix24/values.js';
import { GAP_POLL_KIND } from './chat2desk/closed-episodes.js';
import { CLOSE_EPISODE_KIND, closeEpisodeOptions, type CloseEpisodeInput } from './jobs/kinds/close-episode.js';
import { dialogUrl } from './chat2desk/links.js';
import type { Clock } from './clock.js';
import type { EntryStatus, EventLogRow, EventLogStore, KindFilter } from './db/event-log.js';
import type { Portal } from './db/portals.js';
import { FIRE_TRIGGER_KIND } from './jobs/kinds/fire-trigger.js';
import { NOTIFY_INCOMING_KIND } from './jobs/kinds/notify-incoming.js';
import { OL_INBOUND_KIND } from './open-channels/inbound.js';
import { REGISTER_APP_KIND } from './jobs/kinds/register-app.js';
import { ROBOT_KIND } from './jobs/kinds/robot.js';
import { SYNC_RESPONSIBLE_KIND } from './jobs/kinds/sync-responsible.js';
import type { Pipeline } from './jobs/pipeline.js';
import { DIALOG_ACTION_KIND } from './dialogs/actions.js';
import { searchablePhone } from './phone.js';
import { readSettings } from './portal-settings.js';
import { TRIGGERS } from './triggers/triggers.js';
import { OL_OUTBOUND_KIND } from './open-channels/outbound.js';

/**
 * The event log's kinds: robot runs, closed episodes, CRM automation driven by Chat2Desk events
 * (triggers fired, notifications of incoming messages, responsible sync), and the app's own work
 * (re-registration, gap polling), what users did in the CRM tab and the Chat workspace (dialog actions), and
 * the messages of Open Channels mode (a client's message into the Open Channel, an operator's answer to the client).
 */
export type EntryKind = 'robot' | 'closed_episode' | 'automation' | 'dialog_action' | 'open_channels' | 'app';

export interface EventLogEntry {
  /** The job's public id. */
  id: string;
  kind: EntryKind;
  title: string;
  status: EntryStatus;
  at: string;
  finishedAt: string | null;
  record: { type: string; id: number; url: string | null } | null;
  dialog: { id: number; url: string | null } | null;
  phone: string | null;
  summary: string;
  error: { message: string; nextStep: string } | null;
  canRerun: boolean;
}

export interface EventLogPage {
  entries: EventLogEntry[];
  next: string | null;
}

/** A request the event log refuses: 400 names the bad parameter, 404 an entry of no concern to this portal, 409 one that cannot be re-run. */
export class EventLogRequestError extends Error {
  override name = 'EventLogRequestError';
  constructor(
    message: string,
    readonly httpStatus: 400 | 404 | 409,
  ) {
    super(message);
  }
}

const STATUSES: readonly EntryStatus[] = ['waiting', 'running', 'done', 'failed', 'cancelled'];
const AUTOMATION_KINDS = [FIRE_TRIGGER_KIND, NOTIFY_INCOMING_KIND, SYNC_RESPONSIBLE_KIND];
const OPEN_CHANNELS_KINDS = [OL_INBOUND_KIND, OL_OUTBOUND_KIND];
const KINDS: Record<EntryKind, KindFilter> = {
  robot: { in: [ROBOT_KIND] },
  closed_episode: { in: [CLOSE_EPISODE_KIND] },
  automation: { in: AUTOMATION_KINDS },
  dialog_action: { in: [DIALOG_ACTION_KIND] },
  open_channels: { in: OPEN_CHANNELS_KINDS },
  app: { notIn: [ROBOT_KIND, CLOSE_EPISODE_KIND, ...AUTOMATION_KINDS, DIALOG_ACTION_KIND, ...OPEN_CHANNELS_KINDS] },
};

function entryKind(jobKind: string): EntryKind {
  if (jobKind === ROBOT_KIND) return 'robot';
  if (jobKind === CLOSE_EPISODE_KIND) return 'closed_episode';
  if (jobKind === DIALOG_ACTION_KIND) return 'dialog_action';
  if (OPEN_CHANNELS_KINDS.includes(jobKind)) return 'open_channels';
  return AUTOMATION_KINDS.includes(jobKind) ? 'automation' : 'app';
}
const PARAMETERS = ['status', 'kind', 'from', 'to', 'phone', 'before', 'limit'] as const;
export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 100;
const DAY_MS = 24 * 3600_000;

/** What the admin sees as the work's name, for kinds that are not robots. */
const TITLES: Record<string, string> = {
  [CLOSE_EPISODE_KIND]: 'Closed dialog to CRM',
  [OL_OUTBOUND_KIND]: 'Open Channel message to the client',
  [REGISTER_APP_KIND]: 'Robots registered again after an app update',
  [GAP_POLL_KIND]: 'Dialogs closed while webhooks were not arriving',
  [FIRE_TRIGGER_KIND]: 'CRM automation trigger',
  [NOTIFY_INCOMING_KIND]: 'Notification of new Chat2Desk messages',
  [SYNC_RESPONSIBLE_KIND]: "Responsible follows the dialog's operator",
  [OL_INBOUND_KIND]: 'Chat2Desk message to Open Channels',
};

/** A dialog action's title: what was done (the entry says by whom and from where). */
const ACTION_TITLES: Record<string, string> = {
  send: 'Message sent',
  write_first: 'Wrote first',
  tag: 'Tag added',
  untag: 'Tag removed',
  close: 'Dialog closed',
  reopen: 'Dialog reopened',
  assign: 'Dialog transferred',
};

/**
 * Each kind of error in the words of what the admin does next, first match wins. The messages are
 * the ones our code writes (src/jobs/failures.ts, the robots' RobotFailure texts, src/chat2desk/access.ts,
 * src/jobs/reports.ts), with Chat2Desk's and Bitrix24's own words inside.
 */
const NEXT_STEPS: Array<[RegExp, string | ((match: RegExpExecArray) => string)]> = [
  [/Chat2Desk is not configured/i, 'Enter the Chat2Desk API token in Connection.'],
  [/Chat2Desk rejected the API token|Token is not correct/i, 'Check the token in Chat2Desk → Settings → API and enter it again in Connection.'],
  [/address .* is no longer allowed/i, 'Pick one of the allowed Chat2Desk addresses in Connection.'],
  [/limit per month/i, 'The Chat2Desk account has used its API requests for the month: raise the limit with Chat2Desk, then run it again.'],
  [/rejected the stored refresh token|reinstall the app/i, 'Reinstall the app in Bitrix24 to authorise it again.'],
  [/not installed on this portal|uninstalled/i, 'Install the app again.'],
  [/workflow no longer waits/i, 'Nothing to repeat: the workflow had stopped or moved on before the result came. Run the robot again from the record if it is still needed.'],
  [/gave up delivering the result/i, 'Bitrix24 could not take the result for three days: check that the portal is available, then run the robot again.'],
  [/Bitrix24 refused the result/i, "Check the workflow in Bitrix24 (the robot's settings), then run it again."],
  // A refusal naming a field ("field UF_CRM_17 is required", "Required field SOURCE_ID is not filled").
  [
    /(?=.*\b(?:[Rr]equired|not filled|ACCESS_DENIED|[Aa]ccess denied)\b).*\b[Ff]ield\s+["“']?([A-Z][A-Z0-9_]{1,49})\b/,
    (match) => `Make the field ${match[1]} optional in Bitrix24, or map it in Extra fields.`,
  ],
  [
    /ACCESS_DENIED|access denied|insufficient_scope|user_access_error/i,
    "Give the app the access it lacks: check the app's permissions in Bitrix24 and that the user who installed it is still an administrator.",
  ],
  [/may already have been sent to the Open Channel/i, 'Look at the Open Channel chat in Bitrix24: the message may be there already; if not, read it in Chat2Desk.'],
  [/Open Channel line|Contact Center/i, 'Connect a line in Contact Center (Open Channels → Chat2Desk), or make the line active again.'],
  [/may already have (been sent|done it)/i, 'Look at the dialog in Chat2Desk before running it again: it may already have happened.'],
  [/template WhatsApp approved/i, 'Send the first message from Chat2Desk with an approved WhatsApp template; once the client answers, write from the CRM tab.'],
  [/link expired before it was sent/i, 'Attach the file again and send the message again.'],
  [/has no Chat2Desk operator|operatorMap/i, 'Map the Bitrix24 user to a Chat2Desk operator in Operators, or give both the same e-mail.'],
  [/(unknown|ambiguous) Chat2Desk tags/i, "Create the tag in Chat2Desk, or correct the robot's tags."],
  [/not a valid phone number|phone is required/i, 'Check the phone number on the record (with the country code, or set the default country in Sending defaults).'],
  [/does not support|channel/i, 'Choose a channel and transport that go together, in the robot or in Sending defaults.'],
  [/gave up/i, 'Chat2Desk or Bitrix24 did not answer in time. Once they do, run it again.'],
  [/Chat2Desk/i, "Read Chat2Desk's reason above and correct what it names, then run it again."],
  [/Bitrix24/i, "Read Bitrix24's reason above and correct it in Bitrix24, then run it again."],
];
const UNKNOWN_NEXT_STEP = "If it happens again, send this entry's id to the app's support.";

/** What the admin does next about this error. */
export function nextStepFor(message: string): string {
  for (const [pattern, step] of NEXT_STEPS) {
    const match = pattern.exec(message);
    if (match) return typeof step === 'string' ? step : step(match);
  }
  return UNKNOWN_NEXT_STEP;
}

export interface EventLogDeps {
  store: EventLogStore;
  robots: RobotRegistry;
  pipeline: Pick<Pipeline, 'enqueue'>;
  defaultApiUrl: string;
  clock: Clock;
}

/** What GET /api/event-log accepted, ready for the store. */
export interface EventLogFilter {
  status?: EntryStatus;
  kind?: EntryKind;
  from?: number;
  to?: number;
  phone?: string;
  before?: { createdAt: number; id: number };
  limit: number;
}

/**
 * The event log: a portal's jobs (robot runs, closed episodes, the app's own work) in the admin's
 * words, so that "why did nothing happen for this deal?" is answered without us, and the re-run of
 * a failed closed episode.
 */
export class EventLog {
  constructor(private readonly deps: EventLogDeps) {}

  /** Reads the query string; every bad parameter is a 400 naming it. */
  parseQuery(portal: Portal, query: Record<string, string[]>): EventLogFilter {
    for (const [name, values] of Object.entries(query)) {
      if (!(PARAMETERS as readonly string[]).includes(name)) throw bad(`Unknown parameter ${excerptName(name)}; the event log takes ${PARAMETERS.join(', ')}`);
      if (values.length > 1) throw bad(`${name} may be given once`);
    }
    const one = (name: (typeof PARAMETERS)[number]) => {
      const value = query[name]?.[0];
      return value === undefined || value === '' ? undefined : value;
    };
    const filter: EventLogFilter = { limit: DEFAULT_PAGE_SIZE };
    const status = one('status');
    if (status !== undefined) {
      if (!(STATUSES as readonly string[]).includes(status)) throw bad(`status must be one of ${STATUSES.join(', ')}`);
      filter.status = status as EntryStatus;
    }
    const kind = one('kind');
    if (kind !== undefined) {
      if (!Object.hasOwn(KINDS, kind)) throw bad(`kind must be one of ${Object.keys(KINDS).join(', ')}`);
      filter.kind = kind as EntryKind;
    }
    const from = one('from');
    if (from !== undefined) filter.from = utcDay(from, 'from');
    const to = one('to');
    // Inclusive: the whole of that day.
    if (to !== undefined) filter.to = utcDay(to, 'to') + DAY_MS;
    if (filter.from !== undefined && filter.to !== undefined && filter.to <= filter.from) throw bad('to must not be before from');
    const phone = one('phone');
    if (phone !== undefined) {
      const digits = phone.length <= 40 ? (searchablePhone(phone, readSettings(portal.settings, this.deps.defaultApiUrl).defaultCountry) ?? bareDigits(phone)) : undefined;
      if (!digits) throw bad('phone must be a phone number');
      filter.phone = digits;
    }
    const before = one('before');
    if (before !== undefined) filter.before = readCursor(before);
    const limit = one('limit');
    if (limit !== undefined) {
      if (!/^\d{1,3}$/.test(limit) || Number(limit) < 1 || Number(limit) > MAX_PAGE_SIZE) throw bad(`limit must be a whole number from 1 to ${MAX_PAGE_SIZE}`);
      filter.limit = Number(limit);
    }
    return filter;
  }

  async list(portal: Portal, filter: EventLogFilter): Promise<EventLogPage> {
    // One more than the page: whether a next page exists without counting.
    const rows = await this.deps.store.list({
      memberId: portal.memberId,
      status: filter.status,
      kind: filter.kind ? KINDS[filter.kind] : undefined,
      from: filter.from,
      to: filter.to,
      phone: filter.phone,
      before: filter.before,
      limit: filter.limit + 1,
    });
    const page = rows.slice(0, filter.limit);
    const last = page.at(-1);
    return {
      entries: page.map((row) => this.#entry(portal, row)),
      next: rows.length > filter.limit && last ? writeCursor(last) : null,
    };
  }

  /**
   * Runs a failed closed episode again: a new `close_episode` job with origin 'rerun' and its own
   * dedup key `episode:<requestId>:rerun:<n>` (the ledger's keys keep the record and the comment
   * from being made twice). While the latest re-run of the episode has not finished, another click
   * gets that one's id instead of a new job; two clicks at once compute the same key and store one.
   */
  async rerun(portal: Portal, publicId: string): Promise<{ id: string }> {
    const row = await this.deps.store.entry(portal.memberId, publicId);
    if (!row) throw new EventLogRequestError('No such entry in this portal’s event log', 404);
    if (row.kind !== CLOSE_EPISODE_KIND || row.status !== 'failed') throw new EventLogRequestError('Only a failed closed dialog can be run again', 409);
    const input = parseEpisodeInput(row.input);
    if (!input) throw new EventLogRequestError('This entry cannot be run again: its episode is not known', 409);
    const prefix = `episode:${input.requestId}:rerun:`;
    const reruns = await this.deps.store.byDedupPrefix(portal.memberId, prefix);
    const numbered = reruns.map((rerun) => ({ rerun, n: Number(rerun.dedupKey?.slice(prefix.length)) })).filter((item) => Number.isInteger(item.n));
    const latest = numbered.reduce<(typeof numbered)[number] | undefined>((best, item) => (!best || item.n > best.n ? item : best), undefined);
    if (latest && (latest.rerun.status === 'waiting' || latest.rerun.status === 'running')) return { id: latest.rerun.publicId };
    const dedupKey = `${prefix}${(latest?.n ?? 0) + 1}`;
    const rerunInput: CloseEpisodeInput = { ...input, origin: 'rerun' };
    await this.deps.pipeline.enqueue(CLOSE_EPISODE_KIND, portal.memberId, rerunInput, {
      ...closeEpisodeOptions(rerunInput, this.deps.clock.now(), dedupKey),
      phone: row.phone ?? undefined,
    });
    const id = await this.deps.store.publicIdByDedupKey(portal.memberId, dedupKey);
    if (!id) throw new Error(`the re-run ${dedupKey} was stored but cannot be read back`);
    return { id };
  }

  #entry(portal: Portal, row: EventLogRow): EventLogEntry {
    const result = parseObject(row.returnValues);
    const input = row.kind === CLOSE_EPISODE_KIND ? parseEpisodeInput(row.input) : undefined;
    const errorMessage = row.status === 'failed' ? plain(text(result.error) ?? row.reportError ?? row.lastError ?? 'failed') : undefined;
    return {
      id: row.publicId,
      kind: entryKind(row.kind),
      title: this.#title(row),
      status: row.status,
      at: new Date(row.createdAt).toISOString(),
      finishedAt: row.finishedAt === null ? null : new Date(row.finishedAt).toISOString(),
      record: recordOf(portal, row, result),
      dialog: this.#dialog(portal, input?.dialogId ?? positiveInt(result.dialog_id) ?? positiveInt(result.dialogId) ?? actionDialogId(row)),
      phone: row.phone ? `+${row.phone}` : phoneOf(result.phone),
      summary: summaryOf(row, result, errorMessage),
      error: errorMessage === undefined ? null : { message: errorMessage, nextStep: nextStepFor(errorMessage) },
      canRerun: row.kind === CLOSE_EPISODE_KIND && row.status === 'failed' && input !== undefined,
    };
  }

  #title(row: EventLogRow): string {
    if (row.kind === ROBOT_KIND) return this.deps.robots.find(row.robotCode ?? '')?.name.en ?? `Robot ${plain(row.robotCode ?? 'unknown')}`;
    if (row.kind === FIRE_TRIGGER_KIND) {
      // The trigger's name as the admin picked it in the automation rules.
      const code = parseObject(row.input).code;
      const trigger = TRIGGERS.find((item) => item.code === code);
      if (trigger) return `Trigger “${trigger.name.en}”`;
    }
    if (row.kind === DIALOG_ACTION_KIND) {
      const input = parseObject(row.input);
      const request = parseObject(JSON.stringify(input.request ?? null));
      const what = ACTION_TITLES[String(request.action)] ?? 'Dialog action';
      const where = input.via === 'workspace' ? 'the Chat workspace' : 'the CRM tab';
      const userId = positiveInt(input.userId);
      return `${what} in ${where}${userId === undefined ? '' : ` by Bitrix24 user ${userId}`}`;
    }
    return TITLES[row.kind] ?? row.kind;
  }

  #dialog(portal: Portal, dialogId: number | undefined): EventLogEntry['dialog'] {
    if (dialogId === undefined) return null;
    return { id: dialogId, url: httpUrl(dialogUrl(readSettings(portal.settings, this.deps.defaultApiUrl).chat2deskApiUrl, dialogId)) };
  }
}

function bad(message: string): EventLogRequestError {
  return new EventLogRequestError(message, 400);
}

function excerptName(name: string): string {
  return JSON.stringify(name.length > 40 ? `${name.slice(0, 40)}…` : name);
}

/** YYYY-MM-DD as the start of that UTC day. */
function utcDay(value: string, name: string): number {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  const at = match ? Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])) : Number.NaN;
  // Date.UTC rolls 2026-02-31 over into March: the round trip tells a real date.
  if (Number.isNaN(at) || new Date(at).toISOString().slice(0, 10) !== value) throw bad(`${name} must be a date as YYYY-MM-DD`);
  return at;
}

/** A number the normaliser does not take as a phone (a short code, a Telegram pseudo-phone's digits) is searched as typed. */
function bareDigits(value: string): string | undefined {
  if (!/^[\d\s()+\-.]+$/.test(value)) return undefined;
  const digits = value.replace(/\D/g, '');
  return digits.length >= 3 && digits.length <= 20 ? digits : undefined;
}

/** The cursor is opaque to the page: the last entry's (created_at, id). */
function writeCursor(row: EventLogRow): string {
  return Buffer.from(`${row.createdAt}:${row.id}`).toString('base64url');
}

function readCursor(value: string): { createdAt: number; id: number } {
  const decoded = value.length <= 64 ? Buffer.from(value, 'base64url').toString() : '';
  const match = /^(\d{1,15}):(\d{1,15})$/.exec(decoded);
  if (!match) throw bad('before must be a cursor from a previous page (its "next")');
  return { createdAt: Number(match[1]), id: Number(match[2]) };
}

function parseObject(json: string | null): Record<string, unknown> {
  if (!json) return {};
  try {
    const value: unknown = JSON.parse(json);
    return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function parseEpisodeInput(json: string | null): CloseEpisodeInput | undefined {
  const input = parseObject(json);
  const requestId = positiveInt(input.requestId);
  const clientId = positiveInt(input.clientId);
  if (requestId === undefined || clientId === undefined || typeof input.closedAt !== 'string') return undefined;
  return {
    requestId,
    clientId,
    dialogId: positiveInt(input.dialogId) ?? null,
    closedAt: input.closedAt,
    origin: input.origin === 'poll' || input.origin === 'rerun' ? input.origin : 'webhook',
  };
}

/** The dialog a dialog action named (a failed one has no result to take it from). */
function actionDialogId(row: EventLogRow): number | undefined {
  if (row.kind !== DIALOG_ACTION_KIND) return undefined;
  const request = parseObject(row.input).request;
  return request && typeof request === 'object' ? positiveInt((request as Record<string, unknown>).dialogId) : undefined;
}

function positiveInt(value: unknown): number | undefined {
  const n = typeof value === 'string' && /^\d{1,15}$/.test(value) ? Number(value) : value;
  return typeof n === 'number' && Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

function text(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** One line of plain text, bounded: the page shows it as text (escaped), never as markup. */
function plain(value: string, max = 300): string {
  const line = value.replace(/\s+/g, ' ').trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** Only http(s) links leave the event log. */
function httpUrl(value: string): string | null {
  try {
    const url = new URL(value);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
  } catch {
    return null;
  }
}

const CRM_TYPES = new Set(['lead', 'deal', 'contact', 'company']);
/** A portal's domain as Bitrix24 sent it at install: a host name, maybe with a port. */
const HOST = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d{1,5})?$/i;

/** The CRM record: a robot's workflow document, or the record a closed episode found or created. */
function recordOf(portal: Portal, row: EventLogRow, result: Record<string, unknown>): EventLogEntry['record'] {
  let owner: { entityType: string; entityId: number } | undefined;
  if (row.kind === ROBOT_KIND && row.documentId) {
    try {
      const documentId: unknown = JSON.parse(row.documentId);
      owner = Array.isArray(documentId) ? timelineOwner(documentId.map(String)) : undefined;
    } catch {
      owner = undefined;
    }
  } else if (typeof result.entityType === 'string' && CRM_TYPES.has(result.entityType)) {
    const entityId = positiveInt(result.entityId);
    owner = entityId === undefined ? undefined : { entityType: result.entityType, entityId };
  }
  if (!owner) return null;
  const dynamic = /^dynamic_(\d+)$/.exec(owner.entityType);
  const path = dynamic ? `crm/type/${dynamic[1]}/details/${owner.entityId}/` : `crm/${owner.entityType}/details/${owner.entityId}/`;
  return { type: owner.entityType, id: owner.entityId, url: HOST.test(portal.domain) ? httpUrl(`https://${portal.domain}/${path}`) : null };
}

function phoneOf(value: unknown): string | null {
  const digits = searchablePhone(value);
  return digits ? `+${digits}` : null;
}

function summaryOf(row: EventLogRow, result: Record<string, unknown>, errorMessage: string | undefined): string {
  switch (row.status) {
    case 'waiting':
      if (row.state === 'confirming') return 'Waiting for Bitrix24 to confirm the call';
      return row.lastError ? plain(`Will try again: ${row.lastError}`) : 'Waiting to run';
    case 'running':
      return row.state === 'reporting' ? 'Handing the result back to the workflow' : 'Running';
    case 'cancelled':
      if (row.state === 'done') return plain(`Not run: Bitrix24 did not confirm the call${row.lastError ? ` (${row.lastError})` : ''}`);
      return row.reportError === 'portal uninstalled' ? 'Stopped: the app was uninstalled' : 'Stopped';
    case 'failed':
      return errorMessage ?? 'Failed';
    case 'done':
      return plain(doneSummary(row, result));
  }
}

function doneSummary(row: EventLogRow, result: Record<string, unknown>): string {
  const record = typeof result.entityType === 'string' && positiveInt(result.entityId) !== undefined ? `${result.entityType} ${result.entityId}` : undefined;
  const skipped = result.status === 'skipped';
  switch (row.kind) {
    case CLOSE_EPISODE_KIND:
      if (record) return result.created === true ? `Created ${record} and pinned the dialog to it` : `Pinned the dialog to ${record}`;
      if (skipped && text(result.reason)) return `Not recorded: ${result.reason}`;
      break;
    case FIRE_TRIGGER_KIND:
      if (record) return /had already fired/.test(text(result.summary) ?? '') ? `Had already fired on ${record}` : `Fired on ${record}`;
      if (skipped) return `Not fired: ${text(result.summary) ?? 'no CRM record for this client'}`;
      break;
    case NOTIFY_INCOMING_KIND:
      if (!skipped && positiveInt(result.userId) !== undefined) {
        const count = positiveInt(result.messages) ?? 1;
        return `Bitrix24 user ${result.userId} was told of ${count} new message${count === 1 ? '' : 's'}`;
      }
      break;
    case SYNC_RESPONSIBLE_KIND:
      if (record && positiveInt(result.userId) !== undefined) return `Bitrix24 user ${result.userId} is now responsible for ${record} (Chat2Desk operator ${result.operatorId})`;
      break;
  }
  return sentence(text(result.summary) ?? text(row.logMessage) ?? text(result.status) ?? 'Done');
}

/** The kinds' own summaries start in lower case ("nobody notified: …"): the log shows sentences. */
function sentence(value: string): string {
  return value.charAt(0).toUpperCase() + value.slice(1);
}
