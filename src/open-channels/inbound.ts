import * as v from 'valibot';
import type { Chat2DeskDelivery, DeliveryHandler, DeliveryJob } from '../chat2desk/delivery-handlers.js';
import type { Clock } from '../clock.js';
import { conversationOrderingKey, isOpenChannelExternalId } from './identity.js';

export const OL_INBOUND_KIND = 'ol_inbound';

/**
 * How long an inbound message keeps trying (Bitrix24 down, held for a line or an operator) before it
 * is given up and shown failed in the event log. Long on purpose: a held message is never dropped
 * quietly, and a week covers an admin connecting a line after a weekend.
 */
export const OL_INBOUND_DEADLINE_MS = 30 * 24 * 3600_000;

/** The longest message text a job carries; beyond it the text is cut with CUT_NOTE (MAX_BODY_BYTES bounds the delivery anyway). */
export const MAX_INBOUND_TEXT = 100_000;
const CUT_NOTE = '\n… (the message is longer; the full text is in Chat2Desk)';
const MAX_TRANSPORT = 50;
const MAX_NAME = 1_000;

const positive = (name: string) => v.pipe(v.number(`${name} must be a number`), v.integer(`${name} must be a whole number`), v.minValue(1, `${name} must be positive`));
const optionalText = v.nullable(v.pipe(v.string(), v.maxLength(MAX_INBOUND_TEXT)));

/**
 * Who wrote the message: the client (`inbox`), or the Chat2Desk side (`outbox`): a Chat2Desk
 * operator, an autoreply, or Chat2Desk itself without an operator (our robots, the API).
 */
export const INBOUND_AUTHORS = ['client', 'operator', 'autoreply', 'chat2desk'] as const;

export const olInboundInput = v.object({
  /** The Chat2Desk account (src/db/webhooks.ts accountKey): message ids are unique per account. */
  account: v.pipe(v.string(), v.minLength(1)),
  messageId: positive('messageId'),
  author: v.picklist(INBOUND_AUTHORS),
  clientId: positive('clientId'),
  requestId: v.nullable(positive('requestId')),
  dialogId: v.nullable(positive('dialogId')),
  channelId: v.nullable(positive('channelId')),
  operatorId: v.nullable(positive('operatorId')),
  transport: v.nullable(v.pipe(v.string(), v.maxLength(MAX_TRANSPORT))),
  text: optionalText,
  attachments: v.pipe(v.array(v.object({ name: v.pipe(v.string(), v.maxLength(500)), link: v.pipe(v.string(), v.maxLength(4000)) })), v.maxLength(20)),
  client: v.object({ name: optionalText, assignedName: optionalText, phone: v.nullable(v.pipe(v.string(), v.regex(/^\d{5,15}$/))) }),
  /** When Chat2Desk says the message was written (ISO), else when we received it. */
  sentAt: v.pipe(v.string(), v.isoTimestamp()),
});

export type OlInboundInput = v.InferOutput<typeof olInboundInput>;

/** One job per Chat2Desk message, ever: a retried or replayed delivery of it starts nothing. */
export const inboundDedupKey = (account: string, messageId: number) => `ol_in:${account}:${messageId}`;

const id = (value: unknown): number | null => {
  const n = typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value) : value;
  return typeof n === 'number' && Number.isSafeInteger(n) && n > 0 ? n : null;
};
const textOf = (value: unknown): string | null => (typeof value === 'string' && value !== '' ? value : null);
const record = (value: unknown): Record<string, unknown> => (value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : {});

/** Read tolerantly until the mode setting lands everywhere (contracts-10 "Mode"): anything but open_channels is Chat2Desk mode. */
export function inOpenChannelsMode(settings: Record<string, unknown>): boolean {
  return settings.integrationType === 'open_channels';
}

/** Message types of the Chat2Desk side that are not for the client's conversation (docs/protocols.md C2: system is not sent to the client, comment is an internal note). */
const NOT_CONVERSATION = new Set(['system', 'comment']);

/**
 * `inbox` and `outbox` (docs/protocols.md C7) in Open Channels mode → one `ol_inbound` job per
 * message, stored with the delivery (the outbox of src/chat2desk/delivery-handlers.ts), keyed by
 * (account, message id) forever and ordered per conversation. An outbox message that came from the
 * Open Channel itself (the outbound side's external_id) is not sent back.
 */
export function openChannelInboundHandlers(clock: Clock): DeliveryHandler[] {
  const jobs = (delivery: Chat2DeskDelivery): DeliveryJob[] => {
    const input = inboundInput(delivery, clock);
    if (!input) return [];
    return [
      {
        kind: OL_INBOUND_KIND,
        input,
        dedupKey: inboundDedupKey(input.account, input.messageId),
        options: {
          orderingKey: conversationOrderingKey(delivery.memberId, input.clientId),
          deadlineAt: clock.now() + OL_INBOUND_DEADLINE_MS,
          ...(input.client.phone ? { phone: input.client.phone } : {}),
        },
      },
    ];
  };
  /**
   * A tag added (a held message waits for its client to be tagged) or an operator joining (a line
   * that holds until one does) releases the conversation's held messages at once instead of at
   * their next recheck. The field lists of these events are a gap (docs/protocols.md C7): with no
   * client id to name the conversation, every held message of the portal looks again.
   */
  const wakes = (delivery: Chat2DeskDelivery) => {
    if (!inOpenChannelsMode(delivery.settings)) return [];
    const clientId = id(delivery.event.client_id) ?? id(record(delivery.event.client).id);
    return [{ kind: OL_INBOUND_KIND, ...(clientId === null ? {} : { orderingKey: conversationOrderingKey(delivery.memberId, clientId) }) }];
  };
  const none = () => [];
  return [
    { hookType: 'inbox', jobs },
    { hookType: 'outbox', jobs },
    { hookType: 'add_tag_to_client', jobs: none, wakes },
    { hookType: 'add_tag_to_request', jobs: none, wakes },
    { hookType: 'dialog_transferred', jobs: none, wakes },
  ];
}

export function inboundInput(delivery: Chat2DeskDelivery, clock: Clock): OlInboundInput | undefined {
  if (!inOpenChannelsMode(delivery.settings)) return undefined;
  const { event } = delivery;
  const client = record(event.client);
  const messageId = id(event.message_id);
  const clientId = id(event.client_id) ?? id(client.id);
  if (messageId === null || clientId === null) return undefined;
  const type = textOf(event.type) ?? (delivery.hookType === 'inbox' ? 'from_client' : 'to_client');
  if (delivery.hookType === 'outbox') {
    if (NOT_CONVERSATION.has(type)) return undefined;
    if (isOpenChannelExternalId(record(event.extra_data).external_id) || isOpenChannelExternalId(event.external_id)) return undefined;
  }
  const operatorId = id(event.operator_id);
  const author = delivery.hookType === 'inbox' ? 'client' : type === 'autoreply' ? 'autoreply' : operatorId !== null ? 'operator' : 'chat2desk';
  const eventTime = typeof event.event_time === 'string' ? Date.parse(event.event_time) : Number.NaN;
  const phone = [client.phone, client.client_phone].map((value) => (typeof value === 'string' ? value.replace(/^\+/, '') : '')).find((value) => /^\d{5,15}$/.test(value));
  return {
    account: delivery.accountKey,
    messageId,
    author,
    clientId,
    requestId: id(event.request_id),
    dialogId: id(event.dialog_id),
    channelId: id(event.channel_id),
    operatorId,
    // Cut rather than refused: one field too long must not lose the message (nor its delivery's other jobs).
    transport: cut(textOf(event.transport), MAX_TRANSPORT, '…'),
    text: cut(textOf(event.text), MAX_INBOUND_TEXT, CUT_NOTE),
    attachments: attachmentsOf(event),
    client: { name: cut(textOf(client.name), MAX_NAME, ''), assignedName: cut(textOf(client.assigned_name), MAX_NAME, ''), phone: phone ?? null },
    sentAt: new Date(Number.isFinite(eventTime) ? eventTime : clock.now()).toISOString(),
  };
}

/** `attachments[{name, link}]` plus the legacy scalar fields `photo`, `video`, `audio`, `pdf` (docs/protocols.md C8). */
function attachmentsOf(event: Record<string, unknown>): OlInboundInput['attachments'] {
  const listed = Array.isArray(event.attachments) ? event.attachments.map(record) : [];
  const found: OlInboundInput['attachments'] = [];
  const add = (link: unknown, name: unknown) => {
    if (typeof link !== 'string' || !/^https?:\/\//i.test(link) || link.length > 4000 || !URL.canParse(link) || found.some((item) => item.link === link)) return;
    const fallback = lastSegment(new URL(link).pathname) || 'file';
    found.push({ name: (typeof name === 'string' && name.trim() !== '' ? name : fallback).slice(0, 500), link });
  };
  for (const item of listed) add(item.link, item.name);
  for (const field of ['photo', 'video', 'audio', 'pdf']) add(event[field], undefined);
  return found.slice(0, 20);
}

/** `text` at most `max` characters, `note` ending a cut one; a surrogate pair is never split. */
function cut(text: string | null, max: number, note: string): string | null {
  if (text === null || text.length <= max) return text;
  let kept = text.slice(0, max - note.length);
  if (/[\uD800-\uDBFF]$/.test(kept)) kept = kept.slice(0, -1);
  return kept + note;
}

function lastSegment(path: string): string {
  const segment = path.split('/').pop() ?? '';
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
