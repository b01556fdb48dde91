import type { ScopedClient } from '../dialogs/visibility.js';

/**
 * What changed, as the page needs to know it: it reads the dialog (or the client's dialogs) again.
 * `open_channel`: the client's Open Channel chat became known or changed (src/jobs/kinds/ol-inbound.ts).
 */
export type LiveWhat = 'message' | 'state' | 'operator' | 'tags' | 'open_channel';

/** One `event: dialog` on a live stream. `dialogId` is null when the delivery names only the client. */
export interface LiveEvent {
  dialogId: number | null;
  clientId: number | null;
  what: LiveWhat;
}

/**
 * A delivery's change, with what its own body says about who may see it (docs/protocols.md C19).
 * What the body leaves out is looked up by the hub only when some viewer's scope needs it.
 */
export interface DialogChange {
  event: LiveEvent;
  /** The client's phones, from the body's `client` object (inbox and outbox carry one). */
  client?: ScopedClient;
  /** The dialog's operator when the body names it (null = unassigned); undefined = the body does not say. */
  operatorId?: number | null;
}

/** Hook types a live page cares about (docs/protocols.md C7 Event types); the others change nothing it shows. */
const WHAT_OF: Record<string, LiveWhat> = {
  inbox: 'message',
  outbox: 'message',
  close_dialog: 'state',
  close_request: 'state',
  dialog_transferred: 'operator',
  add_tag_to_client: 'tags',
  delete_tag_from_client: 'tags',
  add_tag_to_request: 'tags',
  delete_tag_from_request: 'tags',
};

/**
 * Hook types whose `operator_id` is the dialog's operator: an inbox names the assignee (null while
 * the request is unassigned, docs/protocols.md C7), a transfer names the new one. An outbox's
 * `operator_id` is whoever wrote, not necessarily the dialog's operator, so it is not trusted here.
 */
const NAMES_DIALOG_OPERATOR = new Set(['inbox', 'dialog_transferred']);

const num = (value: unknown): number | undefined => {
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
  return typeof n === 'number' && Number.isFinite(n) ? n : undefined;
};

/**
 * The longest phone field a change carries. A phone is at most 17 digits however it is written; a
 * longer field is no phone (it could only hide a client from a page, never show one), and changes
 * cross to the other processes in a PostgreSQL notification, which refuses payloads over 8000 bytes
 * (src/db/broadcast.ts): an unbounded field kept a change from every other process's pages.
 */
const MAX_PHONE_FIELD = 64;

const text = (value: unknown): string | null => (typeof value === 'string' ? value : null);
const phoneField = (value: unknown): string | null => {
  const field = text(value);
  return field !== null && field.length <= MAX_PHONE_FIELD ? field : null;
};

/** The live change a verified webhook delivery makes, or undefined when no open page shows what it changed. */
export function dialogChangeOf(body: Record<string, unknown>): DialogChange | undefined {
  const hookType = String(body.hook_type ?? '');
  const what = WHAT_OF[hookType];
  if (!what) return undefined;
  const client = body.client && typeof body.client === 'object' && !Array.isArray(body.client) ? (body.client as Record<string, unknown>) : undefined;
  // The client object is the one whose phones decide visibility, so its id names the client (C19).
  const clientId = num(client?.id) ?? num(body.client_id) ?? null;
  const dialogId = num(body.dialog_id) ?? null;
  if (clientId === null && dialogId === null) return undefined;
  const change: DialogChange = { event: { dialogId, clientId, what } };
  if (client && ('phone' in client || 'client_phone' in client)) change.client = { phone: phoneField(client.phone), clientPhone: phoneField(client.client_phone) };
  if (NAMES_DIALOG_OPERATOR.has(hookType)) change.operatorId = num(body.operator_id) ?? null;
  return change;
}
