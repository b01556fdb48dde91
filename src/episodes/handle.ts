import type { RobotRun } from '../activities/activity.js';
import type { EpisodeRecordStore } from '../db/episode-records.js';
import type { JobOutcome } from '../jobs/kinds.js';
import { renderEpisodeComment } from './comment.js';
import { episodeCommentView, loadEpisode, passesTagFilter, type Episode, type EpisodeKey } from './episode.js';
import { pinComment, type TimelineTarget } from './pin.js';
import { recordForEpisode, type EpisodeRecord } from './records.js';

export type EpisodeOrigin = 'webhook' | 'poll' | 'rerun';

/**
 * One closed episode: read it from Chat2Desk, apply the tag filter, find or create the client's
 * record, pin the comment once. The outcome's values feed the event log (phone, record, created,
 * comment id). A failure after the client's phone was learnt hands it to `phoneLearnt` first: a
 * failed outcome carries only the error, and the event log still finds the episode by phone.
 */
export async function handleEpisode(
  run: RobotRun,
  records: EpisodeRecordStore,
  key: EpisodeKey & { clientId: number },
  origin: EpisodeOrigin,
  phoneLearnt: (phone: string) => Promise<void>,
): Promise<JobOutcome> {
  const { settings } = run;
  if (origin !== 'rerun') {
    if (!settings.episodesEnabled) return skipped(key, null, 'closed dialogs are turned off in the settings');
    const enabledAt = settings.episodesEnabledAt ? Date.parse(settings.episodesEnabledAt) : Number.NaN;
    if (!(key.closedAt >= enabledAt)) return skipped(key, null, 'closed before closed dialogs were turned on');
  }
  const episode = await loadEpisode(run, key);
  const phone = episode.phones[0] ?? null;
  if (!passesTagFilter(settings, episode.tags)) return skipped(key, phone, 'tag filter');
  try {
    const found = await recordForEpisode(run, records, episode);
    const pinned = await pinEpisode(run, episode, found.record, settings.transcript);
    return outcome(episode, found, pinned.commentId, phone);
  } catch (error) {
    if (phone) await phoneLearnt(phone);
    throw error;
  }
}

/**
 * The comment of an episode on a record, once per (episode, record), in the portal's language:
 * shared with the "Log closed dialog" robot. The language is asked only when a comment is written.
 */
export async function pinEpisode(run: RobotRun, episode: Episode, record: TimelineTarget, transcript: boolean): Promise<{ commentId: number; earlier: boolean }> {
  const { value, earlier } = await pinComment(run, episode, record, async () => renderEpisodeComment(await episodeCommentView(run, episode, transcript), await run.language()));
  return { commentId: value.commentId, earlier };
}

function skipped(key: EpisodeKey, phone: string | null, reason: string): JobOutcome {
  return { returnValues: { status: 'skipped', reason, requestId: key.requestId, dialogId: key.dialogId, phone }, logMessage: `skipped: ${reason}` };
}

function outcome(episode: Episode, found: EpisodeRecord, commentId: number, phone: string | null): JobOutcome {
  const { entityType, entityId } = found.record;
  return {
    returnValues: { status: 'done', entityType, entityId, created: found.created, commentId, phone, requestId: episode.requestId, dialogId: episode.dialogId },
    logMessage: `Chat2Desk request ${episode.requestId} ${found.created ? 'made a new' : 'was pinned to'} ${entityType} ${entityId} (comment ${commentId})`,
  };
}
