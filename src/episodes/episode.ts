import type { RobotRun } from '../activities/activity.js';
import { operatorName } from '../activities/operators.js';
import type { Chat2DeskClient, Chat2DeskFullMessage, Chat2DeskRequestMessage } from '../chat2desk/client.js';
import { dialogUrl } from '../chat2desk/links.js';
import { parseChat2DeskTime } from '../chat2desk/times.js';
import { normalizePhone } from '../phone.js';
import type { PortalSettings } from '../portal-settings.js';
import type { EpisodeCommentView, TranscriptLine } from './comment.js';

/** What names an episode: a Chat2Desk request (docs/protocols.md C4), closed at `closedAt`. */
export interface EpisodeKey {
  requestId: number;
  dialogId: number | null;
  /** Null only for the robot on a dialog whose client Chat2Desk did not name (no message yet). */
  clientId: number | null;
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
  messages: EpisodeMessage[];
}

/** A message of the episode, from either message list Chat2Desk has. */
export interface EpisodeMessage {
  /** Unix ms. */
  createdAt: number | undefined;
  direction: 'client' | 'operator' | 'system';
  text: string;
  attachments: Array<{ url: string; name: string }>;
  operatorId: number | null;
  channelId: number | null;
  transport: string | null;
  dialogId: number | null;
}

/**
 * Reads the episode from Chat2Desk: the client (name, phones, tags; GET /clients/{id}) and the
 * request's messages, from which the operator, channel, transport and start come. With the dialog
 * known, its messages (GET /messages?dialog_id, full objects with attachments) are kept when their
 * `request_id` is the episode's (docs/protocols.md C2: every message names its request); without
 * it, GET /requests/{id}/messages (C4), whose rows carry no `attachments` list.
 */
export async function loadEpisode<K extends EpisodeKey>(run: RobotRun, key: K): Promise<Episode & Pick<K, 'clientId'>> {
  const [client, messages] = await Promise.all([key.clientId !== null ? run.chat2desk.client(key.clientId) : NO_CLIENT, episodeMessages(run, key)]);
  const full = client as Chat2DeskClient & Record<string, unknown>;
  const last = messages.at(-1);
  let operatorId = [...messages].reverse().find((message) => message.operatorId !== null)?.operatorId ?? null;
  let dialogId = key.dialogId ?? last?.dialogId ?? null;
  if (messages.length === 0 && dialogId !== null) {
    const dialog = await run.directory.dialog(dialogId).catch(() => undefined);
    operatorId = dialog?.operatorId ?? null;
    dialogId = dialog?.id ?? dialogId;
  }
  return {
    ...key,
    dialogId,
    client: full,
    phones: clientPhones(full, run.settings.defaultCountry ?? undefined),
    name: (client.assigned_name || client.name || '').trim(),
    operatorId,
    channelId: last?.channelId ?? client.channels?.[0]?.id ?? null,
    transport: last?.transport ?? null,
    startedAt: messages[0]?.createdAt,
    tags: client.tags ?? [],
    messages,
  };
}

/** A dialog whose client Chat2Desk did not name: the comment shows no client. */
const NO_CLIENT: Chat2DeskClient = { id: 0 };

async function episodeMessages(run: RobotRun, key: Pick<EpisodeKey, 'requestId' | 'dialogId'>): Promise<EpisodeMessage[]> {
  if (key.dialogId === null) return (await run.chat2desk.requestMessages(key.requestId)).map(fromRequestRow);
  return (await run.chat2desk.dialogMessages(key.dialogId)).filter((message) => message.request_id === key.requestId).map(fromMessage);
}

const positive = (value: number | null | undefined): number | null => (typeof value === 'number' && value > 0 ? value : null);

/** Message types (docs/protocols.md C2): who the line is from. */
function fromMessage(message: Chat2DeskFullMessage): EpisodeMessage {
  const type = message.type;
  return {
    createdAt: parseChat2DeskTime(message.created),
    direction: type === 'from_client' ? 'client' : type === 'to_client' || type === 'comment' ? 'operator' : 'system',
    text: message.text ?? '',
    attachments: attachmentsOf(message),
    operatorId: positive(message.operator_id),
    channelId: positive(message.channel_id),
    transport: message.transport ?? null,
    dialogId: positive(message.dialog_id),
  };
}

/** GET /requests/{id}/messages rows: type in | out | system, `created` in unix seconds (docs/protocols.md C2, C4). */
function fromRequestRow(message: Chat2DeskRequestMessage): EpisodeMessage {
  return {
    createdAt: typeof message.created === 'number' ? message.created * 1000 : undefined,
    direction: message.type === 'in' ? 'client' : message.type === 'out' ? 'operator' : 'system',
    text: message.text ?? '',
    attachments: attachmentsOf(message),
    operatorId: positive(message.operatorID),
    channelId: positive(message.channelID),
    transport: message.transport ?? null,
    dialogId: positive(message.dialogID),
  };
}

function attachmentsOf(message: Pick<Chat2DeskFullMessage, 'attachments' | 'photo' | 'video' | 'audio' | 'pdf'>): EpisodeMessage['attachments'] {
  const attachments = new Map<string, string>();
  for (const item of message.attachments ?? []) if (item.link) attachments.set(item.link, item.name || 'attachment');
  // Older messages carry a file in one of these fields instead (docs/protocols.md C8).
  for (const kind of ['photo', 'video', 'audio', 'pdf'] as const) {
    const url = message[kind];
    if (url && !attachments.has(url)) attachments.set(url, kind);
  }
  return [...attachments].map(([url, name]) => ({ url, name }));
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

function transcriptLine(message: EpisodeMessage): TranscriptLine {
  return {
    time: message.createdAt !== undefined ? new Date(message.createdAt).toISOString().slice(0, 19).replace('T', ' ') : '',
    direction: message.direction,
    text: message.text,
    attachments: message.attachments,
  };
}
