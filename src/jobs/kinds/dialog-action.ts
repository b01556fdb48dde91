import type { RobotRun } from '../../activities/activity.js';
import { clientForPhone, messageCheck, sendOnce, writeFirstRoute } from '../../activities/sending.js';
import type { SentMessage } from '../../chat2desk/client.js';
import { Chat2DeskError } from '../../chat2desk/errors.js';
import { DIALOG_ACTION_KIND, dialogActionInput, refusalInManagerWords, type DialogActionInput } from '../../dialogs/actions.js';
import { FileRequestError, type DialogFiles } from '../../dialogs/files.js';
import type { UploadedFile } from '../../db/uploaded-files.js';
import { RobotFailure } from '../../run-failure.js';
import { EffectInDoubtError } from '../ledger.js';
import type { JobKind, JobOutcome } from '../kinds.js';
import { runFor, type RunContextDeps } from '../run-context.js';

type Request = DialogActionInput['request'];
type MessageRequest = Extract<Request, { action: 'send' | 'write_first' }>;

/** The ledger keys of an action's effects: its own (pruned with its job, src/db/effects.ts). */
const clientKey = (run: RobotRun) => `run:${run.runId}:client`;
const messageKey = (run: RobotRun, n: number) => `run:${run.runId}:message:${n}`;

/**
 * A dialog action from the CRM tab or the Chat workspace (src/dialogs/actions.ts), run as the
 * viewer's Chat2Desk operator. Messages go through the ledger, one per file (Chat2Desk takes one
 * attachment per message, docs/protocols.md C8; the text goes with the first), so a retry after a
 * lost answer settles each instead of sending it again. Tags, close, reopen and assign are safe to
 * repeat. Every change is forgotten by the cache at once, so the page's next read shows it.
 */
export function dialogActionKind(deps: RunContextDeps & { files: DialogFiles }): JobKind<DialogActionInput> {
  return {
    name: DIALOG_ACTION_KIND,
    input: dialogActionInput,
    needsConfirmation: false,
    dedup: 'forever',
    after: 'done',
    async prepare(job, input, log) {
      const run = await runFor(deps, job, log);
      return {
        run: async () => {
          try {
            return await perform(run, deps.files, input);
          } catch (error) {
            if (error instanceof Chat2DeskError && !error.transient) throw new RobotFailure(refusalInManagerWords(error, whatOf(input.request)));
            throw error;
          }
        },
        settle: () => settleMessages(run, input),
        inDoubt: async () => (await run.ledger.held()).length > 0,
      };
    },
    failed: (_job, message) => ({ returnValues: { status: 'failed', error: message }, logMessage: message }),
  };
}

function whatOf(request: Request): string {
  switch (request.action) {
    case 'send':
    case 'write_first':
      return 'the message';
    case 'tag':
    case 'untag':
      return 'the tag';
    case 'close':
    case 'reopen':
      return `to ${request.action} the dialog`;
    case 'assign':
      return 'the transfer';
  }
}

async function perform(run: RobotRun, files: DialogFiles, input: DialogActionInput): Promise<JobOutcome> {
  const { request } = input;
  const done = (values: Record<string, unknown>, summary: string): JobOutcome => ({
    returnValues: { status: 'done', action: request.action, ...values, summary },
    logMessage: summary,
  });
  if (request.action === 'write_first') {
    const client = await clientForPhone(run, clientKey(run), request.phone, () => writeFirstRoute(run.directory, run.settings, request.channelId, request.transport));
    const sent = await sendMessages(run, files, input, request, client.clientId, { channel_id: request.channelId, transport: request.transport });
    const dialogId = sent[0]?.dialog_id ?? null;
    await run.directory.forgetDialog(dialogId, client.clientId);
    return done(
      { dialogId, clientId: client.clientId, messageIds: sent.map((message) => message.message_id), wroteFirst: client.writeFirst },
      `${sent.length === 1 ? 'Message' : `${sent.length} messages`} sent to +${request.phone}${client.writeFirst ? ' (wrote first)' : ''} as Chat2Desk operator ${input.operatorId}`,
    );
  }
  const dialog = await run.directory.dialog(request.dialogId);
  const clientId = dialog.clientId;
  if (clientId === null) throw new RobotFailure(`Chat2Desk dialog ${dialog.id} has no messages yet, so its client is unknown`);
  switch (request.action) {
    case 'send': {
      const route = dialog.channelId !== null && dialog.transport ? { channel_id: dialog.channelId, transport: dialog.transport } : {};
      const sent = await sendMessages(run, files, input, request, clientId, route);
      await run.directory.forgetDialog(dialog.id, clientId);
      return done(
        { dialogId: dialog.id, clientId, messageIds: sent.map((message) => message.message_id) },
        `${sent.length === 1 ? 'Message' : `${sent.length} messages`} sent in dialog ${dialog.id} as Chat2Desk operator ${input.operatorId}`,
      );
    }
    case 'tag':
    case 'untag': {
      const assignee = request.target === 'client' ? { type: 'client' as const, id: clientId } : { type: 'request' as const, id: requestOf(dialog.lastRequestId, dialog.id) };
      await run.directory.tag([request.tagId], assignee, clientId, request.action === 'tag' ? 'add' : 'remove');
      const label = (await run.directory.tags()).find((tag) => tag.id === request.tagId)?.label ?? `#${request.tagId}`;
      return done(
        { dialogId: dialog.id, clientId, tagId: request.tagId, target: request.target },
        `Tag ${label} ${request.action === 'tag' ? 'added to' : 'removed from'} the ${request.target} of dialog ${dialog.id}`,
      );
    }
    case 'close':
    case 'reopen':
      await run.directory.setDialogState(dialog.id, request.action === 'close' ? 'closed' : 'open', clientId);
      return done({ dialogId: dialog.id, clientId }, `Dialog ${dialog.id} ${request.action === 'close' ? 'closed' : 'reopened'}`);
    case 'assign':
      await run.directory.assignOperator(dialog.id, request.operatorId, false);
      return done({ dialogId: dialog.id, clientId, operatorId: request.operatorId }, `Dialog ${dialog.id} transferred to Chat2Desk operator ${request.operatorId}`);
  }
}

function requestOf(requestId: number | null, dialogId: number): number {
  if (requestId === null) throw new RobotFailure(`Chat2Desk dialog ${dialogId} has no request to tag`);
  return requestId;
}

/**
 * The text and the files as messages, in order: one per file (the text with the first), or the
 * text alone; each its own effect in the ledger, sent as the viewer's operator.
 */
async function sendMessages(
  run: RobotRun,
  files: DialogFiles,
  input: DialogActionInput,
  request: MessageRequest,
  clientId: number,
  route: { channel_id?: number; transport?: string },
): Promise<SentMessage[]> {
  const attachments = await attachmentsOf(files, run, input, request);
  const plan = attachments.length > 0 ? attachments.map((file, n) => ({ n, file })) : [{ n: 0, file: undefined }];
  const sent: SentMessage[] = [];
  for (const { n, file } of plan) {
    sent.push(
      await sendOnce(
        run,
        messageKey(run, n),
        {
          client_id: clientId,
          ...(n === 0 && request.text ? { text: request.text } : {}),
          ...(file ? { attachment: files.link(file), attachment_filename: file.name } : {}),
          ...route,
          operator_id: input.operatorId,
          external_id: `b24-${run.runId}-${n}`,
        },
        (error) => refusalInManagerWords(error, 'the message'),
      ),
    );
  }
  return sent;
}

async function attachmentsOf(files: DialogFiles, run: RobotRun, input: DialogActionInput, request: MessageRequest): Promise<UploadedFile[]> {
  if (!request.fileIds?.length) return [];
  try {
    return await files.ownFiles({ portal: run.portal, userId: input.userId }, request.fileIds);
  } catch (error) {
    if (error instanceof FileRequestError) throw new RobotFailure(`a file's link expired before it was sent: upload it again (${error.message})`);
    throw error;
  }
}

/**
 * At give-up: messages whose answer was lost may have gone out. All of them found: the action is
 * done; one that cannot be told fails the action saying it may already have been sent.
 */
async function settleMessages(run: RobotRun, input: DialogActionInput): Promise<JobOutcome | undefined> {
  const { request } = input;
  if (request.action !== 'send' && request.action !== 'write_first') return undefined;
  const count = Math.max(1, request.fileIds?.length ?? 0);
  const sent: SentMessage[] = [];
  for (let n = 0; n < count; n++) {
    try {
      const found = await run.ledger.settle(messageCheck(run, messageKey(run, n)));
      if (!found) return undefined;
      sent.push(found);
    } catch (error) {
      if (error instanceof EffectInDoubtError) return { returnValues: { status: 'failed', error: error.message }, logMessage: error.message };
      throw error;
    }
  }
  const summary = `${count === 1 ? 'Message' : `${count} messages`} sent as Chat2Desk operator ${input.operatorId} (found after the answer was lost)`;
  return {
    returnValues: {
      status: 'done',
      action: request.action,
      dialogId: sent[0]?.dialog_id ?? null,
      clientId: sent[0]?.client_id ?? null,
      messageIds: sent.map((message) => message.message_id),
      summary,
    },
    logMessage: summary,
  };
}
