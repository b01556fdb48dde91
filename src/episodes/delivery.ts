import type { Chat2DeskDelivery, DeliveryHandler, DeliveryJob } from '../chat2desk/delivery-handlers.js';
import type { Clock } from '../clock.js';
import { CLOSE_EPISODE_KIND, closeEpisodeOptions, type CloseEpisodeInput } from '../jobs/kinds/close-episode.js';
import { readIntegrationType, readSettings } from '../portal-settings.js';

const id = (value: unknown): number | undefined => {
  const n = typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value) : value;
  return typeof n === 'number' && Number.isSafeInteger(n) && n > 0 ? n : undefined;
};

/**
 * `close_dialog` and `close_request` (docs/protocols.md C7) → one `close_episode` job per episode,
 * whichever arrives and however often: the job is keyed by the request id. Field lists of both
 * events are undocumented (protocol assumption docs/protocols.md C16): the request id is read from
 * `request_id`, the client from `client_id` or `client.id`, the time from `event_time`. An event
 * without a request id or a client starts nothing: closing a dialog closes its request, whose
 * `close_request` names it, and gap polling finds what no event named.
 */
export function closeEpisodeHandlers(clock: Clock): DeliveryHandler[] {
  const jobs: DeliveryHandler['jobs'] = (delivery) => {
    const input = closeEpisodeInput(delivery, clock);
    if (!input) return [];
    const { dedupKey, ...options } = closeEpisodeOptions(input, clock.now());
    const job: DeliveryJob = { kind: CLOSE_EPISODE_KIND, input, dedupKey, options };
    return [job];
  };
  return [
    { hookType: 'close_dialog', jobs },
    { hookType: 'close_request', jobs },
  ];
}

/**
 * The `close_episode` input a close event starts, or undefined when it starts none (episodes off,
 * closed before they were turned on, no request or client named). Whoever else acts on close events
 * (the "dialog closed" trigger, src/triggers/delivery.ts) asks this one question.
 */
export function closeEpisodeInput(delivery: Chat2DeskDelivery, clock: Clock): CloseEpisodeInput | undefined {
  // Only the switch is read here: the API's default URL does not matter for it.
  const settings = readSettings(delivery.settings, '');
  if (!settings.episodesEnabled) return undefined;
  // Open Channels mode: Bitrix24's own Open Channels logic makes the records (issue 10). Jobs queued
  // before the switch were decided then and finish as queued.
  if (readIntegrationType(delivery.settings) === 'open_channels') return undefined;
  const { event } = delivery;
  const requestId = id(event.request_id);
  const client = event.client && typeof event.client === 'object' ? (event.client as Record<string, unknown>) : {};
  const clientId = id(event.client_id) ?? id(client.id);
  if (requestId === undefined || clientId === undefined) return undefined;
  const eventTime = typeof event.event_time === 'string' ? Date.parse(event.event_time) : Number.NaN;
  const closedAt = Number.isFinite(eventTime) ? eventTime : clock.now();
  // Only episodes closed after the admin turned this on.
  const enabledAt = settings.episodesEnabledAt ? Date.parse(settings.episodesEnabledAt) : Number.NaN;
  if (!(closedAt >= enabledAt)) return undefined;
  return { requestId, dialogId: id(event.dialog_id) ?? null, clientId, closedAt: new Date(closedAt).toISOString(), origin: 'webhook' };
}
