import type { RobotRun } from '../activities/activity.js';
import { operatorName } from '../activities/operators.js';
import type { Chat2DeskClient, Chat2DeskRequestMessage } from '../chat2desk/client.js';
import { dialogUrl } from '../chat2desk/links.js';
import { normalizePhone } from '../phone.js';
import type { PortalSettings } from '../portal-settings.js';
import type { EpisodeCommentView, TranscriptLine } from './comment.js';

/** What names an episode: a Chat2Desk request (docs/protocols.md C4), closed at `closedAt`. */
export interface EpisodeKey {
  requestId: number;
  dialogId: number | null;
  clientId: number;
  /** Unix ms. */
  closedAt: number;
}

/** One closed request of a dialog, as Chat2Desk tells it. */
export interface Episode extends EpisodeKey {
  /** The client object as Chat2Desk sends it (extra fields read any of its keys). */
  client: Chat2DeskClient & Record<string, unknown>;
  /** The client's real numbers, E.164; pseudo-phones such as "[tg] 807892" are not numbers (C3). */
  phones: string[];
  name: string;
  operatorId: number | null;
  channelId: number | null;
  transport: string | null;
  startedAt: number | undefined;
  tags: Array<{ id: number; label: string }>;
  messages: Chat2DeskRequestMessage[];
}

/**
 * Reads the episode from Chat2Desk: the client (name, phones, tags; GET /clients/{id}) and the
 * request's messages (GET /requests/{id}/messages), from which the operator, channel, transport
 * and start come. Two requests; the dialog itself only when the request has no message.
 */
export async function loadEpisode(run: RobotRun, key: EpisodeKey): Promise<Episode> {
  const [client, messages] = await Promise.all([run.chat2desk.client(key.clientId), run.chat2desk.requestMessages(key.requestId)]);
  const full = client as Chat2DeskClient & Record<string, unknown>;
  const operatorId = [...messages].reverse().find((message) => typeof message.operatorID === 'number' && message.operatorID > 0)?.operatorID ?? null;
  const last = messages.at(-1);
  let episodeOperator = operatorId;
  let dialogId = key.dialogId ?? last?.dialogID ?? null;
  if (messages.length === 0 && dialogId !== null) {
    const dialog = await run.directory.dialog(dialogId).catch(() => undefined);
    episodeOperator = dialog?.operatorId ?? null;
    dialogId = dialog?.id ?? dialogId;
  }
  const first = messages[0]?.created;
  return {
    ...key,
    dialogId,
    client: full,
    phones: clientPhones(full, run.settings.defaultCountry ?? undefined),
    name: (client.assigned_name || client.name || '').trim(),
    operatorId: episodeOperator,
    channelId: last?.channelID ?? client.channels?.[0]?.id ?? null,
    transport: last?.transport ?? null,
    startedAt: typeof first === 'number' ? first * 1000 : undefined,
    tags: client.tags ?? [],
    messages,
  };
}

/** A Chat2Desk phone that is a pseudo-id of a non-phone transport: "[tg] 807892", "[chat] 1d0b…" (C3). */
const PSEUDO_PHONE = /^\s*\[/;

export function clientPhones(client: Pick<Chat2DeskClient, 'phone' | 'client_phone'>, defaultCountry: string | undefined): string[] {
  const phones = new Set<string>();
  for (const value of [client.phone, client.client_phone]) {
    if (!value || PSEUDO_PHONE.test(value) || value.length > 40) continue;
    const normalized = normalizePhone(value, defaultCountry);
    if (normalized) phones.add(normalized.e164);
  }
  return [...phones];
}

/**
 * The vendor's three tag filter modes: every episode; only those whose client carries one of the
 * tags; all but those. Request tags cannot be read back from Chat2Desk (no documented endpoint,
 * docs/protocols.md C16), so the client's tags decide.
 */
export function passesTagFilter(settings: Pick<PortalSettings, 'tagFilterMode' | 'tagFilterTags'>, tags: Array<{ id: number }>): boolean {
  if (settings.tagFilterMode === 'all') return true;
  const carries = tags.some((tag) => settings.tagFilterTags.includes(tag.id));
  return settings.tagFilterMode === 'only' ? carries : !carries;
}

/** The comment's view of an episode: names from the cached directory, messages as transcript lines. */
export async function episodeCommentView(run: RobotRun, episode: Episode, withTranscript: boolean): Promise<EpisodeCommentView> {
  const [operators, channels] = await Promise.all([run.directory.operators(), run.directory.channels()]);
  const operator = episode.operatorId !== null ? operatorName(operators.find((item) => item.id === episode.operatorId)) || `#${episode.operatorId}` : '';
  const channel = episode.channelId !== null ? (channels.find((item) => item.id === episode.channelId)?.name ?? `#${episode.channelId}`) : '';
  const phone = episode.phones[0] ?? '';
  return {
    requestId: episode.requestId,
    dialogId: episode.dialogId,
    dialogUrl: episode.dialogId !== null ? dialogUrl(run.settings.chat2deskApiUrl, episode.dialogId) : '',
    client: episode.name && phone && episode.name !== phone ? `${episode.name} (${phone})` : episode.name || phone,
    channel,
    transport: episode.transport ?? '',
    operator,
    startedAt: episode.startedAt,
    endedAt: episode.closedAt,
    tags: episode.tags.map((tag) => tag.label),
    withTranscript,
    transcript: withTranscript ? episode.messages.map(transcriptLine) : [],
  };
}

function transcriptLine(message: Chat2DeskRequestMessage): TranscriptLine {
  const attachments = new Map<string, string>();
  for (const item of message.attachments ?? []) if (item.link) attachments.set(item.link, item.name || 'attachment');
  // A file comes in one of these fields (docs/protocols.md C2 message types, C8).
  for (const kind of ['photo', 'video', 'audio', 'pdf'] as const) {
    const url = message[kind];
    if (url && !attachments.has(url)) attachments.set(url, kind);
  }
  return {
    time: typeof message.created === 'number' ? new Date(message.created * 1000).toISOString().slice(0, 19).replace('T', ' ') : '',
    // GET /requests/{id}/messages types: in | out | system (docs/protocols.md C2).
    direction: message.type === 'in' ? 'client' : message.type === 'out' ? 'operator' : 'system',
    text: message.text ?? '',
    attachments: [...attachments].map(([url, name]) => ({ url, name })),
  };
}
