import { Bitrix24Error, certainlyNotRun } from '../../bitrix24/errors.js';
import type { DialogFiles } from '../../dialogs/files.js';
import { type OlInboundInput, OL_INBOUND_DEADLINE_MS, OL_INBOUND_KIND, inboundDedupKey, olInboundInput } from '../../open-channels/inbound.js';
import type { InboundSends } from '../../open-channels/inbound-sends.js';
import { literalInBbcode } from '../../open-channels/bbcode.js';
import { openChannelEcho } from '../../open-channels/echoes.js';
import { clientChatId, clientUserId, requestChatId } from '../../open-channels/identity.js';
import type { OpenChannelChatStore } from '../../db/open-channel-chats.js';
import type { OpenLines } from '../../open-channels/lines.js';
import { cleanClientName } from '../../open-channels/names.js';
import { routeConversation } from '../../open-channels/routing.js';
import type { OutsideFile } from '../../outside-fetch.js';
import type { PortalLanguage } from '../../triggers/triggers.js';
import type { RobotRun } from '../../activities/activity.js';
import { JobFailure, retryWithBackoff } from '../failures.js';
import type { JobKind, JobOutcome } from '../kinds.js';
import { runFor, type RunContextDeps } from '../run-context.js';

export { OL_INBOUND_KIND };

/**
 * The message waits: no connected line takes its conversation, its line wants a Chat2Desk operator
 * first or the client to be tagged, or Bitrix24 says the line is inactive. The events that can
 * release it (a tag added, an operator joining, a line connected) make it due at once
 * (src/open-channels/inbound.ts wakes, src/db/jobs.ts wakeHeldJobs); otherwise it is looked at again
 * every hold-recheck interval (not backed off), until its deadline.
 */
export class InboundHeld extends Error {
  override name = 'InboundHeld';
}

/** Bitrix24 refused this message in its own entry of the answer (SUCCESS false, ERRORS): nothing was added. */
class MessageRefused extends JobFailure {}

/** A Chat2Desk attachment link did not give the file (yet): tried again with backoff. */
class AttachmentUnavailable extends Error {
  override name = 'AttachmentUnavailable';
}

export interface OlInboundDeps extends RunContextDeps {
  lines: OpenLines;
  files: DialogFiles;
  /** How Chat2Desk attachment links are fetched: guarded against our own network, capped at UPLOAD_MAX_BYTES (src/outside-fetch.ts). */
  fetchAttachment: (link: string) => Promise<OutsideFile>;
  holdRecheckMs: number;
  /** The shared `imconnector.send.messages` calls of each portal and line. */
  sends: InboundSends;
  /** ol_inbound runs at once per portal, apart from every other kind: as many conversations can be in flight. */
  concurrency: number;
  /** Each client's latest Open Channel chat, for the Chat workspace's "Open chat". */
  chats: Pick<OpenChannelChatStore, 'remember'>;
  /** The client's remembered chat changed: open pages read the client's dialog again (src/live/hub.ts). */
  chatChanged: (memberId: string, clientId: number) => void;
}

/** What the ledger records for a message Bitrix24 took. */
interface Delivered {
  line: number;
  chatId: string;
  /** Bitrix24's chat of the conversation (session.CHAT_ID), when the answer said. */
  imChatId: string | null;
}

/** Line errors that a change in Bitrix24 (the line deleted or switched off, the connector gone) explains: held and re-routed, never dropped. */
const LINE_GONE = new Set(['NOT_ACTIVE_LINE', 'IMCONNECTOR_NO_CORRECT_PROVIDER', 'IMCONNECTOR_NOT_SPECIFIED_CORRECT_CONNECTOR', 'IMCONNECTOR_COULD_NOT_GET_PROVIDER_OBJECT']);

/** How a message waiting for its client to be tagged is told apart (its hold text, and at the deadline). */
const AWAITING_TAG = 'Held until the client is tagged';

const IN_DOUBT =
  'Bitrix24 did not answer whether it took the message, and nothing tells whether it did: it may already have been sent to the Open Channel, so it is not sent again';

const MARKS: Record<PortalLanguage, { operator: (name: string) => string; autoreply: string; chat2desk: string }> = {
  en: { operator: (name) => `Chat2Desk operator ${name}:`, autoreply: 'Chat2Desk autoreply:', chat2desk: 'Sent from Chat2Desk:' },
  ru: { operator: (name) => `Оператор Chat2Desk ${name}:`, autoreply: 'Автоответ Chat2Desk:', chat2desk: 'Отправлено из Chat2Desk:' },
  es: { operator: (name) => `Operador de Chat2Desk ${name}:`, autoreply: 'Respuesta automática de Chat2Desk:', chat2desk: 'Enviado desde Chat2Desk:' },
};

/**
 * A Chat2Desk message → `imconnector.send.messages` on the conversation's line (docs/protocols.md B22),
 * once: under the ledger key `ol_in:<account>:<message id>`; an answer lost is not settled by looking
 * (Bitrix24 offers no read-back by external id), so the message is never sent twice and the entry
 * says it may have been sent.
 */
export function olInboundKind(deps: OlInboundDeps): JobKind<OlInboundInput> {
  return {
    name: OL_INBOUND_KIND,
    input: olInboundInput,
    needsConfirmation: false,
    dedup: 'forever',
    after: 'done',
    // Slots of its own: the messages of concurrently running jobs share send.messages calls, and robot runs must not wait behind a burst.
    portalConcurrency: deps.concurrency,
    async prepare(job, input, log) {
      const run = await runFor(deps, job, log);
      const key = inboundDedupKey(input.account, input.messageId);
      const check = {
        key,
        settle: async () => 'unknown' as const,
        inDoubt: IN_DOUBT,
        unreachable: IN_DOUBT,
      };
      return {
        run: () => deliver(deps, run, job.publicId, key, check, input),
        settle: async () => {
          const found = await run.ledger.settle<Delivered>(check);
          return found ? sent(deps, run, input, found) : undefined;
        },
        inDoubt: async () => (await run.ledger.held()).length > 0,
      };
    },
    failed: (_job, message) => {
      // A message that waited for its client to be tagged until the deadline was kept out by the line's filter: not sent, not an error.
      if (message.includes(AWAITING_TAG)) {
        const reason = `the client got none of the line's tags within ${OL_INBOUND_DEADLINE_MS / (24 * 3600_000)} days, so the message stays in Chat2Desk only`;
        return { returnValues: { status: 'skipped', reason }, logMessage: `not sent to Open Channels: ${reason}` };
      }
      return { returnValues: { status: 'failed', error: message }, logMessage: message };
    },
    classify(error, job) {
      if (error instanceof InboundHeld) return { action: 'retry', at: deps.clock.now() + deps.holdRecheckMs, message: error.message, expected: true };
      if (error instanceof AttachmentUnavailable) return retryWithBackoff(job, deps.clock.now(), error.message);
      return undefined;
    },
  };
}

async function deliver(
  deps: OlInboundDeps,
  run: RobotRun,
  jobId: string,
  key: string,
  check: { key: string; settle: () => Promise<'unknown'>; inDoubt: string; unreachable: string },
  input: OlInboundInput,
): Promise<JobOutcome> {
  const earlier = await run.ledger.peek<Delivered>(key);
  if (earlier?.state === 'done') return sent(deps, run, input, earlier.value);
  const memberId = run.portal.memberId;
  const echo = await openChannelEcho(deps.effects, memberId, input, deps.clock.now());
  if (echo === 'echo')
    return { returnValues: { status: 'skipped', reason: 'an Open Channel message sent to Chat2Desk' }, logMessage: 'not sent back: written in the Open Channel' };
  if (echo === 'wait') throw new InboundHeld('Held: an Open Channel message to this client is being sent to Chat2Desk; this one may be its echo');
  const route = await routeConversation(await deps.lines.lines(memberId), {
    channelId: input.channelId,
    clientTagIds: async () => (await run.directory.client(input.clientId)).tags.map((tag) => tag.id),
  });
  if (route.kind === 'none') throw new InboundHeld(`Held: ${route.reason}. Connect a line in Contact Center (Open Channels → Chat2Desk)`);
  if (route.kind === 'filtered') {
    const filter = route.line.options.tagFilter;
    // "Send previous messages after tagging" (only for `only`: in `except` a tag keeps the client out,
    // it never lets one in): the message waits for the client to get one of the line's tags, and the
    // conversation's later messages wait behind it (its ordering key); add_tag_to_client wakes it.
    if (filter.mode === 'only' && filter.sendPreviousAfterTagging) {
      throw new InboundHeld(
        `${AWAITING_TAG}: line ${route.line.lineId} takes only clients with tags ${filter.tagIds.join(', ')} and sends their earlier messages once they have one. Tag the client in Chat2Desk: this message and the later ones of the conversation then go in order`,
      );
    }
    return { returnValues: { status: 'skipped', reason: route.reason }, logMessage: `not sent to Open Channels: ${route.reason}` };
  }
  const { lineId, options } = route.line;
  if (options.holdUntilOperator && input.author === 'client' && !(await hasOperator(run, input))) {
    throw new InboundHeld(`Held until a Chat2Desk operator joins dialog ${input.dialogId ?? '(none yet)'}: line ${lineId} waits for an operator`);
  }
  const chatId = options.chatPer === 'request' && input.requestId !== null ? requestChatId(input.requestId) : clientChatId(input.clientId);
  const files = await rehost(deps, run, jobId, input);
  const text = await markedText(run, input, files.skipped);
  const name = cleanClientName(input.client.assignedName ?? input.client.name);
  const phone = input.client.phone ? `+${input.client.phone}` : undefined;
  const picture = await clientPicture(run, input.clientId);
  const message = {
    user: {
      id: clientUserId(input.clientId),
      name: name.name,
      last_name: name.lastName,
      ...(phone ? { phone, skip_phone_validate: 'Y' } : {}),
      ...(picture ? { picture: { url: picture } } : {}),
    },
    message: {
      id: String(input.messageId),
      date: Math.floor(Date.parse(input.sentAt) / 1000),
      ...(text ? { text } : {}),
      ...(files.hosted.length > 0 ? { files: files.hosted } : {}),
    },
    chat: { id: chatId, name: chatName(input, name, phone) },
  };
  const { value } = await run.ledger.once<Delivered>({
    ...check,
    intent: { line: lineId, chatId },
    busy: 'another attempt is sending this message to the Open Channel',
    // Nothing reached the portal (an outage, a refused refresh) or Bitrix24 refused: the claim is given back and retried.
    refused: (error) => error instanceof MessageRefused || error instanceof InboundHeld || certainlyNotRun(error),
    // The message may wait for a call it shares with others: until that call goes, a crash leaves a claim known unsent.
    deferred: true,
    act: async (claim) => {
      let entry: Record<string | number, unknown>;
      try {
        // Shared with the other messages of this portal and line sent meanwhile (src/open-channels/inbound-sends.ts).
        entry = await deps.sends.send(memberId, lineId, message, claim.dispatching);
      } catch (error) {
        if (error instanceof Bitrix24Error && LINE_GONE.has(error.code)) {
          throw new InboundHeld(
            `Held: Bitrix24 refused line ${lineId} (${error.code}: ${error.description || 'inactive or deleted'}); the message goes to the line that takes the conversation once one is active. Connect a line in Contact Center (Open Channels → Chat2Desk)`,
          );
        }
        throw error;
      }
      if (entry.SUCCESS === false) {
        const errors = Array.isArray(entry.ERRORS) ? entry.ERRORS.map((item) => `${record(item).code ?? ''} ${record(item).message ?? ''}`.trim()).join('; ') : 'no reason given';
        throw new MessageRefused(`Bitrix24 refused the message for Open Channel line ${lineId}: ${errors}`);
      }
      const session = record(entry.session);
      return { line: lineId, chatId, imChatId: typeof session.CHAT_ID === 'string' || typeof session.CHAT_ID === 'number' ? String(session.CHAT_ID) : null };
    },
  });
  return sent(deps, run, input, value);
}

/**
 * A message Bitrix24 took: the chat it named becomes the client's latest Open Channel chat (again,
 * harmlessly, when a retry or a takeover finds the message already sent), then the job's outcome.
 * The chat is a convenience for the Chat workspace: a failure to remember it is logged and the
 * message stays sent (a retry would only find it sent again; at give-up it would read as failed).
 */
async function sent(deps: OlInboundDeps, run: RobotRun, input: OlInboundInput, delivered: Delivered): Promise<JobOutcome> {
  const imChatId = delivered.imChatId !== null && /^\d{1,15}$/.test(delivered.imChatId) ? Number(delivered.imChatId) : undefined;
  // input.sentAt is always an ISO time (src/open-channels/inbound.ts); unreadable, it never replaces a known chat.
  const sentAt = Date.parse(input.sentAt);
  if (imChatId !== undefined && imChatId > 0) {
    const memberId = run.portal.memberId;
    try {
      const changed = await deps.chats.remember(memberId, input.clientId, {
        lineId: delivered.line,
        chatId: delivered.chatId,
        imChatId,
        sentAt: Number.isFinite(sentAt) ? sentAt : 0,
      });
      if (changed) deps.chatChanged(memberId, input.clientId);
    } catch (error) {
      run.log.warn({ err: error instanceof Error ? error.message : String(error), clientId: input.clientId }, "could not remember the client's Open Channel chat");
    }
  }
  return sentOutcome(input, delivered);
}

function sentOutcome(input: OlInboundInput, delivered: Delivered): JobOutcome {
  return {
    returnValues: { status: 'sent', line: delivered.line, chatId: delivered.chatId, imChatId: delivered.imChatId, messageId: input.messageId, dialogId: input.dialogId },
    logMessage: `Chat2Desk message ${input.messageId} sent to Open Channel line ${delivered.line} (chat ${delivered.chatId})`,
    ...(input.client.phone ? { phone: input.client.phone } : {}),
  };
}

/** An operator joined when the message says so, or the dialog has one now (the cache is made stale by dialog_transferred and by every message). */
async function hasOperator(run: RobotRun, input: OlInboundInput): Promise<boolean> {
  if (input.operatorId !== null) return true;
  if (input.dialogId === null) return false;
  return (await run.directory.dialog(input.dialogId)).operatorId !== null;
}

/**
 * The client's Chat2Desk avatar as the connector user's picture, when it is an http(s) link: Bitrix24
 * fetches it itself (docs/protocols.md B24), so it is passed as it is, not re-hosted. A picture is
 * not worth holding a message for: when Chat2Desk cannot be asked, the message goes without one.
 */
async function clientPicture(run: RobotRun, clientId: number): Promise<string | undefined> {
  let avatar: string | null | undefined;
  try {
    avatar = (await run.directory.client(clientId)).avatar;
  } catch {
    return undefined;
  }
  return typeof avatar === 'string' && avatar.length <= 2000 && /^https?:\/\//i.test(avatar) && URL.canParse(avatar) ? avatar : undefined;
}

/**
 * Every attachment is fetched from Chat2Desk and hosted by us at an unguessable expiring link that
 * Bitrix24 downloads (docs/protocols.md B22): a Chat2Desk link may need its session or expire. One
 * copy per job and attachment (the id), however often the job retries.
 */
async function rehost(deps: OlInboundDeps, run: RobotRun, jobId: string, input: OlInboundInput): Promise<{ hosted: Array<{ url: string; name: string }>; skipped: string[] }> {
  const hosted: Array<{ url: string; name: string }> = [];
  const skipped: string[] = [];
  for (const [index, attachment] of input.attachments.entries()) {
    let fetched: OutsideFile;
    try {
      fetched = await deps.fetchAttachment(attachment.link);
    } catch (error) {
      throw new AttachmentUnavailable(`could not fetch the attachment ${attachment.name} from Chat2Desk: ${error instanceof Error ? error.message : String(error)}`);
    }
    // Gone, too large, or at an address we do not fetch (src/outside-fetch.ts): named in the text instead.
    if (fetched.kind !== 'file' || fetched.bytes.length === 0) {
      skipped.push(attachment.name);
      continue;
    }
    const { bytes } = fetched;
    const file = await deps.files.host(run.portal.memberId, `ol-in-${jobId}-${index}`, { name: attachment.name, bytes });
    hosted.push({ url: deps.files.link(file), name: file.name });
  }
  return { hosted, skipped };
}

/** Messages from the Chat2Desk side are marked in the portal's language (docs/protocols.md B22: send.messages has no "outgoing" flag). */
async function markedText(run: RobotRun, input: OlInboundInput, skipped: string[]): Promise<string> {
  const parts: string[] = [];
  if (input.author !== 'client') {
    const marks = MARKS[await run.language()];
    let label = input.author === 'autoreply' ? marks.autoreply : marks.chat2desk;
    if (input.author === 'operator') {
      const operator = (await run.directory.operators()).find((item) => item.id === input.operatorId);
      const name = [operator?.first_name, operator?.last_name].filter(Boolean).join(' ').trim() || operator?.email || `#${input.operatorId}`;
      label = marks.operator(name);
    }
    parts.push(`[b]${literalInBbcode(label)}[/b]`);
  }
  if (input.text) parts.push(literalInBbcode(input.text));
  for (const name of skipped) parts.push(literalInBbcode(`(${name}: the file could not be forwarded; it is in Chat2Desk)`));
  return parts.join('[br]');
}

function chatName(input: OlInboundInput, name: { name: string; lastName: string }, phone: string | undefined): string {
  const who = [name.name, name.lastName].filter(Boolean).join(' ') || phone || `Chat2Desk client ${input.clientId}`;
  return input.transport ? `${who} (${input.transport})` : who;
}

const record = (value: unknown): Record<string | number, unknown> => (value && typeof value === 'object' ? (value as Record<string, unknown>) : {});
