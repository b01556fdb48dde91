import * as v from 'valibot';
import { LIST_PAGE_SIZE, isYes, timelineOwner, type TimelineOwner } from '../bitrix24/values.js';
import { Bitrix24Error, PortalUnavailableError } from '../bitrix24/errors.js';
import type { Chat2DeskFullMessage } from '../chat2desk/client.js';
import { dialogUrl } from '../chat2desk/links.js';
import { parseChat2DeskTime, showChat2DeskTime } from '../chat2desk/times.js';
import type { Claim, EffectCheck, Settled } from '../jobs/ledger.js';
import { loadTemplate } from '../templates.js';
import { RobotFailure, localized, type Activity, type PropertyDefinition, type RobotOutcome, type RobotRun } from './activity.js';
import { DIALOG_TARGET_REQUIRED, dialogTargetEntries, dialogTargetProperties, hasDialogTarget, resolveDialog, type DialogTarget } from './dialog-target.js';
import { operatorName } from './operators.js';

const schema = v.pipe(
  v.object({
    ...dialogTargetEntries,
    transcript: v.optional(v.pipe(v.string('transcript must be Y or N'), v.trim(), v.transform<string, boolean>(isYes)), 'N'),
  }),
  v.check((props) => hasDialogTarget(props), DIALOG_TARGET_REQUIRED),
);

type Properties = v.InferOutput<typeof schema>;

/** A long dialog's transcript is cut here; the comment says how many messages were left out. */
const TRANSCRIPT_LIMIT = 500;
/**
 * How much earlier than our attempt Bitrix24 may stamp a comment (clock skew between us and the
 * portal): settling pages back through the timeline this much further.
 */
const CLOCK_SKEW_MS = 5 * 60_000;

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
    "Writes one comment about the Chat2Desk dialog to this item's timeline: link, channel, operator, times, tags and, if asked, the transcript. Running it again for the same dialog writes nothing new.",
    'Пишет в ленту этого элемента один комментарий о диалоге Chat2Desk: ссылку, канал, оператора, время, теги и, если нужно, переписку. Повторный запуск для того же диалога ничего не добавляет.',
    'Escribe en la cronología de este elemento un comentario sobre el diálogo de Chat2Desk: enlace, canal, operador, horas, etiquetas y, si se pide, la conversación. Repetirlo para el mismo diálogo no añade nada.',
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

async function log(run: RobotRun, props: Properties): Promise<RobotOutcome> {
  const owner = timelineOwner(run.documentId);
  if (!owner) {
    throw new RobotFailure(`the timeline comment can go only to a CRM lead, deal, contact, company or smart-process item; this workflow runs on ${run.documentId.join(' / ')}`);
  }
  const target = await resolveDialog(run, props);
  if (!target) {
    const error = props.dialog_id ? `Chat2Desk dialog ${props.dialog_id} not found` : 'the client has no Chat2Desk dialog';
    return { returnValues: { status: 'not_found', error, comment_id: '', dialog_id: '' }, logMessage: `Chat2Desk dialog not logged to the timeline: ${error}` };
  }
  const dialogId = target.dialog.id;

  // One comment per dialog and document, whichever run writes it (src/jobs/ledger.ts).
  const check = commentCheck(run, owner, dialogId);
  const recorded = await run.ledger.peek<WrittenComment>(check.key);
  if (recorded?.state === 'done') return loggedOutcome(owner, dialogId, recorded.value.commentId, true);

  const comment = renderComment(await commentView(run, target, props.transcript)).trim();
  const { value, earlier } = await run.ledger.once<WrittenComment>({
    ...check,
    intent: {},
    busy: `another run is writing the timeline comment for Chat2Desk dialog ${dialogId} right now`,
    act: async () => ({ commentId: await addComment(run, owner, comment) }),
    refused: (error) =>
      error instanceof RobotFailure || error instanceof PortalUnavailableError || (error instanceof Bitrix24Error && (error.refusedForLoad || error.expiredToken)),
  });
  return loggedOutcome(owner, dialogId, value.commentId, earlier);
}

const commentKey = (owner: TimelineOwner, dialogId: number) => `comment:${dialogId}:${owner.entityType}:${owner.entityId}`;

function commentCheck(run: RobotRun, owner: TimelineOwner, dialogId: number): EffectCheck<WrittenComment> {
  return {
    key: commentKey(owner, dialogId),
    inDoubt: `the timeline comment for Chat2Desk dialog ${dialogId} may already be on the timeline`,
    unreachable: `could not check the timeline for the comment on Chat2Desk dialog ${dialogId}: it may already be there`,
    settle: (claim) => findComment(run, owner, dialogId, claim),
  };
}

function loggedOutcome(owner: TimelineOwner, dialogId: number, commentId: number, earlier: boolean): RobotOutcome {
  const where = `${owner.entityType.replace(/_\d+$/, '')} ${owner.entityId}`;
  return {
    returnValues: { status: 'ok', error: '', comment_id: commentId, dialog_id: dialogId },
    logMessage: earlier
      ? `Chat2Desk dialog ${dialogId} was already logged to the timeline of ${where} as comment ${commentId}; nothing new written`
      : `Chat2Desk dialog ${dialogId} logged to the timeline of ${where} as comment ${commentId}`,
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
    const dialogId = Number(key.match(/^comment:(\d+):/)?.[1]);
    if (!Number.isSafeInteger(dialogId) || key !== commentKey(owner, dialogId)) continue;
    try {
      const written = await run.ledger.settle(commentCheck(run, owner, dialogId));
      if (written) return loggedOutcome(owner, dialogId, written.commentId, true);
    } catch (error) {
      if (error instanceof RobotFailure) return logDialog.failed(error.message);
      throw error;
    }
  }
  return undefined;
}

interface WrittenComment {
  commentId: number;
}

/**
 * crm.timeline.comment.add is not idempotent (docs/protocols.md B10). A refusal other than for load
 * or an expired token will not change by waiting: the run fails with Bitrix24's words.
 */
async function addComment(run: RobotRun, owner: TimelineOwner, comment: string): Promise<number> {
  try {
    const result = await run.bitrix24.call<number | string>(
      'crm.timeline.comment.add',
      { fields: { ENTITY_ID: owner.entityId, ENTITY_TYPE: owner.entityType, COMMENT: comment } },
      { idempotent: false },
    );
    return Number(result);
  } catch (error) {
    if (error instanceof Bitrix24Error && !error.refusedForLoad && !error.expiredToken && error.httpStatus < 500) {
      throw new RobotFailure(`Bitrix24 refused the timeline comment: ${error.code || 'error'}${error.description ? ` (${error.description})` : ''}`);
    }
    throw error;
  }
}

/** The comment's first line names its dialog: how a comment of ours is recognised on the timeline. */
function commentMarker(dialogId: number): string {
  return `[b]Chat2Desk dialog ${dialogId}[/b]`;
}

interface ListedComment {
  ID: string | number;
  COMMENT?: string;
  CREATED?: string;
}

/**
 * Settles a comment write in doubt: pages through the owner's timeline comments, newest first
 * (crm.timeline.comment.list, docs/protocols.md B10), back to the first attempt's time, looking for
 * one whose first line names the dialog.
 */
async function findComment(run: RobotRun, owner: TimelineOwner, dialogId: number, claim: Claim): Promise<Settled<WrittenComment>> {
  const marker = commentMarker(dialogId);
  const since = claim.attemptAt - CLOCK_SKEW_MS;
  for (let start = 0; ; start += LIST_PAGE_SIZE) {
    let page: ListedComment[];
    try {
      page = await run.bitrix24.call<ListedComment[]>(
        'crm.timeline.comment.list',
        { filter: { ENTITY_ID: owner.entityId, ENTITY_TYPE: owner.entityType }, select: ['ID', 'COMMENT', 'CREATED'], order: { ID: 'DESC' }, start },
        { idempotent: true },
      );
    } catch (error) {
      // Refused for good (access, an owner type the list does not know): waiting will not tell either.
      if (error instanceof Bitrix24Error && !error.refusedForLoad && !error.expiredToken && error.httpStatus < 500) return 'unknown';
      throw error;
    }
    const comments = Array.isArray(page) ? page : [];
    for (const item of comments) {
      const text = item.COMMENT ?? '';
      if (text === marker || text.startsWith(`${marker} `) || text.startsWith(`${marker}\n`)) return { found: { commentId: Number(item.ID) } };
    }
    const oldest = comments.at(-1)?.CREATED;
    if (comments.length < LIST_PAGE_SIZE || (oldest !== undefined && Date.parse(oldest) < since)) return 'absent';
  }
}

// ---------------------------------------------------------------------------------------------
// The comment
// ---------------------------------------------------------------------------------------------

interface TranscriptLine {
  time: string;
  direction: string;
  text: string;
  attachments: Array<{ url: string; name: string }>;
}

/** Everything the template shows, as plain text: the template escapes it for BBCode. */
interface CommentView {
  dialogId: number;
  dialogUrl: string;
  state: string;
  open: boolean;
  client: string;
  channel: string;
  transport: string;
  operator: string;
  started: string;
  ended: string;
  duration: string;
  tags: string;
  withTranscript: boolean;
  transcript: TranscriptLine[];
  omitted: number;
}

/**
 * Bitrix24 timeline comments are BBCode. Text from Chat2Desk (messages, names, tags) could carry
 * `[url=…]` or any other tag; its brackets become fullwidth look-alikes, which BBCode ignores.
 */
function escapeBbcode(text: string): string {
  return text.replace(/\[/g, '［').replace(/\]/g, '］');
}

/** Our own link: only http(s), with brackets percent-encoded so the URL cannot close the tag. */
function bbcodeLink(url: string, label: string): string {
  let href: string;
  try {
    const parsed = new URL(url.trim());
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error('not a web link');
    href = parsed.href.replace(/\[/g, '%5B').replace(/\]/g, '%5D');
  } catch {
    return escapeBbcode(label && label !== url ? `${label}: ${url}` : url);
  }
  return `[url=${href}]${escapeBbcode(label || href)}[/url]`;
}

/**
 * Compiled without HTML escaping: Bitrix24 escapes HTML in comments itself, so HTML-escaping here
 * would show `&amp;` and `&lt;` to the reader. The template escapes BBCode with `bb` and `link`.
 */
const renderComment = loadTemplate<CommentView>('timeline-comment', {
  htmlEscape: false,
  helpers: {
    bb: (value: unknown) => escapeBbcode(String(value ?? '')),
    link: (url: unknown, label: unknown) => bbcodeLink(String(url ?? ''), typeof label === 'string' ? label : ''),
  },
});

async function commentView(run: RobotRun, target: DialogTarget, withTranscript: boolean): Promise<CommentView> {
  const { dialog, client } = target;
  const [operators, channels] = await Promise.all([run.directory.operators(), run.directory.channels()]);
  const operator = dialog.operatorId !== null ? operatorName(operators.find((item) => item.id === dialog.operatorId)) || `#${dialog.operatorId}` : '';
  const channel = dialog.channelId !== null ? (channels.find((item) => item.id === dialog.channelId)?.name ?? `#${dialog.channelId}`) : '';
  const open = dialog.state === 'open';
  const begin = parseChat2DeskTime(dialog.beginAt);
  const end = open ? run.clock.now() : parseChat2DeskTime(dialog.endAt);
  const name = client?.assignedName || client?.name || '';
  const phone = client?.clientPhone || client?.phone || '';
  const messages = withTranscript ? await run.chat2desk.dialogMessages(dialog.id) : [];
  const transcript = messages.slice(0, TRANSCRIPT_LIMIT).map(transcriptLine);
  return {
    dialogId: dialog.id,
    dialogUrl: dialogUrl(run.settings.chat2deskApiUrl, dialog.id),
    state: dialog.state,
    open,
    client: name && phone && name !== phone ? `${name} (${phone})` : name || phone,
    channel,
    transport: dialog.transport ?? '',
    operator,
    started: showChat2DeskTime(dialog.beginAt),
    ended: open ? '' : showChat2DeskTime(dialog.endAt),
    duration: begin !== undefined && end !== undefined && end >= begin ? humanDuration(end - begin) : '',
    tags: (client?.tags ?? []).map((item) => item.label).join(', '),
    withTranscript,
    transcript,
    omitted: messages.length - transcript.length,
  };
}

function transcriptLine(message: Chat2DeskFullMessage): TranscriptLine {
  const attachments = new Map<string, string>();
  for (const item of message.attachments ?? []) if (item.link) attachments.set(item.link, item.name || 'attachment');
  // Older messages carry a file in one of these fields instead (docs/protocols.md C8).
  for (const kind of ['photo', 'video', 'audio', 'pdf'] as const) {
    const url = message[kind];
    if (url && !attachments.has(url)) attachments.set(url, kind);
  }
  return {
    time: showChat2DeskTime(message.created, false),
    direction: direction(message.type),
    text: message.text ?? '',
    attachments: [...attachments].map(([url, name]) => ({ url, name })),
  };
}

/** Message types (docs/protocols.md C2): who the line is from. */
function direction(type: string | undefined): string {
  switch (type) {
    case 'from_client':
      return 'Client';
    case 'to_client':
      return 'Operator';
    case 'comment':
      return 'Operator (internal note)';
    case 'autoreply':
      return 'System (auto-reply)';
    default:
      return 'System';
  }
}

function humanDuration(ms: number): string {
  const seconds = Math.round(ms / 1000);
  const [days, hours, minutes, rest] = [Math.floor(seconds / 86_400), Math.floor(seconds / 3600) % 24, Math.floor(seconds / 60) % 60, seconds % 60];
  if (days > 0) return `${days} d ${hours} h`;
  if (hours > 0) return `${hours} h ${minutes} min`;
  if (minutes > 0) return `${minutes} min ${rest} s`;
  return `${rest} s`;
}
