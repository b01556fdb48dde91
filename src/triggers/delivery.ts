import type { Chat2DeskDelivery, DeliveryHandler, DeliveryJob } from '../chat2desk/delivery-handlers.js';
import { closeEpisodeInput } from '../episodes/delivery.js';
import type { Clock } from '../clock.js';
import { FIRE_TRIGGER_DEADLINE_MS, FIRE_TRIGGER_KIND, triggerKey, type FireTriggerInput } from '../jobs/kinds/fire-trigger.js';
import { NOTIFY_INCOMING_DEADLINE_MS, NOTIFY_INCOMING_KIND, notifyDedupKey, type NotifyIncomingInput } from '../jobs/kinds/notify-incoming.js';
import { SYNC_RESPONSIBLE_DEADLINE_MS, SYNC_RESPONSIBLE_KIND, type SyncResponsibleInput } from '../jobs/kinds/sync-responsible.js';
import { readSettings } from '../portal-settings.js';
import { TRIGGER_CODES, type TriggerCode } from './triggers.js';

/** How long incoming messages of one dialog are gathered into one notification. */
export const NOTIFY_DELAY_MS = 30_000;

const id = (value: unknown): number | undefined => {
  const n = typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value) : value;
  return typeof n === 'number' && Number.isSafeInteger(n) && n > 0 ? n : undefined;
};

/** What an event names (docs/protocols.md C7; field lists beyond inbox/outbox are read tolerantly). */
function subject(event: Record<string, unknown>) {
  const client = event.client && typeof event.client === 'object' ? (event.client as Record<string, unknown>) : {};
  return { clientId: id(event.client_id) ?? id(client.id) ?? null, dialogId: id(event.dialog_id) ?? null, client };
}

function fire(code: TriggerCode, eventKey: string, target: { clientId: number | null; dialogId: number | null }, now: number, dedupKey?: string): DeliveryJob {
  const input: FireTriggerInput = { code, eventKey, clientId: target.clientId, dialogId: target.dialogId, record: null };
  return { kind: FIRE_TRIGGER_KIND, input, options: { deadlineAt: now + FIRE_TRIGGER_DEADLINE_MS }, ...(dedupKey ? { dedupKey } : {}) };
}

/**
 * outbox_status reports delivery errors from the messengers (docs/protocols.md C7). Its body is
 * undocumented (assumption C17): one whose `status` says the message did arrive is not a failure.
 */
const DELIVERED = new Set(['sent', 'delivered', 'read', 'success']);

/**
 * What Chat2Desk events start besides the cache and closed episodes (README "Triggers,
 * notifications, responsible sync"): the triggers (inbox, outbox_status, and closes that no
 * close_episode job handles), grouped notifications of incoming messages, and the responsible
 * following a transfer. Each job is keyed by its delivery, so a retried delivery starts nothing twice.
 */
export function automationHandlers(clock: Clock, notifyDelayMs = NOTIFY_DELAY_MS): DeliveryHandler[] {
  const settingsOf = (delivery: Chat2DeskDelivery) => readSettings(delivery.settings, '');
  const eventKey = (delivery: Chat2DeskDelivery) => `chat2desk:${delivery.deliveryKey}`;
  const inbox: DeliveryHandler['jobs'] = (delivery) => {
    const target = subject(delivery.event);
    if (target.clientId === null && target.dialogId === null) return [];
    const now = clock.now();
    const jobs = [fire(TRIGGER_CODES.clientWrote, eventKey(delivery), target, now)];
    const messageId = id(delivery.event.message_id);
    if (settingsOf(delivery).notifyIncoming && target.dialogId !== null && messageId !== undefined) {
      const name = [target.client.assigned_name, target.client.name].find((value): value is string => typeof value === 'string' && value.trim() !== '');
      const input: NotifyIncomingInput = {
        dialogId: target.dialogId,
        requestId: id(delivery.event.request_id) ?? null,
        clientName: (name ?? '').trim().slice(0, 200),
        fromMessageId: messageId,
      };
      // One pending notification per dialog: messages arriving before it is sent join it.
      jobs.push({
        kind: NOTIFY_INCOMING_KIND,
        input,
        dedupKey: notifyDedupKey(target.dialogId),
        options: { runAt: now + notifyDelayMs, deadlineAt: now + NOTIFY_INCOMING_DEADLINE_MS },
      });
    }
    return jobs;
  };
  const notDelivered: DeliveryHandler['jobs'] = (delivery) => {
    const target = subject(delivery.event);
    const status = typeof delivery.event.status === 'string' ? delivery.event.status.toLowerCase() : '';
    if ((target.clientId === null && target.dialogId === null) || DELIVERED.has(status)) return [];
    return [fire(TRIGGER_CODES.notDelivered, eventKey(delivery), target, clock.now())];
  };
  const closed: DeliveryHandler['jobs'] = (delivery) => {
    // When a close_episode job is started, it fires it on the record it used (src/triggers/episode.ts).
    if (closeEpisodeInput(delivery, clock)) return [];
    const target = subject(delivery.event);
    const requestId = id(delivery.event.request_id);
    if (requestId === undefined || (target.clientId === null && target.dialogId === null)) return [];
    // close_dialog and close_request name the same episode: one job for both.
    const episode = `episode:${requestId}`;
    return [fire(TRIGGER_CODES.dialogClosed, episode, target, clock.now(), triggerKey(TRIGGER_CODES.dialogClosed, episode))];
  };
  const transferred: DeliveryHandler['jobs'] = (delivery) => {
    const target = subject(delivery.event);
    if (!settingsOf(delivery).responsibleSync || target.dialogId === null) return [];
    const input: SyncResponsibleInput = { dialogId: target.dialogId, clientId: target.clientId, operatorId: id(delivery.event.operator_id) ?? null };
    return [{ kind: SYNC_RESPONSIBLE_KIND, input, options: { deadlineAt: clock.now() + SYNC_RESPONSIBLE_DEADLINE_MS } }];
  };
  return [
    { hookType: 'inbox', jobs: inbox },
    { hookType: 'outbox_status', jobs: notDelivered },
    { hookType: 'close_dialog', jobs: closed },
    { hookType: 'close_request', jobs: closed },
    { hookType: 'dialog_transferred', jobs: transferred },
  ];
}
