import * as v from 'valibot';
import { str } from '../bitrix24/form-body.js';
import { phpList, phpMap } from '../bitrix24/values.js';
import { CONNECTOR_ID } from './connector.js';
import { type ChatIdentity, parseChatId } from './identity.js';

/** The held ordering-key form (src/db/jobs.ts HELD_ORDERING_PREFIX): a message waiting between attempts keeps the later ones behind it. */
const HELD_PREFIX = 'held:';

/**
 * The most messages one event may carry: Bitrix24 sends an operator's message in an event of its
 * own (examples/bitrix24/onimconnectormessage*.form.txt); an event with more is refused whole.
 */
export const MAX_MESSAGES_PER_EVENT = 20;

/**
 * Outbound Open Channels (operator → client): what OnImConnectorMessageAdd/Update/Delete carry,
 * read tolerantly from the form body (docs/protocols.md B23, bitrix24.md §12.6–8), and the job each
 * message becomes (src/jobs/kinds/ol-outbound.ts).
 */

export const OL_OUTBOUND_KIND = 'ol_outbound';

/** The link Bitrix24 gives for an operator's file: only this path on the portal's own address is fetched (B23). */
export const DOWNLOAD_PATH = '/rest/download.json';

const fileInput = v.object({
  name: v.pipe(v.string(), v.maxLength(500)),
  /**
   * The download path and query WITHOUT the `auth` parameter Bitrix24 puts in it (an operator's
   * access token): the job row is not sealed, and the file is fetched with the app's own token.
   */
  download: v.pipe(v.string(), v.startsWith(`${DOWNLOAD_PATH}?`), v.maxLength(4000)),
});

export const olOutboundInput = v.object({
  action: v.picklist(['add', 'update', 'delete']),
  line: v.pipe(v.number(), v.integer(), v.minValue(1)),
  /** Bitrix24's chat and message (`im.chat_id`, `im.message_id`), echoed in the delivery status. */
  imChatId: v.pipe(v.number(), v.integer(), v.minValue(1)),
  imMessageId: v.pipe(v.number(), v.integer(), v.minValue(1)),
  /** Our conversation id (`chat.id`, `c<client id>` or `r<request id>`). */
  chatId: v.pipe(v.string(), v.maxLength(40)),
  /** The operator (a portal user); edits and deletes may not name one. */
  userId: v.nullable(v.pipe(v.number(), v.integer(), v.minValue(1))),
  text: v.pipe(v.string(), v.maxLength(100_000)),
  files: v.pipe(v.array(fileInput), v.maxLength(20)),
  /**
   * The access token the event carried (the writing operator's, bitrix24.md §11), sealed (SecretBox):
   * what the job confirms the message with before doing anything (src/open-channels/confirmation.ts).
   */
  sealedAuth: v.pipe(v.string(), v.maxLength(2000)),
});
export type OlOutboundInput = v.InferOutput<typeof olOutboundInput>;

export type ConnectorAction = OlOutboundInput['action'];

/** One message of an event, ready to be queued, or why it is not sent. */
export type ReadMessage = { ok: true; input: Omit<OlOutboundInput, 'sealedAuth'>; conversation: ChatIdentity } | { ok: false; reason: string };

/**
 * The messages of an OnImConnectorMessage* event for our connector; an event for another connector
 * (a portal may bind several apps' connectors to one handler address) reads as none.
 */
export function readConnectorMessages(data: unknown): { ours: boolean; line: number | undefined; entries: unknown[] } {
  const fields = phpMap(data);
  if (str(fields.CONNECTOR).toLowerCase() !== CONNECTOR_ID) return { ours: false, line: undefined, entries: [] };
  return { ours: true, line: positiveInt(fields.LINE), entries: phpList(fields.MESSAGES) };
}

/** One entry of MESSAGES, read once the event's line was found to be one of ours. */
export function readConnectorMessage(action: ConnectorAction, line: number, item: unknown): ReadMessage {
  const entry = phpMap(item);
  const im = phpMap(entry.im);
  const message = phpMap(entry.message);
  const chatId = str(phpMap(entry.chat).id);
  const imChatId = positiveInt(im.chat_id);
  const imMessageId = positiveInt(im.message_id);
  if (imChatId === undefined || imMessageId === undefined) return { ok: false, reason: 'the event names no chat or message' };
  const conversation = parseChatId(chatId);
  if (!conversation) return { ok: false, reason: `chat ${JSON.stringify(chatId.slice(0, 40))} is not a Chat2Desk conversation` };
  // user_id 0 (or none): a system message of Bitrix24 (welcome, automatic answers), not an operator's (B23).
  const userId = positiveInt(message.user_id);
  if (action === 'add' && userId === undefined) return { ok: false, reason: 'a Bitrix24 system message (user_id 0) is not sent to the client' };
  const files = phpList(message.files).flatMap((file) => {
    const download = downloadPath(str(phpMap(file).downloadLink));
    return download ? [{ name: str(phpMap(file).name).slice(0, 500) || 'file', download }] : [];
  });
  return {
    ok: true,
    conversation,
    input: { action, line, imChatId, imMessageId, chatId, userId: userId ?? null, text: str(message.text), files: files.slice(0, 20) },
  };
}

/**
 * The path of a file's `downloadLink` (relative, `/rest/download.json?auth=…&token=…`) with its
 * `auth` dropped; an absolute link keeps only its path, so it is fetched from the portal's own
 * address and never from a host the event names. Anything else is not a Bitrix24 download.
 */
export function downloadPath(link: string): string | undefined {
  let url: URL;
  try {
    url = new URL(link, 'https://portal.invalid');
  } catch {
    return undefined;
  }
  if (url.pathname !== DOWNLOAD_PATH) return undefined;
  url.searchParams.delete('auth');
  return `${url.pathname}?${url.searchParams.toString()}`;
}

/**
 * The job's dedup key: one per Bitrix24 message and what the event says of it, forever (contracts-10);
 * edits and deletes apart. `contentDigest` (a keyed digest of the whole entry and the event's access
 * token) is in it so that an event nobody has confirmed yet cannot take the key of the genuine one: a
 * forged entry for message N is a job of its own, which fails its confirmation. A repeated delivery
 * of one event has the same digest; exactly-once of the send is the ledger's key (`ol_out:<N>:<n>`).
 */
export function outboundDedupKey(memberId: string, input: Pick<OlOutboundInput, 'action' | 'imMessageId'>, eventTs: string, contentDigest: string): string {
  if (input.action === 'add') return `ol_out:${memberId}:${input.imMessageId}:${contentDigest}`;
  // Each edit is its own event (its ts); a repeated delivery of one edit has the same ts.
  return `ol_out:${memberId}:${input.imMessageId}:${input.action}:${eventTs}:${contentDigest}`;
}

/**
 * The conversation's outbound ordering key: the operator's messages keep their order among
 * themselves, apart from inbound's (identity.ts `conversationOrderingKey`), so a client's message
 * held until an operator joins does not hold the operator's replies back. A request chat is keyed by
 * its request: the event does not name the client, and asking Chat2Desk before answering Bitrix24
 * would put a network call before the job is stored.
 */
export function outboundOrderingKey(memberId: string, conversation: ChatIdentity): string {
  const chat = conversation.kind === 'client' ? `c${conversation.clientId}` : `r${conversation.requestId}`;
  return `${HELD_PREFIX}ol-out:${memberId}:${chat}`;
}

function positiveInt(value: unknown): number | undefined {
  const number = typeof value === 'number' ? value : /^\d+$/.test(str(value)) ? Number(str(value)) : Number.NaN;
  return Number.isSafeInteger(number) && number > 0 ? number : undefined;
}
