import type { Invalidation } from '../db/cache.js';

/** The events our webhook subscribes to (docs/protocols.md C7). */
export const WEBHOOK_EVENTS = [
  'inbox',
  'outbox',
  // Delivery errors: the "message not delivered" trigger (src/triggers/delivery.ts).
  'outbox_status',
  'new_client',
  'new_request',
  'close_dialog',
  'close_request',
  'dialog_transferred',
  'add_tag_to_client',
  'delete_tag_from_client',
  'add_tag_to_request',
  'delete_tag_from_request',
  'client_updated',
] as const;

const num = (value: unknown): number | undefined => {
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
  return typeof n === 'number' && Number.isFinite(n) ? n : undefined;
};

const digits = (value: unknown): string | undefined => (typeof value === 'string' && /^\d{5,15}$/.test(value) ? value : undefined);

/**
 * Chat2Desk retries a delivery after 10 s, 5 min and 2 h; the same event must count once. Events
 * with a message are keyed by it, the others by what they name and their time (docs/protocols.md C7 Retries).
 */
export function deliveryKey(body: Record<string, unknown>): string {
  const type = String(body.hook_type ?? 'unknown');
  if (body.message_id !== undefined && body.message_id !== null) return `${type}:${String(body.message_id)}`;
  const subject = ['request_id', 'dialog_id', 'client_id', 'id', 'tag_id'].map((key) => String(body[key] ?? '')).join(':');
  return `${type}:${subject}:${String(body.event_time ?? '')}`;
}

/**
 * What an event makes stale. Field lists of most events are undocumented (docs/protocols.md C7), so
 * every plausible id is read tolerantly and unknown events invalidate whatever ids they carry.
 */
export function invalidationFor(body: Record<string, unknown>): Invalidation {
  const client = body.client && typeof body.client === 'object' ? (body.client as Record<string, unknown>) : {};
  const clientId = num(body.client_id) ?? num(client.id);
  const dialogId = num(body.dialog_id);
  const type = String(body.hook_type ?? '');
  const change: Invalidation = { clientIds: [], dialogIds: [], phones: [], dialogListsOf: [], lists: [] };
  const phones = [digits(client.phone), digits(client.client_phone), digits(body.phone), digits(body.client_phone)].filter((p): p is string => Boolean(p));

  if (dialogId !== undefined) change.dialogIds.push(dialogId);
  if (clientId !== undefined) change.dialogListsOf.push(clientId);
  switch (type) {
    case 'inbox':
    case 'outbox':
      // Last message, state and operator of the dialog changed; a new dialog may exist. The client
      // record itself changes only when the message made a new client.
      if (body.is_new_client === true || body.is_new_client === 1) {
        if (clientId !== undefined) change.clientIds.push(clientId);
        change.phones.push(...phones);
      }
      break;
    case 'close_dialog':
    case 'close_request':
    case 'new_request':
    case 'dialog_transferred':
      // Only the dialog and the client's dialog list (already added above) are affected.
      break;
    case 'new_client':
    case 'client_updated':
      if (clientId !== undefined) change.clientIds.push(clientId);
      if (num(body.id) !== undefined && clientId === undefined) change.clientIds.push(num(body.id)!);
      change.phones.push(...phones);
      break;
    case 'add_tag_to_client':
    case 'delete_tag_from_client':
    case 'add_tag_to_request':
    case 'delete_tag_from_request':
      if (clientId !== undefined) change.clientIds.push(clientId);
      change.lists.push('tags');
      break;
    default:
      if (clientId !== undefined) change.clientIds.push(clientId);
      change.phones.push(...phones);
  }
  return change;
}
