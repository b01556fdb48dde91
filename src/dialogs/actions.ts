import { createHash } from 'node:crypto';
import * as v from 'valibot';
import type { Chat2DeskAccess } from '../chat2desk/access.js';
import type { CachedClient, CachedDialog, DialogDirectory } from '../chat2desk/directory.js';
import { Chat2DeskError } from '../chat2desk/errors.js';
import type { Clock } from '../clock.js';
import type { DialogActionRow, DialogActionStore } from '../db/dialog-actions.js';
import type { Pipeline } from '../jobs/pipeline.js';
import { FileRequestError, type DialogFiles } from './files.js';
import type { DialogViewer } from './scope.js';
import { NOT_HERE, dialogVisible } from './visibility.js';

export const DIALOG_ACTION_KIND = 'dialog_action';

/** A dialog action clicked in a page is worth doing only soon after: retried for at most this long, then given up (settled first). */
export const DIALOG_ACTION_DEADLINE_MS = 15 * 60_000;

/** Files one message may carry: Chat2Desk takes one per message, so each is a message of its own. */
export const MAX_FILES_PER_ACTION = 10;

const id = (name: string, what: string) =>
  v.pipe(
    v.number(`${name} must be ${what}`),
    v.integer(`${name} must be ${what}`),
    v.minValue(1, `${name} must be ${what}`),
    v.maxValue(Number.MAX_SAFE_INTEGER, `${name} must be ${what}`),
  );

const dialogId = id('dialogId', 'a Chat2Desk dialog id');
/**
 * C0 controls but tab, newline and carriage return, DEL, and a surrogate without its pair: nothing a
 * manager types, and what a messenger shows as garbage or refuses (a lone surrogate is not even UTF-8).
 */
const UNSENDABLE = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const text = v.optional(
  v.pipe(
    v.string('text must be text'),
    v.trim(),
    v.maxLength(4096, 'text is longer than 4096 characters'),
    v.check((value) => !UNSENDABLE.test(value), 'no control characters or broken characters'),
  ),
);
const fileIds = v.optional(
  v.pipe(
    v.array(v.pipe(v.string('fileIds must be ids from POST /api/files'), v.uuid('fileIds must be ids from POST /api/files')), 'fileIds must be a list of ids from POST /api/files'),
    v.maxLength(MAX_FILES_PER_ACTION, `at most ${MAX_FILES_PER_ACTION} files at once`),
    // One message per file, each its own ledger effect by position (src/jobs/kinds/dialog-action.ts): a repeat would be counted but never sent.
    v.check((ids) => new Set(ids).size === ids.length, 'name each file once'),
  ),
);
const something = (action: { text?: string; fileIds?: string[] }) => Boolean(action.text) || (action.fileIds?.length ?? 0) > 0;

const send = v.pipe(
  v.object({ action: v.literal('send'), dialogId, text, fileIds }),
  v.check((action) => something(action), 'text: write a message or attach a file'),
);
const writeFirst = v.pipe(
  v.object({
    action: v.literal('write_first'),
    phone: v.pipe(
      v.string('phone must be a phone number'),
      v.transform((phone) => phone.replace(/[\s()+\-.]/g, '')),
      v.regex(/^\d{5,20}$/, 'phone must be a phone number'),
    ),
    channelId: id('channelId', 'a Chat2Desk channel id'),
    transport: v.pipe(v.string('transport must be a Chat2Desk transport'), v.regex(/^[a-z0-9_]{2,40}$/, 'transport must be a Chat2Desk transport')),
    text,
    fileIds,
  }),
  v.check((action) => something(action), 'text: write a message or attach a file'),
);
const tagging = (action: 'tag' | 'untag') =>
  v.object({
    action: v.literal(action),
    dialogId,
    tagId: id('tagId', 'a Chat2Desk tag id'),
    target: v.picklist(['client', 'request'], 'target must be client or request'),
  });
const dialogOnly = (action: 'close' | 'reopen') => v.object({ action: v.literal(action), dialogId });
const assign = v.object({ action: v.literal('assign'), dialogId, operatorId: id('operatorId', 'a Chat2Desk operator id') });

/** One action as the job stores it (the request without its key). */
export const dialogActionRequest = v.variant(
  'action',
  [send, writeFirst, tagging('tag'), tagging('untag'), dialogOnly('close'), dialogOnly('reopen'), assign],
  'action must be one of send, write_first, tag, untag, close, reopen, assign',
);
export type DialogActionRequest = v.InferOutput<typeof dialogActionRequest>;

const ACTION_KEY = /^[A-Za-z0-9_-]{8,80}$/;
const body = v.object({
  key: v.pipe(v.string('key must be the page’s idempotency key'), v.regex(ACTION_KEY, 'key must be 8 to 80 letters, digits, _ or -')),
});

/** The job's input: who asked, as which operator, what, and the digest of the request its key stands for. */
export const dialogActionInput = v.object({
  userId: v.pipe(v.number(), v.integer(), v.minValue(1)),
  operatorId: v.pipe(v.number(), v.integer(), v.minValue(1)),
  via: v.picklist(['tab', 'workspace']),
  request: dialogActionRequest,
  digest: v.pipe(v.string(), v.regex(/^[0-9a-f]{64}$/)),
});
export type DialogActionInput = v.InferOutput<typeof dialogActionInput>;

/** What the page sees of an action: POST and GET answer the same shape. */
export interface DialogActionStatus {
  key: string;
  state: 'queued' | 'running' | 'done' | 'failed';
  result?: Record<string, unknown>;
  error?: string;
}

export class DialogActionRequestError extends Error {
  override name = 'DialogActionRequestError';
  constructor(
    message: string,
    readonly httpStatus: 400 | 404 | 409 | 503,
  ) {
    super(message);
  }
}

export interface DialogActionsDeps {
  pipeline: Pick<Pipeline, 'enqueue'>;
  store: DialogActionStore;
  chat2desk: Pick<Chat2DeskAccess, 'connect'>;
  files: DialogFiles;
  clock: Clock;
}

export const dedupKeyOf = (userId: number, key: string) => `action:${userId}:${key}`;

/**
 * The actions of the CRM tab and the Chat workspace (issue 9, slice 2): checked against the viewer's
 * scope, stored as one `dialog_action` job per idempotency key (src/jobs/kinds/dialog-action.ts)
 * before the answer, and run by the worker exactly once.
 */
export class DialogActions {
  constructor(private readonly deps: DialogActionsDeps) {}

  /**
   * Validates, authorizes and stores the action. The key is the page's, one per composed message or
   * action: the same key again answers the job it started (a replay or a double click changes nothing
   * twice), the same key with another request is a 409. The caller has checked that the viewer is
   * mapped to an operator.
   */
  async submit(viewer: DialogViewer & { operatorId: number }, payload: unknown): Promise<DialogActionStatus> {
    const { key } = parse(body, payload);
    const request = parse(dialogActionRequest, payload);
    const digest = digestOf(request);
    const dedupKey = dedupKeyOf(viewer.userId, key);
    const earlier = await this.deps.store.byDedupKey(viewer.portal.memberId, dedupKey);
    if (earlier) return this.#replay(key, earlier, digest);

    const phone = await this.#authorize(viewer, request);
    const input: DialogActionInput = { userId: viewer.userId, operatorId: viewer.operatorId, via: viewer.via, request, digest };
    const { duplicate } = await this.deps.pipeline.enqueue(DIALOG_ACTION_KIND, viewer.portal.memberId, input, {
      dedupKey,
      orderingKey: request.action === 'write_first' ? `action:phone:${request.phone}` : `action:dialog:${request.dialogId}`,
      deadlineAt: this.deps.clock.now() + DIALOG_ACTION_DEADLINE_MS,
      ...(phone ? { phone } : {}),
    });
    const stored = await this.deps.store.byDedupKey(viewer.portal.memberId, dedupKey);
    if (!stored) throw new Error(`the dialog action ${dedupKey} was stored but cannot be read back`);
    return duplicate ? this.#replay(key, stored, digest) : statusOf(key, stored);
  }

  async status(viewer: DialogViewer, key: string): Promise<DialogActionStatus> {
    if (!ACTION_KEY.test(key)) throw new DialogActionRequestError('key must be 8 to 80 letters, digits, _ or -', 400);
    const row = await this.deps.store.byDedupKey(viewer.portal.memberId, dedupKeyOf(viewer.userId, key));
    if (!row) throw new DialogActionRequestError('No action with this key', 404);
    return statusOf(key, row);
  }

  #replay(key: string, row: DialogActionRow, digest: string): DialogActionStatus {
    const stored = parseJson(row.input);
    if (row.kind !== DIALOG_ACTION_KIND || stored.digest !== digest) {
      throw new DialogActionRequestError('This key was already used for another action: make a new key for each message or action', 409);
    }
    return statusOf(key, row);
  }

  /**
   * The viewer may act on what the request names: the dialog (and its client) in scope, the phone
   * among the record's, the tag and operator known to the account, the files their own. Outside the
   * scope the answer is 404 "No such dialog here". Returns the client's phone for the event log.
   */
  async #authorize(viewer: DialogViewer, request: DialogActionRequest): Promise<string | undefined> {
    const connection = await this.deps.chat2desk.connect(viewer.portal);
    if (!connection.usable) throw new DialogActionRequestError(connection.reason, 503);
    const { directory } = connection;
    if ('fileIds' in request && request.fileIds?.length) {
      try {
        await this.deps.files.ownFiles(viewer, request.fileIds);
      } catch (error) {
        if (error instanceof FileRequestError) throw new DialogActionRequestError(`fileIds: ${error.message}`, 400);
        throw error;
      }
    }
    if (request.action === 'write_first') {
      if (viewer.scope.kind === 'record' && !viewer.scope.phones.includes(request.phone))
        throw new DialogActionRequestError('phone: this number is not one of the record’s phones', 404);
      if (viewer.scope.kind === 'operator') await ownConversations(viewer, directory, request.phone);
      return request.phone;
    }
    const { dialog, client } = await visibleDialog(viewer, directory, request.dialogId);
    if (request.action === 'tag' || request.action === 'untag') {
      const known = async (load: () => Promise<Array<{ id: number }>>) => (await load()).some((tag) => tag.id === request.tagId);
      if (!(await known(() => directory.tags())) && !(await known(() => directory.api.tags()))) {
        throw new DialogActionRequestError(`tagId: Chat2Desk has no tag ${request.tagId}`, 400);
      }
      if (request.target === 'request' && dialog.lastRequestId === null) throw new DialogActionRequestError('target: this dialog has no request to tag', 400);
    }
    if (request.action === 'assign') {
      const operators = await directory.operators();
      const active = (list: typeof operators) => list.some((operator) => operator.id === request.operatorId && operator.role !== 'deleted' && operator.role !== 'disabled');
      if (!active(operators) && !active(await directory.api.operators())) throw new DialogActionRequestError(`operatorId: Chat2Desk has no operator ${request.operatorId}`, 400);
    }
    const phone = [client?.phone, client?.clientPhone].find((value) => typeof value === 'string' && /^\d{5,20}$/.test(value));
    return phone ?? undefined;
  }
}

/**
 * Writing first to a number that already has a client posts into that client's dialog (the job takes
 * the existing client, src/activities/sending.ts clientForPhone): an operator-scoped viewer ("mine")
 * may do so only when every dialog of the number's clients is theirs; else 404, as for a dialog outside the scope.
 */
async function ownConversations(viewer: DialogViewer, directory: DialogDirectory, phone: string): Promise<void> {
  for (const client of await directory.clientsByPhone(phone)) {
    for (const dialog of await directory.dialogsOfClient(client.id)) {
      if (!dialogVisible(viewer, dialog, client)) throw new DialogActionRequestError(NOT_HERE, 404);
    }
  }
}

/** The dialog and its client, if this viewer may see them; else 404 without saying whether it exists. */
async function visibleDialog(viewer: DialogViewer, directory: DialogDirectory, id: number): Promise<{ dialog: CachedDialog; client: CachedClient | undefined }> {
  const notHere = () => new DialogActionRequestError(NOT_HERE, 404);
  let dialog: CachedDialog;
  let client: CachedClient | undefined;
  try {
    dialog = await directory.dialog(id);
    client = dialog.clientId === null ? undefined : await directory.client(dialog.clientId);
  } catch (error) {
    if (error instanceof Chat2DeskError && error.kind === 'not_found') throw notHere();
    throw error;
  }
  if (!dialogVisible(viewer, dialog, client)) throw notHere();
  return { dialog, client };
}

function parse<T extends v.GenericSchema>(schema: T, payload: unknown): v.InferOutput<T> {
  const parsed = v.safeParse(schema, payload);
  if (parsed.success) return parsed.output;
  const [issue] = parsed.issues;
  const path = issue.path?.map((item) => String(item.key)).join('.');
  const message = path && !issue.message.startsWith(path.split('.')[0]!) ? `${path}: ${issue.message}` : issue.message;
  throw new DialogActionRequestError(message, 400);
}

/** SHA-256 of the request with its keys sorted: the same action in another key order is the same action. */
function digestOf(request: DialogActionRequest): string {
  const canonical = (value: unknown): unknown =>
    Array.isArray(value)
      ? value.map(canonical)
      : value && typeof value === 'object'
        ? Object.fromEntries(
            Object.entries(value)
              .filter(([, item]) => item !== undefined)
              .sort(([a], [b]) => a.localeCompare(b))
              .map(([name, item]) => [name, canonical(item)]),
          )
        : value;
  return createHash('sha256')
    .update(JSON.stringify(canonical(request)))
    .digest('hex');
}

function statusOf(key: string, row: DialogActionRow): DialogActionStatus {
  switch (row.state) {
    case 'confirming':
    case 'queued':
      return { key, state: 'queued' };
    case 'running':
      return { key, state: 'running' };
    case 'cancelled':
      return { key, state: 'failed', error: 'The action was stopped: the app was uninstalled' };
  }
  const { status, error, ...result } = parseJson(row.returnValues);
  if (status === 'failed') return { key, state: 'failed', error: typeof error === 'string' ? error : (row.lastError ?? 'failed') };
  return { key, state: 'done', result };
}

function parseJson(json: string | null): Record<string, unknown> {
  if (!json) return {};
  try {
    const value: unknown = JSON.parse(json);
    return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** Chat2Desk's refusal in words a manager can act on (docs/protocols.md C18: the template refusal's text is our assumption). */
export function refusalInManagerWords(error: Chat2DeskError, what: string): string {
  if (error.texts.some((text) => TEMPLATE_REFUSAL.test(text))) {
    return 'WhatsApp Business lets a business write first, or again 24 hours after the client last wrote, only with a template WhatsApp approved: send the first message from Chat2Desk with an approved template; once the client answers you can write here';
  }
  if (error.kind === 'auth') return 'Chat2Desk rejected the app’s API token: ask a Bitrix24 administrator to check the connection in the app’s settings';
  if (error.kind === 'quota') return 'The Chat2Desk account has used its API requests for the month: ask your administrator to raise the limit with Chat2Desk';
  return `Chat2Desk refused ${what}: ${error.apiMessage}`;
}

/** docs/protocols.md C18: how a WhatsApp Business refusal outside the 24-hour window, or for want of an HSM template, is recognised. */
const TEMPLATE_REFUSAL = /\bHSM\b|template|шаблон|plantilla|24[\s-]*(hours?|час|horas?)/i;
