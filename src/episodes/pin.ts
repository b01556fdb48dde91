import type { RobotRun } from '../activities/activity.js';
import { RobotFailure } from '../run-failure.js';
import { LIST_PAGE_SIZE } from '../bitrix24/values.js';
import { Bitrix24Error, certainlyNotRun } from '../bitrix24/errors.js';
import type { EffectCheck } from '../jobs/ledger.js';
import { isCommentOf } from './comment.js';

/**
 * How much earlier than our attempt Bitrix24 may stamp a comment (clock skew between us and the
 * portal): settling pages back through the timeline this much further.
 */
const CLOCK_SKEW_MS = 5 * 60_000;

/** Where a comment goes: a CRM record's timeline (`dynamic_<type>` for a smart-process item). */
export interface TimelineTarget {
  entityType: string;
  entityId: number;
}

export interface PinnedComment {
  commentId: number;
  /** The episode's dialog, so a run that only settles the comment can name it. */
  dialogId: number | null;
}

/**
 * One comment per (episode, record), whoever writes it: the automatic handling and the "Log closed
 * dialog" robot share this key (docs: contracts, src/jobs/ledger.ts).
 */
export const commentKey = (requestId: number, record: TimelineTarget) => `comment:episode:${requestId}:${record.entityType}:${record.entityId}`;

export function commentCheck(run: RobotRun, requestId: number, record: TimelineTarget): EffectCheck<PinnedComment> {
  return {
    key: commentKey(requestId, record),
    inDoubt: `the timeline comment for Chat2Desk request ${requestId} may already be on the ${record.entityType} ${record.entityId}`,
    unreachable: `could not check the timeline of ${record.entityType} ${record.entityId} for the comment on Chat2Desk request ${requestId}: it may already be there`,
    settle: async (claim) => {
      const dialogId = typeof claim.intent.dialogId === 'number' ? claim.intent.dialogId : null;
      const found = await findOnTimeline(run, record, claim.attemptAt, (comment) => isCommentOf(comment, requestId));
      return typeof found === 'number' ? { found: { commentId: found, dialogId } } : found;
    },
  };
}

/** Pins the rendered comment once; a second call for the same episode and record returns the first. */
export async function pinComment(
  run: RobotRun,
  episode: { requestId: number; dialogId: number | null },
  record: TimelineTarget,
  render: () => Promise<string>,
): Promise<{ value: PinnedComment; earlier: boolean }> {
  const { requestId, dialogId } = episode;
  const check = commentCheck(run, requestId, record);
  const recorded = await run.ledger.peek<PinnedComment>(check.key);
  if (recorded?.state === 'done') return { value: recorded.value, earlier: true };
  const comment = await render();
  return run.ledger.once<PinnedComment>({
    ...check,
    intent: { dialogId },
    busy: `another run is writing the timeline comment for Chat2Desk request ${requestId} right now`,
    act: async () => ({ commentId: await addComment(run, record, comment), dialogId }),
    refused: (error) => error instanceof RobotFailure || certainlyNotRun(error),
  });
}

/**
 * crm.timeline.comment.add is not idempotent (docs/protocols.md B10). A refusal other than for load
 * or an expired token will not change by waiting: the run fails with Bitrix24's words.
 */
async function addComment(run: RobotRun, record: TimelineTarget, comment: string): Promise<number> {
  try {
    const result = await run.bitrix24.call<number | string>(
      'crm.timeline.comment.add',
      { fields: { ENTITY_ID: record.entityId, ENTITY_TYPE: record.entityType, COMMENT: comment } },
      { idempotent: false },
    );
    const commentId = Number(result);
    // An answer without an id (a batch that lost this command's result) proves nothing was written or
    // not: thrown as a server-side failure, the claim stays in doubt and is settled by looking.
    if (!Number.isSafeInteger(commentId) || commentId <= 0) throw new Bitrix24Error('crm.timeline.comment.add', 'ERROR_UNEXPECTED_ANSWER', 'no comment id in the answer', 502);
    return commentId;
  } catch (error) {
    if (error instanceof Bitrix24Error && !error.refusedForLoad && !error.expiredToken && error.httpStatus < 500) {
      throw new RobotFailure(`Bitrix24 refused the timeline comment: ${error.code || 'error'}${error.description ? ` (${error.description})` : ''}`);
    }
    throw error;
  }
}

interface ListedComment {
  ID: string | number;
  COMMENT?: string;
  CREATED?: string;
}

/**
 * Settles a comment write in doubt: pages through the record's timeline comments, newest first
 * (crm.timeline.comment.list, docs/protocols.md B10), back to the first attempt's time, looking for
 * one of ours (`isOurs`: its first line names the request). Answers the comment's id.
 */
export async function findOnTimeline(run: RobotRun, record: TimelineTarget, attemptAt: number, isOurs: (comment: string) => boolean): Promise<number | 'absent' | 'unknown'> {
  const since = attemptAt - CLOCK_SKEW_MS;
  for (let start = 0; ; start += LIST_PAGE_SIZE) {
    let page: ListedComment[];
    try {
      page = await run.bitrix24.call<ListedComment[]>(
        'crm.timeline.comment.list',
        { filter: { ENTITY_ID: record.entityId, ENTITY_TYPE: record.entityType }, select: ['ID', 'COMMENT', 'CREATED'], order: { ID: 'DESC' }, start },
        { idempotent: true },
      );
    } catch (error) {
      if (error instanceof Bitrix24Error && !error.refusedForLoad && !error.expiredToken && error.httpStatus < 500) return 'unknown';
      throw error;
    }
    const comments = Array.isArray(page) ? page : [];
    for (const item of comments) if (isOurs(item.COMMENT ?? '')) return Number(item.ID);
    const oldest = comments.at(-1)?.CREATED;
    if (comments.length < LIST_PAGE_SIZE || (oldest !== undefined && Date.parse(oldest) < since)) return 'absent';
  }
}
