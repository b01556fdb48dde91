import type { RobotRun } from '../../activities/activity.js';
import { messageCheck, sendOnce } from '../../activities/sending.js';
import { Bitrix24Error } from '../../bitrix24/errors.js';
import { CallerChecksExhausted, DownloadTooLargeError } from '../../bitrix24/rest-client.js';
import type { SendMessageInput, SentMessage } from '../../chat2desk/client.js';
import { Chat2DeskError } from '../../chat2desk/errors.js';
import type { Portal } from '../../db/portals.js';
import type { OpenLineStore } from '../../db/open-lines.js';
import { refusalInManagerWords } from '../../dialogs/actions.js';
import { type DialogFiles, FileRequestError } from '../../dialogs/files.js';
import { messengerText } from '../../open-channels/bbcode.js';
import type { MessageConfirmations } from '../../open-channels/confirmation.js';
import { BITRIX24_SIGNS, CONNECTOR_ID } from '../../open-channels/connector.js';
import { openChannelExternalId, parseChatId } from '../../open-channels/identity.js';
import { readLineOptions } from '../../open-channels/lines.js';
import { OL_OUTBOUND_KIND, type OlOutboundInput, olOutboundInput } from '../../open-channels/outbound.js';
import { RobotFailure } from '../../run-failure.js';
import type { SecretBox } from '../../secrets.js';
import { EffectInDoubtError } from '../ledger.js';
import type { JobKind, JobOutcome } from '../kinds.js';
import { type RunContextDeps, runFor } from '../run-context.js';

export interface OlOutboundDeps extends RunContextDeps {
  files: DialogFiles;
  /** The Chat2Desk operator of a Bitrix24 user: operatorMap, then e-mail (src/dialogs/dialog-reads.ts). */
  operators: { operatorOf(portal: Portal, userId: number): Promise<number | undefined> };
  lines: Pick<OpenLineStore, 'get'>;
  /** UPLOAD_MAX_BYTES: the largest operator's file fetched and hosted. */
  maxFileBytes: number;
  /** Opens the event's sealed access token. */
  secrets: Pick<SecretBox, 'open'>;
  /** The portal confirms the message before any effect (docs/protocols.md B27). */
  confirmations: Pick<MessageConfirmations, 'confirm'>;
}

/** Said in the chat after an edit or a delete (assumption: Chat2Desk documents neither, chat2desk.md §2; B23). */
export const CANNOT_CHANGE_SENT = 'Chat2Desk cannot change a message already sent: the client still sees the original';

/** The ledger keys of one Bitrix24 message's effects: portal-wide, like the job's dedup key (B23). */
const messageKey = (input: OlOutboundInput, n: number) => `ol_out:${input.imMessageId}:${n}`;
const noticeKey = (input: OlOutboundInput) => `ol_out:${input.imMessageId}:notice:${input.action}`;
/** The text sent for a Bitrix24 message, fixed by its first confirmed add job (an edit's job compares with it). */
const sentTextKey = (input: OlOutboundInput) => `ol_out:${input.imMessageId}:text`;
/** This job's own confirmation: run-scoped, since another job naming the same message must confirm for itself. */
const confirmedKey = (run: RobotRun) => `run:${run.runId}:confirmed`;
/**
 * The external_id Chat2Desk keeps on the message: how a lost answer is settled (src/activities/sending.ts),
 * and how inbound knows the outbox echo is ours and does not post it back into the chat (identity.ts).
 */
const externalId = (input: OlOutboundInput, n: number) => (n === 0 ? openChannelExternalId(input.imMessageId) : `${openChannelExternalId(input.imMessageId)}-${n}`);

/**
 * An Open Channel operator's message to the Chat2Desk client (docs/protocols.md B23): POST /messages
 * on the client's last dialog's channel and messenger, as the user's Chat2Desk operator, the text
 * in the messenger's plain words, each file fetched from Bitrix24 and hosted by us (one message per
 * file, the text with the first), each send once through the ledger; then the delivery status with
 * the Chat2Desk ids as an array. A refusal, and an edit or delete Chat2Desk cannot follow, is told
 * to the operator in the chat.
 */
export function olOutboundKind(deps: OlOutboundDeps): JobKind<OlOutboundInput> {
  return {
    name: OL_OUTBOUND_KIND,
    input: olOutboundInput,
    needsConfirmation: false,
    dedup: 'forever',
    after: 'done',
    async prepare(job, input, log) {
      const run = await runFor(deps, job, log);
      if (input.action !== 'add') {
        return {
          run: async () => {
            const text = await confirmed(deps, run, input);
            const sent = await run.ledger.peek<{ text: string }>(sentTextKey(input));
            if (input.action === 'update' && sent?.state === 'done' && sent.value.text === text) {
              const summary = `Open Channel message ${input.imMessageId} was edited in Bitrix24 before it was sent: the client got the edited text`;
              return { returnValues: { status: 'done' }, logMessage: summary };
            }
            return cannotChange(run, input);
          },
        };
      }
      let clientId: number | undefined;
      return {
        run: async () => {
          // Unconfirmed: failed with the reason, and nothing said in the chat (the chat may not be ours).
          const text = await sentText(run, input, await confirmed(deps, run, input));
          try {
            clientId = await clientOf(run, input.chatId);
            return await deliver(deps, run, { ...input, text }, clientId);
          } catch (error) {
            const words = refusalWords(error);
            if (words === undefined) throw error;
            const options = readLineOptions((await deps.lines.get(run.portal.memberId, input.line))?.options);
            if (options.postDeliveryErrors) await postNotice(run, input, clientId, `The message was not sent to the client. ${words}`);
            throw new RobotFailure(`Open Channel message ${input.imMessageId} not sent: ${words}`);
          }
        },
        settle: () => settleSends(run, input),
        inDoubt: async () => (await run.ledger.held()).length > 0,
      };
    },
    failed: (_job, message) => ({ returnValues: { status: 'failed', error: message }, logMessage: message }),
    classify(error, job) {
      // The confirmation asks with the writer's token, within the callers' share of the portal's budget
      // (src/bitrix24/rest-client.ts callAs): a share used up (e.g. by a flood of forged events) only
      // delays a genuine message, which is asked about again when the share allows.
      if (error instanceof CallerChecksExhausted) {
        const at = deps.clock.now() + error.retryAfterSeconds * 1000;
        return at > job.deadlineAt ? undefined : { action: 'retry', at, message: error.message, expected: true };
      }
      return undefined;
    },
  };
}

/** What the operator is told for an error that sending again will not cure; undefined for one a retry may. */
function refusalWords(error: unknown): string | undefined {
  if (error instanceof EffectInDoubtError) return undefined;
  if (error instanceof Chat2DeskError && !error.transient) return refusalInManagerWords(error, 'the message');
  if (error instanceof DownloadTooLargeError || error instanceof FileRequestError) return `A file could not be sent: ${error.message}`;
  if (error instanceof RobotFailure) return error.message;
  return undefined;
}

async function deliver(deps: OlOutboundDeps, run: RobotRun, input: OlOutboundInput, clientId: number): Promise<JobOutcome> {
  const options = readLineOptions((await deps.lines.get(run.portal.memberId, input.line))?.options);
  const [lastDialog] = await run.directory.dialogsOfClient(clientId);
  const route = lastDialog?.channelId && lastDialog.transport ? { channel_id: lastDialog.channelId, transport: lastDialog.transport } : {};
  const userId = input.userId ?? 0;
  const operatorId = await deps.operators.operatorOf(run.portal, userId);
  const text = await messengerText(input.text, { signature: options.signature, signedByBitrix24: BITRIX24_SIGNS, nameOf: () => userName(run, userId) });
  const plan = input.files.length > 0 ? input.files.map((file, n) => ({ n, file })) : [{ n: 0, file: undefined }];
  if (text === '' && input.files.length === 0) return { returnValues: { status: 'done' }, logMessage: `Open Channel message ${input.imMessageId} has no words to send` };
  // Every file is fetched and hosted before the first send: a file Bitrix24 refuses sends nothing,
  // so the operator's retry (a new message) does not repeat what already went.
  const recorded = new Map<number, SentMessage>();
  const hosted = new Map<number, Awaited<ReturnType<typeof hostFile>>>();
  for (const { n, file } of plan) {
    const record = await run.ledger.peek<SentMessage>(messageKey(input, n));
    if (record?.state === 'done') recorded.set(n, record.value);
    else if (file) hosted.set(n, await hostFile(deps, run, file, n));
  }
  const sent: SentMessage[] = [];
  for (const { n } of plan) {
    const done = recorded.get(n);
    if (done) {
      sent.push(done);
      continue;
    }
    const message: SendMessageInput = {
      client_id: clientId,
      ...(n === 0 && text !== '' ? { text } : {}),
      ...route,
      // Unmapped: sent as the dialog's operator (docs/protocols.md C2); the event log says so.
      ...(operatorId === undefined ? {} : { operator_id: operatorId }),
      external_id: externalId(input, n),
    };
    const file = hosted.get(n);
    if (file) {
      message.attachment = deps.files.link(file);
      message.attachment_filename = file.name;
    }
    sent.push(await sendOnce(run, messageKey(input, n), message, (error) => refusalInManagerWords(error, 'the message')));
  }
  const told = await reportDelivered(run, input, sent);
  const who =
    operatorId === undefined
      ? `as the dialog's operator: Bitrix24 user ${userId} has no Chat2Desk operator (map the user in Operators, or give both the same e-mail)`
      : `as Chat2Desk operator ${operatorId}`;
  return {
    returnValues: { status: 'done', clientId, messageIds: sent.map((item) => item.message_id), operatorId: operatorId ?? null },
    logMessage:
      `Open Channel message ${input.imMessageId} sent to Chat2Desk client ${clientId} ${who}` +
      (told ? '' : `; Bitrix24 was not told it was delivered: line ${input.line} is no longer connected to Chat2Desk`),
  };
}

/**
 * The portal confirms the message before any effect (src/open-channels/confirmation.ts, B27); a
 * message it does not confirm fails with the reason. The confirmation is recorded as this job's own
 * (run-scoped): a later attempt of the same job is not asked again, since the event's token may have
 * expired meanwhile. What other jobs recorded for the message proves nothing about this job's event
 * (a forged one may name a sent message with another chat and files). Returns Bitrix24's text.
 */
async function confirmed(deps: OlOutboundDeps, run: RobotRun, input: OlOutboundInput): Promise<string> {
  const { value } = await run.ledger.once<{ text: string }>({
    key: confirmedKey(run),
    intent: {},
    busy: 'another attempt is confirming the message with Bitrix24',
    inDoubt: 'the message could not be confirmed with Bitrix24',
    unreachable: 'could not confirm the message with Bitrix24',
    // Asking the portal changes nothing: an attempt that crashed while asking is asked again.
    settle: async () => 'absent' as const,
    refused: () => true,
    act: async () => {
      let token: string;
      try {
        token = deps.secrets.open(input.sealedAuth);
      } catch {
        throw new RobotFailure(`Open Channel message ${input.imMessageId} not sent: its event's access token cannot be read (APP_SECRET changed?)`);
      }
      const answer = await deps.confirmations.confirm(run.portal, token, input);
      if (!answer.confirmed) throw new RobotFailure(`Open Channel message ${input.imMessageId} not sent: ${answer.reason}`);
      return { text: answer.text };
    },
  });
  return value.text;
}

/**
 * The text the client gets for the message: the first confirmed add job's (Bitrix24's text then,
 * an edit made before it included), the same for every later attempt or job of the message.
 */
async function sentText(run: RobotRun, input: OlOutboundInput, confirmedText: string): Promise<string> {
  const { value } = await run.ledger.once<{ text: string }>({
    key: sentTextKey(input),
    intent: {},
    busy: 'another job is sending this message',
    inDoubt: 'the text of the message could not be fixed',
    unreachable: 'could not fix the text of the message',
    settle: async () => 'absent' as const,
    refused: () => true,
    act: async () => ({ text: confirmedText }),
  });
  return value.text;
}

/** The Chat2Desk client of a conversation: the client itself, or a request's client (B22 identity). */
async function clientOf(run: RobotRun, chatId: string): Promise<number> {
  const conversation = parseChatId(chatId);
  if (!conversation) throw new RobotFailure(`chat ${chatId} is not a Chat2Desk conversation`);
  if (conversation.kind === 'client') return conversation.clientId;
  const [first] = await run.chat2desk.requestMessages(conversation.requestId);
  if (first?.clientID === undefined) throw new RobotFailure(`Chat2Desk request ${conversation.requestId} has no messages, so its client is unknown`);
  return first.clientID;
}

async function userName(run: RobotRun, userId: number): Promise<string | undefined> {
  const user = await run.users.byId(userId);
  const name = [user?.NAME, user?.LAST_NAME].filter((part) => part?.trim()).join(' ');
  return name === '' ? undefined : name;
}

/** The operator's file, fetched from Bitrix24 with the app's token and hosted at our unguessable link (never Bitrix24's, which needs a login). */
async function hostFile(deps: OlOutboundDeps, run: RobotRun, file: OlOutboundInput['files'][number], n: number) {
  let bytes: Buffer;
  try {
    ({ bytes } = await deps.rest.download(run.portal.memberId, file.download, deps.maxFileBytes));
  } catch (error) {
    // Refused for good (not found, no access): asking again will not change it. Load and 5xx are retried.
    if (error instanceof Bitrix24Error && error.httpStatus >= 400 && error.httpStatus < 500 && !error.refusedForLoad) {
      throw new RobotFailure(`Bitrix24 did not give the file ${file.name} to the app (${error.code || error.httpStatus}: ${error.description})`);
    }
    throw error;
  }
  // One copy and one link however often a retry hosts it (OC2's DialogFiles.host).
  return deps.files.host(run.portal.memberId, `ol-out-${run.runId}-${n}`, { name: file.name, bytes });
}

/**
 * The refusals of a line our connector is no longer on: disconnected, or the portal switched back to
 * Chat2Desk mode (the connector unregistered) while the answer was on its way (the codes as in
 * OpenChannelsConnector's deactivation).
 */
const LINE_GONE = new Set(['NOT_ACTIVE_LINE', 'IMCONNECTOR_NO_CORRECT_PROVIDER']);

/**
 * imconnector.send.status.delivery: message.id ALWAYS an array, or Bitrix24 shows "undelivered" (pages-and-modes §6). Repeating it is harmless.
 * False when the line is gone: the client has the message, so the job is done; there is nobody left to tell.
 */
async function reportDelivered(run: RobotRun, input: OlOutboundInput, sent: SentMessage[]): Promise<boolean> {
  try {
    await reportDelivery(run, input, sent);
    return true;
  } catch (error) {
    if (error instanceof Bitrix24Error && LINE_GONE.has(error.code)) return false;
    throw error;
  }
}

async function reportDelivery(run: RobotRun, input: OlOutboundInput, sent: SentMessage[]): Promise<void> {
  await run.bitrix24.call(
    'imconnector.send.status.delivery',
    {
      CONNECTOR: CONNECTOR_ID,
      LINE: input.line,
      MESSAGES: [
        {
          im: { chat_id: input.imChatId, message_id: input.imMessageId },
          message: { id: sent.map((item) => String(item.message_id)), date: Math.floor(run.clock.now() / 1000) },
          chat: { id: input.chatId },
        },
      ],
    },
    { idempotent: true },
  );
}

/** Edits and deletes: Chat2Desk has no documented way to change a sent message (chat2desk.md §2), so the operator is told. */
async function cannotChange(run: RobotRun, input: OlOutboundInput): Promise<JobOutcome> {
  const conversation = parseChatId(input.chatId);
  const clientId = conversation?.kind === 'client' ? conversation.clientId : await clientOf(run, input.chatId).catch(() => undefined);
  const what = input.action === 'update' ? 'edited' : 'deleted';
  await postNotice(run, input, clientId, `You ${what} a message here. ${CANNOT_CHANGE_SENT}.`);
  const summary = `Open Channel message ${input.imMessageId} ${what} in Bitrix24: ${CANNOT_CHANGE_SENT}; the operator was told in the chat`;
  return { returnValues: { status: 'done' }, logMessage: summary };
}

/**
 * A note to the operator in the Open Channel chat, once: imconnector.send.messages into the
 * conversation, its text marked as from Chat2Desk (B23: im.message.add SYSTEM=Y is the documented
 * system message but needs the app's user in the chat). A note in doubt is posted again rather
 * than lost: twice is the lesser harm.
 */
async function postNotice(run: RobotRun, input: OlOutboundInput, clientId: number | undefined, words: string): Promise<void> {
  const date = Math.floor(run.clock.now() / 1000);
  await run.ledger.once({
    key: noticeKey(input),
    intent: {},
    busy: 'another attempt is posting the note in the Open Channel chat',
    inDoubt: 'the note may already be in the Open Channel chat',
    unreachable: 'could not post the note in the Open Channel chat',
    settle: async () => 'absent' as const,
    refused: () => false,
    act: async () => {
      await run.bitrix24.call('imconnector.send.messages', {
        CONNECTOR: CONNECTOR_ID,
        LINE: input.line,
        MESSAGES: [
          {
            user: { id: clientId === undefined ? input.chatId : `c${clientId}` },
            message: { id: `b24ol-note-${input.imMessageId}-${input.action}`, date, text: `[b]Chat2Desk:[/b] ${words}` },
            chat: { id: input.chatId },
          },
        ],
      });
      return true;
    },
  });
}

/** At give-up: the sends whose answers were lost, found (then the message is delivered) or not. */
async function settleSends(run: RobotRun, input: OlOutboundInput): Promise<JobOutcome | undefined> {
  const count = Math.max(1, input.files.length);
  const sent: SentMessage[] = [];
  for (let n = 0; n < count; n++) {
    try {
      const found = await run.ledger.settle(messageCheck(run, messageKey(input, n)));
      if (!found) return undefined;
      sent.push(found);
    } catch (error) {
      if (error instanceof EffectInDoubtError) return { returnValues: { status: 'failed', error: error.message }, logMessage: error.message };
      throw error;
    }
  }
  await reportDelivered(run, input, sent);
  const summary = `Open Channel message ${input.imMessageId} sent to Chat2Desk (found after the answer was lost)`;
  return { returnValues: { status: 'done', messageIds: sent.map((item) => item.message_id) }, logMessage: summary };
}
