import * as v from 'valibot';
import type { Clock } from '../clock.js';
import type { JobRow, NewJob } from '../db/jobs.js';
import type { Portal, PortalStore, StoredSettings } from '../db/portals.js';
import type { JobOptions } from '../jobs/pipeline.js';
import type { JobKind, JobOutcome } from '../jobs/kinds.js';
import { CLOSE_EPISODE_DEADLINE_MS, CLOSE_EPISODE_KIND, closeEpisodeOptions, type CloseEpisodeInput } from '../jobs/kinds/close-episode.js';
import type { Logger } from '../log.js';
import type { Chat2DeskApi, Chat2DeskDialog } from './client.js';
import { PAGE_LIMIT } from './client.js';
import { parseChat2DeskTime } from './times.js';

/** The part of the portal's settings gap polling reads (src/portal-settings.ts holds the schema). */
export interface EpisodeSettings {
  enabled: boolean;
  /** Only episodes closed after this instant are handled. */
  enabledAt: number | undefined;
  gapLookbackDays: number;
}

export const DEFAULT_GAP_LOOKBACK_DAYS = 7;

/** Read tolerantly from what is stored: a value the settings schema would refuse counts as unset. */
export function episodeSettings(stored: StoredSettings): EpisodeSettings {
  const lookback = stored.gapLookbackDays;
  const enabledAt = typeof stored.episodesEnabledAt === 'string' ? Date.parse(stored.episodesEnabledAt) : Number.NaN;
  return {
    // Open Channels mode makes no episode records (src/episodes/delivery.ts says why).
    enabled: stored.episodesEnabled === true && stored.integrationType !== 'open_channels',
    enabledAt: Number.isNaN(enabledAt) ? undefined : enabledAt,
    gapLookbackDays: typeof lookback === 'number' && Number.isInteger(lookback) && lookback >= 1 && lookback <= 30 ? lookback : DEFAULT_GAP_LOOKBACK_DAYS,
  };
}

/** A closed dialog's last episode, as gap polling found it. */
export interface FoundEpisode {
  requestId: number;
  dialogId: number;
  clientId: number;
  closedAt: number;
}

/**
 * Pages of closed dialogs read at most per poll (200 each): a gap of a week on a busy account is
 * covered, and a runaway listing (an ordering other than assumed) stops here rather than reading
 * the whole account's history.
 */
const MAX_PAGES = 50;

/**
 * Episodes closed after `since`, newest first. Listing closed episodes by time is undocumented
 * (docs/protocols.md C4, assumption): `GET /dialogs?state=closed&order=desc` is taken to list the
 * most recently closed dialogs first, and each dialog's `last_request_id` is the episode that
 * closed it. Reading stops after a whole page closed before `since` (so dialogs slightly out of
 * order within a page are still found). A dialog closed, reopened and closed again during the gap
 * shows only its last episode. `truncated`: MAX_PAGES were read and the list went on.
 */
export async function closedEpisodesSince(api: Pick<Chat2DeskApi, 'closedDialogsPage'>, since: number): Promise<{ episodes: FoundEpisode[]; truncated: boolean }> {
  const episodes = new Map<number, FoundEpisode>();
  for (let page = 0; page < MAX_PAGES; page += 1) {
    const dialogs = await api.closedDialogsPage(page * PAGE_LIMIT);
    let anyInWindow = false;
    for (const dialog of dialogs) {
      const episode = episodeOf(dialog);
      if (!episode || episode.closedAt <= since) continue;
      anyInWindow = true;
      episodes.set(episode.requestId, episode);
    }
    if (dialogs.length < PAGE_LIMIT || !anyInWindow) return { episodes: [...episodes.values()], truncated: false };
  }
  return { episodes: [...episodes.values()], truncated: true };
}

/** The dialog's closing episode; undefined when the dialog says too little (no end, request or client: docs/protocols.md C4). */
function episodeOf(dialog: Chat2DeskDialog): FoundEpisode | undefined {
  const closedAt = parseChat2DeskTime(dialog.end);
  const requestId = dialog.last_request_id ?? dialog.last_message?.request_id;
  const clientId = dialog.last_message?.client_id;
  if (closedAt === undefined || typeof requestId !== 'number' || typeof clientId !== 'number') return undefined;
  return { requestId, dialogId: dialog.id, clientId, closedAt };
}

export const GAP_POLL_KIND = 'gap_poll';

const gapPollInput = v.object({
  /** The last delivery we processed before the gap (ms): episodes closed after it may have been missed. */
  since: v.pipe(v.number(), v.integer(), v.minValue(0)),
});

export type GapPollInput = v.InferOutput<typeof gapPollInput>;

export interface GapPollDeps {
  portals: PortalStore;
  /** The portal's Chat2Desk API when its connection is usable. */
  apiOf(portal: Portal): Promise<Chat2DeskApi | undefined>;
  /** Builds a job of another kind, its input checked (src/jobs/pipeline.ts `Pipeline.job`). */
  job(kind: string, memberId: string, input: unknown, options: JobOptions): NewJob;
  clock: Clock;
}

/**
 * After a webhook gap (src/chat2desk/webhooks.ts `check`), the episodes closed during it are found
 * by polling and each is enqueued as `close_episode` with origin 'poll': the same dedup key as the
 * webhook path, so an episode seen both ways is handled once. Only while closed episodes are turned
 * on, only episodes closed after they were, and at most `gapLookbackDays` back. A durable job, so a
 * failed listing is retried; the episodes' jobs are stored with its finish (an outbox), and its
 * result (how many were found) is the event log's entry for the gap.
 */
export function gapPollKind(deps: GapPollDeps): JobKind<GapPollInput> {
  return {
    name: GAP_POLL_KIND,
    input: gapPollInput,
    needsConfirmation: false,
    dedup: 'while_pending',
    after: 'done',
    async prepare(job, input, log) {
      return { run: () => poll(deps, job, input, log) };
    },
    failed: (_job, message) => ({ returnValues: { status: 'failed', error: message }, logMessage: message }),
    followUps(job, outcome) {
      const episodes = (outcome.returnValues.episodes ?? []) as FoundEpisode[];
      const now = deps.clock.now();
      return episodes.map((episode) => {
        const input: CloseEpisodeInput = {
          requestId: episode.requestId,
          dialogId: episode.dialogId,
          clientId: episode.clientId,
          closedAt: new Date(episode.closedAt).toISOString(),
          origin: 'poll',
        };
        return deps.job(CLOSE_EPISODE_KIND, job.memberId, input, closeEpisodeOptions(input, now));
      });
    },
  };
}

async function poll(deps: GapPollDeps, job: JobRow, input: GapPollInput, log: Logger): Promise<JobOutcome> {
  const portal = await deps.portals.get(job.memberId);
  if (!portal || portal.status === 'uninstalled') return { returnValues: { status: 'skipped', found: 0 }, logMessage: 'the app is not installed on this portal any more' };
  const settings = episodeSettings(portal.settings);
  if (!settings.enabled) return { returnValues: { status: 'skipped', found: 0 }, logMessage: 'closed dialogs are not turned into CRM records on this portal' };
  const api = await deps.apiOf(portal);
  if (!api) return { returnValues: { status: 'skipped', found: 0 }, logMessage: 'Chat2Desk is not configured for this portal' };
  const bound = job.createdAt - settings.gapLookbackDays * 24 * 3600_000;
  const since = Math.max(input.since, bound, settings.enabledAt ?? 0);
  const { episodes, truncated } = await closedEpisodesSince(api, since);
  if (truncated) log.warn({ since, found: episodes.length }, 'gap polling stopped at its page limit: older closed dialogs of the gap were not looked at');
  return {
    returnValues: { status: 'done', found: episodes.length, since: new Date(since).toISOString(), truncated, episodes },
    logMessage: `Found ${episodes.length} dialogs closed while webhooks were not arriving`,
  };
}

/** What the webhook check calls when it noticed a gap: enqueues one poll per portal at a time. */
export class GapPolls {
  constructor(
    private readonly deps: {
      enqueue(kind: string, memberId: string, input: GapPollInput, options: JobOptions): Promise<unknown>;
      clock: Clock;
      log: Logger;
    },
  ) {}

  /** `lastDeliveryAt`: the last delivery processed before the gap (or when the webhook was registered). */
  async gapNoticed(portal: Portal, lastDeliveryAt: number): Promise<void> {
    if (!episodeSettings(portal.settings).enabled) return;
    const now = this.deps.clock.now();
    // One waiting poll per portal: a gap noticed again before it ran folds into it.
    await this.deps.enqueue(GAP_POLL_KIND, portal.memberId, { since: lastDeliveryAt }, { dedupKey: 'gap-poll', deadlineAt: now + CLOSE_EPISODE_DEADLINE_MS });
    this.deps.log.info({ memberId: portal.memberId, since: new Date(lastDeliveryAt).toISOString() }, 'webhook gap: looking for dialogs closed meanwhile');
  }
}
