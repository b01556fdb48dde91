import * as v from 'valibot';
import { isYes, timelineOwner, type TimelineOwner } from '../bitrix24/values.js';
import { parseChat2DeskTime } from '../chat2desk/times.js';
import { loadEpisode } from '../episodes/episode.js';
import { pinEpisode } from '../episodes/handle.js';
import { commentCheck, commentKey, findOnTimeline } from '../episodes/pin.js';
import { RobotFailure, localized, type Activity, type PropertyDefinition, type RobotOutcome, type RobotRun } from './activity.js';
import { DIALOG_TARGET_REQUIRED, dialogTargetEntries, dialogTargetProperties, hasDialogTarget, resolveDialog, type DialogTarget } from './dialog-target.js';

const schema = v.pipe(
  v.object({
    ...dialogTargetEntries,
    transcript: v.optional(v.pipe(v.string('transcript must be Y or N'), v.trim(), v.transform<string, boolean>(isYes)), 'N'),
  }),
  v.check((props) => hasDialogTarget(props), DIALOG_TARGET_REQUIRED),
);

type Properties = v.InferOutput<typeof schema>;

const returnProperties: Record<string, PropertyDefinition> = {
  status: { name: localized('Status (ok, not_found or failed)', 'Статус (ok, not_found или failed)', 'Estado (ok, not_found o failed)'), type: 'string' },
  error: { name: localized('Error', 'Ошибка', 'Error'), type: 'string' },
  comment_id: { name: localized('Timeline comment ID', 'ID комментария в ленте', 'ID del comentario en la cronología'), type: 'int' },
  dialog_id: { name: localized('Dialog ID', 'ID диалога', 'ID del diálogo'), type: 'int' },
};

export const logDialog: Activity<typeof schema> = {
  code: 'c2d_log_dialog',
  name: localized('Log closed dialog to timeline', 'Записать закрытый диалог в ленту', 'Registrar el diálogo cerrado en la cronología'),
  description: localized(
    "Writes one comment about the dialog's last closed Chat2Desk request to this item's timeline: link, channel, operator, times, tags and, if asked, the transcript. Running it again for the same request writes nothing new.",
    'Пишет в ленту этого элемента один комментарий о последнем закрытом обращении диалога Chat2Desk: ссылку, канал, оператора, время, теги и, если нужно, переписку. Повторный запуск для того же обращения ничего не добавляет.',
    'Escribe en la cronología de este elemento un comentario sobre la última solicitud cerrada del diálogo de Chat2Desk: enlace, canal, operador, horas, etiquetas y, si se pide, la conversación. Repetirlo para la misma solicitud no añade nada.',
  ),
  properties: () => ({
    ...dialogTargetProperties,
    transcript: {
      name: localized('Include the transcript', 'Включить переписку', 'Incluir la conversación'),
      type: 'bool',
      default: 'N',
    },
  }),
  returnProperties,
  schema,
  run: (run, properties) => log(run, properties),
  settle,
  failed: (error) => ({
    returnValues: { status: 'failed', error, comment_id: '', dialog_id: '' },
    logMessage: `Chat2Desk dialog not logged to the timeline: ${error}`,
  }),
};

/**
 * The robot logs an episode, as the automatic handling does (src/episodes/): the dialog's last
 * closed request, one comment per (request, record) under the same ledger key, so the robot and the
 * automatic handling never both comment the same episode on the same record, and a dialog that
 * reopened and closed again gets a second comment. An open dialog logs its last closed request.
 */
async function log(run: RobotRun, props: Properties): Promise<RobotOutcome> {
  const owner = timelineOwner(run.documentId);
  if (!owner) {
    throw new RobotFailure(`the timeline comment can go only to a CRM lead, deal, contact, company or smart-process item; this workflow runs on ${run.documentId.join(' / ')}`);
  }
  const target = await resolveDialog(run, props);
  if (!target) {
    const error = props.dialog_id ? `Chat2Desk dialog ${props.dialog_id} not found` : 'the client has no Chat2Desk dialog';
    return notLogged(error);
  }
  const dialogId = target.dialog.id;
  const closed = await lastClosedRequest(run, target);
  if (!closed) return notLogged(`Chat2Desk dialog ${dialogId}: the dialog is still open and has no closed request yet`, dialogId);
  const clientId = target.client?.id ?? target.dialog.clientId;
  const legacy = await commentBeforeEpisodes(run, owner, dialogId, closed.requestId);
  if (legacy !== undefined) return loggedOutcome(owner, dialogId, closed.requestId, legacy, true);
  const episode = await loadEpisode(run, { requestId: closed.requestId, dialogId, clientId, closedAt: closed.closedAt });
  const { commentId, earlier } = await pinEpisode(run, episode, owner, props.transcript);
  return loggedOutcome(owner, dialogId, closed.requestId, commentId, earlier);
}

/**
 * Upgrades: before episodes, the robot wrote one comment per (dialog, document) under
 * `comment:<dialog>:<type>:<id>` (migration 0007). Such a comment stands for the first episode the
 * robot logs on that document after the upgrade (recorded under `…:episode`, so it is decided once);
 * later episodes get comments of their own. A write of that era still in doubt is settled by its first
 * line, `[b]Chat2Desk dialog <id>[/b]`.
 */
async function commentBeforeEpisodes(run: RobotRun, owner: TimelineOwner, dialogId: number, requestId: number): Promise<number | undefined> {
  const key = `comment:${dialogId}:${owner.entityType}:${owner.entityId}`;
  const recorded = await run.ledger.peek<{ commentId: number }>(key);
  if (!recorded) return undefined;
  const marker = `[b]Chat2Desk dialog ${dialogId}[/b]`;
  const comment =
    recorded.state === 'done'
      ? recorded.value
      : await run.ledger.settle<{ commentId: number }>({
          key,
          inDoubt: `the timeline comment for Chat2Desk dialog ${dialogId} may already be on the timeline`,
          unreachable: `could not check the timeline for the comment on Chat2Desk dialog ${dialogId}: it may already be there`,
          settle: async (claim) => {
            const found = await findOnTimeline(run, owner, claim.attemptAt, (text) => text === marker || text.startsWith(`${marker} `) || text.startsWith(`${marker}\n`));
            return typeof found === 'number' ? { found: { commentId: found } } : found;
          },
        });
  if (!comment) return undefined;
  const { value } = await run.ledger.once<{ requestId: number }>({
    key: `${key}:episode`,
    intent: {},
    busy: `another run is logging Chat2Desk dialog ${dialogId} right now`,
    inDoubt: `the earlier comment on Chat2Desk dialog ${dialogId} could not be matched to its request`,
    unreachable: `the earlier comment on Chat2Desk dialog ${dialogId} could not be matched to its request`,
    // Recording which episode the old comment stands for touches nothing outside our ledger.
    act: async () => ({ requestId }),
    settle: async () => 'absent',
    refused: () => true,
  });
  return value.requestId === requestId ? comment.commentId : undefined;
}

function notLogged(error: string, dialogId?: number): RobotOutcome {
  return { returnValues: { status: 'not_found', error, comment_id: '', dialog_id: dialogId ?? '' }, logMessage: `Chat2Desk dialog not logged to the timeline: ${error}` };
}

/**
 * The dialog's last closed request and when it closed. A closed dialog's is its `last_request_id`,
 * closed at the dialog's `end`; an open dialog's last request is still running, so the one before
 * it is found among the dialog's messages (each names its request, docs/protocols.md C2) and taken
 * as closed at its last message.
 */
async function lastClosedRequest(run: RobotRun, target: DialogTarget): Promise<{ requestId: number; closedAt: number } | undefined> {
  const { dialog } = target;
  const endedAt = parseChat2DeskTime(dialog.endAt);
  if (dialog.state !== 'open' && dialog.lastRequestId !== null) return { requestId: dialog.lastRequestId, closedAt: endedAt ?? run.clock.now() };
  const messages = await run.chat2desk.dialogMessages(dialog.id);
  const earlier = messages.filter((message) => typeof message.request_id === 'number' && message.request_id !== dialog.lastRequestId);
  const last = earlier.reduce<(typeof earlier)[number] | undefined>((best, message) => (!best || (message.request_id ?? 0) > (best.request_id ?? 0) ? message : best), undefined);
  if (!last?.request_id) return undefined;
  const ofRequest = earlier.filter((message) => message.request_id === last.request_id);
  const closedAt = Math.max(...ofRequest.map((message) => parseChat2DeskTime(message.created) ?? 0));
  return { requestId: last.request_id, closedAt: closedAt > 0 ? closedAt : run.clock.now() };
}

function loggedOutcome(owner: TimelineOwner, dialogId: number | null, requestId: number, commentId: number, earlier: boolean): RobotOutcome {
  const where = `${owner.entityType.replace(/_\d+$/, '')} ${owner.entityId}`;
  return {
    returnValues: { status: 'ok', error: '', comment_id: commentId, dialog_id: dialogId ?? '' },
    logMessage: earlier
      ? `Chat2Desk dialog ${dialogId} (request ${requestId}) was already logged to the timeline of ${where} as comment ${commentId}; nothing new written`
      : `Chat2Desk dialog ${dialogId} (request ${requestId}) logged to the timeline of ${where} as comment ${commentId}`,
  };
}

/**
 * At give-up: a comment write whose answer was lost may be on the timeline; if so, the run
 * succeeded. When that cannot be told, the run fails saying the comment may already be there.
 */
async function settle(run: RobotRun): Promise<RobotOutcome | undefined> {
  const owner = timelineOwner(run.documentId);
  if (!owner) return undefined;
  for (const key of await run.ledger.held()) {
    const requestId = Number(key.match(/^comment:episode:(\d+):/)?.[1]);
    if (!Number.isSafeInteger(requestId) || key !== commentKey(requestId, owner)) continue;
    try {
      const written = await run.ledger.settle(commentCheck(run, requestId, owner));
      if (written) return loggedOutcome(owner, written.dialogId, requestId, written.commentId, true);
    } catch (error) {
      if (error instanceof RobotFailure) return logDialog.failed(error.message);
      throw error;
    }
  }
  return undefined;
}
