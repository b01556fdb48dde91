import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { Bitrix24Error } from '../bitrix24/errors.js';
import type { Bitrix24Rest } from '../bitrix24/rest-client.js';
import { str } from '../bitrix24/form-body.js';
import { phpMap } from '../bitrix24/values.js';
import type { Portal } from '../db/portals.js';
import { CONNECTOR_ID } from './connector.js';
import type { OlOutboundInput } from './outbound.js';

/**
 * The portal confirms an operator's message before anything is done with it (docs/protocols.md B27).
 * The application token that lets an OnImConnectorMessage* event in is on every page of the app
 * (B0), so the event alone proves nothing. It also carries the access token of the user who wrote
 * (`auth[access_token]`, events are bound without auth_type, bitrix24.md §11); with that token we
 * ask, in one batch, who it belongs to (`user.current`) and the Open Channel chat's history
 * (`imopenlines.session.history.get` with CHAT_ID alone, which Bitrix24 answers only to a user in
 * the chat). The message is confirmed when the chat is our connector's conversation of that line
 * and external chat (its `entityId`), message N is in it, written by the token's user (the one the
 * event names), with the event's text. A forger's own token reads only chats they are in, where a
 * message of theirs is one they really wrote, in a conversation of ours.
 *
 * A message the operator edited before its add job confirmed it (it waited behind earlier messages,
 * or for the budget) is confirmed with the text Bitrix24 holds now: that is what the client gets.
 */

/** `text`: the message's text in Bitrix24 now, what is sent (for an add, it may be a later edit of the event's). */
export type Confirmation = { confirmed: true; text: string } | { confirmed: false; reason: string };

/** Kept reads are known by a digest of the token: the operator's raw token is never a key lingering in memory. */
const tokenDigest = (accessToken: string) => createHash('sha256').update(accessToken).digest('base64url');

/** A history read, kept a little so the other messages of one event and chat are checked on the same answer. */
interface HistoryRead {
  userId: number | undefined;
  entityId: string;
  messages: Map<number, { senderId: number; text: string }>;
}

/** How long one history read answers for the other messages of its chat (the same event's jobs run one after another). */
const HISTORY_REUSE_MS = 30_000;
/** Reads of one event's messages are seconds apart; a few hundred chats at once is far beyond one portal's operators. */
const MAX_KEPT = 200;

export class MessageConfirmations {
  /**
   * Reads in flight or answered, per portal, chat and token digest; a thrown read (load, outage) is
   * dropped, to be asked again. Expired reads are purged on their ttl (the chat's messages, and
   * whose they are, need not stay in memory once they answer nothing).
   */
  readonly #reads: LRUCache<string, Promise<HistoryRead | Confirmation>>;

  constructor(private readonly deps: { rest: Pick<Bitrix24Rest, 'callAs'>; now: () => number }) {
    this.#reads = new LRUCache({ max: MAX_KEPT, ttl: HISTORY_REUSE_MS, ttlAutopurge: true, perf: { now: deps.now } });
  }

  /**
   * Confirms one message of an event with the writer's access token. A refusal by the portal (token
   * refused, no access, no such chat) is an unconfirmed message; load and outages throw, to be retried.
   */
  async confirm(portal: Portal, accessToken: string, input: OlOutboundInput): Promise<Confirmation> {
    let read = await this.#history(portal, accessToken, input.imChatId, false);
    if ('confirmed' in read) return read;
    // A message written after the kept read: asked once more.
    if (!read.messages.has(input.imMessageId)) read = await this.#history(portal, accessToken, input.imChatId, true);
    if ('confirmed' in read) return read;
    return judge(read, input);
  }

  async #history(portal: Portal, accessToken: string, imChatId: number, fresh: boolean): Promise<HistoryRead | Confirmation> {
    const key = `${portal.memberId} ${imChatId} ${tokenDigest(accessToken)}`;
    const kept = fresh ? undefined : this.#reads.get(key);
    if (kept) return kept;
    const reading = this.#ask(portal, accessToken, imChatId);
    this.#reads.set(key, reading);
    reading.catch(() => {
      if (this.#reads.peek(key) === reading) this.#reads.delete(key);
    });
    return reading;
  }

  async #ask(portal: Portal, accessToken: string, imChatId: number): Promise<HistoryRead | Confirmation> {
    let answer: { result?: unknown; result_error?: unknown };
    try {
      answer = await this.deps.rest.callAs(portal.memberId, portal.clientEndpoint, accessToken, 'batch', {
        halt: 0,
        cmd: { me: 'user.current', history: `imopenlines.session.history.get?CHAT_ID=${imChatId}` },
      });
    } catch (error) {
      // The token itself refused (expired, not this portal's, made up): nothing can be confirmed with it.
      if (error instanceof Bitrix24Error && error.httpStatus < 500 && !error.refusedForLoad) {
        return { confirmed: false, reason: `Bitrix24 did not accept the event's access token (${error.code || error.httpStatus})` };
      }
      throw error;
    }
    const results = phpMap(answer.result);
    const errors = phpMap(answer.result_error);
    if (errors.history !== undefined || results.history === undefined) {
      const code = str(phpMap(errors.history).error) || 'no answer';
      return { confirmed: false, reason: `Bitrix24 did not show chat ${imChatId} to the user whose token the event carries (${code})` };
    }
    const history = phpMap(results.history);
    const messages = new Map<number, { senderId: number; text: string }>();
    for (const [id, item] of Object.entries(phpMap(history.message))) {
      const message = phpMap(item);
      const imMessageId = Number(str(message.id) || id);
      if (Number.isSafeInteger(imMessageId)) messages.set(imMessageId, { senderId: Number(str(message.senderid)), text: str(message.text) });
    }
    const chat = phpMap(phpMap(history.chat)[String(imChatId)]);
    const userId = Number(str(phpMap(results.me).ID));
    return { userId: Number.isSafeInteger(userId) && userId > 0 ? userId : undefined, entityId: str(chat.entityId), messages };
  }
}

/** The checks of one message against the portal's answer. */
function judge(read: HistoryRead, input: OlOutboundInput): Confirmation {
  const refuse = (why: string): Confirmation => ({ confirmed: false, reason: `Bitrix24 does not confirm message ${input.imMessageId}: ${why}` });
  // `<connector>|<line>|<external chat id>|<client user id>` (B27, the docs' example `livechat|58|1981|450`).
  const [connector, line, chatId] = read.entityId.split('|');
  if (connector?.toLowerCase() !== CONNECTOR_ID || line !== String(input.line) || chatId !== input.chatId) {
    return refuse(`chat ${input.imChatId} is not the Chat2Desk conversation ${input.chatId} of line ${input.line}`);
  }
  const message = read.messages.get(input.imMessageId);
  if (!message) return refuse(`it is not in chat ${input.imChatId}`);
  if (read.userId === undefined || message.senderId !== read.userId) return refuse('it was not written by the user whose token the event carries');
  if (input.userId !== null && input.userId !== read.userId) return refuse(`the event names user ${input.userId}, the token is user ${read.userId}'s`);
  // An add edited meanwhile sends the edit (its own update job follows); an edit must be the one Bitrix24 holds.
  if (input.action === 'update' && message.text !== input.text) return refuse('its text in Bitrix24 is not the text of the event');
  return { confirmed: true, text: input.action === 'delete' ? input.text : message.text };
}
