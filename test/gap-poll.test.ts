import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GAP_POLL_KIND } from '../src/chat2desk/closed-episodes.js';
import type { EventLogPage } from '../src/event-log.js';
import { CLOSE_EPISODE_DEADLINE_MS, CLOSE_EPISODE_KIND } from '../src/jobs/kinds/close-episode.js';
import { formatC2DTime } from './fakes/chat2desk.js';
import { TestClock } from './support/clock.js';
import { adminHeaders, installAndConfigure, startStack, type Stack } from './support/stack.js';

const DAY = 24 * 3600_000;
const HOUR = 3600_000;

describe('gap polling: dialogs closed while webhooks were not arriving', () => {
  let stack: Stack;
  let clock: TestClock;
  /** Where the poll happens; everything before is set up on a clock moved back from it. */
  let pollAt: number;

  beforeEach(async () => {
    clock = new TestClock();
    pollAt = clock.now();
    clock.advance(-12 * DAY);
    stack = await startStack({ clock, c2d: { now: () => clock.now() } });
  });
  afterEach(() => stack.close());

  /** Moves the shared clock (server and fake Chat2Desk) to `pollAt + offset`. */
  const at = (offset: number) => clock.advance(pollAt + offset - clock.now());

  /**
   * A client writes in and an operator closes the dialog now (by the clock): one closed episode.
   * Its close webhooks are not delivered here (`webhooks` delivers them when the test says).
   */
  function closedDialog(phone: string): { dialogId: number; requestId: number; clientId: number; webhooks: Array<Record<string, unknown>> } {
    const { message } = stack.c2d.receiveMessage({ phone, text: 'hello' });
    const dialogId = message.dialog_id as number;
    const closed = stack.c2d.closeDialog(dialogId);
    return { dialogId, requestId: closed.requestId, clientId: message.client_id as number, webhooks: [closed.closeDialog, closed.closeRequest] };
  }

  const enableEpisodes = async (enabledAt: number) => {
    const portal = (await stack.server.portals.get(stack.b24.memberId))!;
    await stack.server.portals.saveSettings(stack.b24.memberId, { ...portal.settings, episodesEnabled: true, episodesEnabledAt: new Date(enabledAt).toISOString() });
  };

  const episodeJobs = async () =>
    (await stack.db.rows<{ key: string; input: string }>("select dedup_key as key, input from jobs where kind = 'close_episode' order by id")).map(({ key, input }) => ({
      key,
      origin: JSON.parse(input).origin as string,
    }));

  /**
   * Chat2Desk disables our webhook; the periodic check notices, and its poll runs to the end, and
   * (unless `episodes` is false) the real `close_episode` jobs it started.
   */
  async function gap(episodes = true): Promise<void> {
    for (const webhook of stack.c2d.account().webhooks) stack.c2d.disableWebhook(webhook.id as number);
    expect(await stack.server.chat2deskWebhooks.check((await stack.server.portals.get(stack.b24.memberId))!)).toBe('reconciled');
    await stack.server.pipeline.settled(episodes ? [GAP_POLL_KIND, CLOSE_EPISODE_KIND] : [GAP_POLL_KIND]);
  }

  const deliver = async (webhooks: Array<Record<string, unknown>>) => {
    for (const body of webhooks) expect(await stack.c2d.deliverWebhook(body)).toEqual([200]);
  };

  const pick = <T extends { requestId: number; dialogId: number; clientId: number }>({ requestId, dialogId, clientId }: T) => ({ requestId, dialogId, clientId });

  it('enqueues each episode closed since the last delivery once, nothing older than the bound, and logs the count', async () => {
    await installAndConfigure(stack);
    await enableEpisodes(clock.now());
    at(-10 * DAY);
    closedDialog('79160000010'); // older than the 7-day bound
    at(-4 * DAY);
    closedDialog('79160000004'); // before the last delivery we processed
    at(-3 * DAY);
    const delivered = stack.c2d.receiveMessage({ phone: '79160000003', text: 'hi' });
    expect(await stack.c2d.deliverWebhook(delivered.webhook)).toEqual([200]);
    at(-2 * DAY);
    const missed = closedDialog('79160000002');
    at(-HOUR);
    const late = closedDialog('79160000001');
    at(0);

    await gap();
    expect(await episodeJobs()).toEqual([
      { key: `episode:${late.requestId}`, origin: 'poll' },
      { key: `episode:${missed.requestId}`, origin: 'poll' },
    ]);
    const stored = (await stack.db.row<{ input: string; state: string; return_values: string }>(
      'select input, state, return_values from jobs where dedup_key = ?',
      `episode:${missed.requestId}`,
    ))!;
    const poll = { input: stored.input, state: stored.state, status: JSON.parse(stored.return_values).status as string };
    const end = stack.c2d.account().dialogs.find((dialog) => dialog.id === missed.dialogId)!.end as string;
    expect(JSON.parse(poll.input)).toEqual({ ...pick(missed), closedAt: new Date(end.replace(' UTC', 'Z')).toISOString(), origin: 'poll' });
    // The real kind handled it: the episode became a CRM record.
    expect(poll).toMatchObject({ state: 'done', status: 'done' });

    // The same gap noticed again (or a second gap) finds the same episodes: nothing twice.
    await gap();
    expect(await episodeJobs()).toHaveLength(2);

    // Chat2Desk's retried close webhooks of an episode the poll found start nothing more.
    await deliver(late.webhooks);
    await stack.server.pipeline.settled([CLOSE_EPISODE_KIND]);
    expect(await episodeJobs()).toHaveLength(2);

    const response = await fetch(`${stack.server.url}/api/event-log?kind=app`, { headers: adminHeaders(stack) });
    const { entries } = (await response.json()) as EventLogPage;
    expect(entries.map((entry) => [entry.title, entry.status, entry.summary])).toEqual([
      ['Dialogs closed while webhooks were not arriving', 'done', 'Found 2 dialogs closed while webhooks were not arriving'],
      ['Dialogs closed while webhooks were not arriving', 'done', 'Found 2 dialogs closed while webhooks were not arriving'],
    ]);
  });

  it('an episode whose close webhook arrived before the poll listed it is one job', async () => {
    await installAndConfigure(stack);
    await enableEpisodes(clock.now());
    at(-3 * DAY);
    const delivered = stack.c2d.receiveMessage({ phone: '79160000003', text: 'hi' });
    expect(await stack.c2d.deliverWebhook(delivered.webhook)).toEqual([200]);
    at(-HOUR);
    const seen = closedDialog('79160000001');
    at(0);
    // The gap was noticed (since the delivery 3 days ago) and, before its poll ran, Chat2Desk's
    // retry of the close arrived: both paths name the same episode.
    await deliver(seen.webhooks);
    const poll = await stack.server.pipeline.enqueue(
      GAP_POLL_KIND,
      stack.b24.memberId,
      { since: pollAt - 3 * DAY },
      { dedupKey: 'gap-poll', deadlineAt: clock.now() + CLOSE_EPISODE_DEADLINE_MS },
    );
    await stack.server.pipeline.settled([GAP_POLL_KIND, CLOSE_EPISODE_KIND]);
    expect(JSON.parse((await stack.server.jobs.get(poll.job.id))!.returnValues!)).toMatchObject({ found: 1 });
    expect(await episodeJobs()).toEqual([{ key: `episode:${seen.requestId}`, origin: 'webhook' }]);
  });

  it('handles only episodes closed after closed dialogs were turned on, and none while they are off', async () => {
    await installAndConfigure(stack);
    at(-2 * DAY);
    closedDialog('79160000002');
    at(-HOUR);
    const after = closedDialog('79160000001');
    at(0);
    await gap();
    expect(await episodeJobs()).toEqual([]);
    expect(await stack.db.row('select count(*) as n from jobs where kind = ?', GAP_POLL_KIND)).toEqual({ n: 0 });

    await enableEpisodes(pollAt - DAY);
    await gap();
    expect(await episodeJobs()).toEqual([{ key: `episode:${after.requestId}`, origin: 'poll' }]);
  });

  it('looks back at most gapLookbackDays when nothing was delivered for longer', async () => {
    await installAndConfigure(stack);
    await enableEpisodes(clock.now());
    at(-10 * DAY);
    closedDialog('79160000010');
    at(-6 * DAY);
    const withinDefault = closedDialog('79160000006');
    at(-4 * DAY);
    const withinFive = closedDialog('79160000004');
    at(0);
    await gap();
    // No delivery ever came: the default 7 days bound the poll (most recently closed first).
    expect(await episodeJobs()).toEqual([
      { key: `episode:${withinFive.requestId}`, origin: 'poll' },
      { key: `episode:${withinDefault.requestId}`, origin: 'poll' },
    ]);
    const portal = (await stack.server.portals.get(stack.b24.memberId))!;
    await stack.server.portals.saveSettings(stack.b24.memberId, { ...portal.settings, gapLookbackDays: 5 });
    await stack.db.run("delete from jobs where kind = 'close_episode'");
    await gap();
    expect(await episodeJobs()).toEqual([{ key: `episode:${withinFive.requestId}`, origin: 'poll' }]);
  });

  it('reads closed dialogs page after page until a whole page closed before the gap', async () => {
    await installAndConfigure(stack);
    at(-12 * DAY);
    await enableEpisodes(clock.now());
    at(0);
    // 250 dialogs closed within the gap, 450 before it (seeded straight into the fake's account).
    const dialogs = stack.c2d.account().dialogs;
    for (let i = 0; i < 700; i += 1) {
      const end = formatC2DTime(pollAt - (i < 250 ? HOUR : 9 * DAY) - i * 1000);
      const id = 900_000 + i;
      dialogs.push({
        id,
        state: 'closed',
        begin: end,
        end,
        operator_id: null,
        last_request_id: 800_000 + i,
        messages: 1,
        last_message: { client_id: 700_000 + i, request_id: 800_000 + i },
        client_id: 700_000 + i,
      });
    }
    stack.c2d.resetCalls();
    // Their clients are not in the account: only the listing is looked at here.
    await gap(false);
    expect(await episodeJobs()).toHaveLength(250);
    const pages = stack.c2d.calls.filter((call) => call.path === '/dialogs' && call.query.state === 'closed').map((call) => call.query.offset);
    expect(pages).toEqual(['0', '200', '400']);
  });

  it('polls too when Chat2Desk lists deliveries it gave up on while the webhook stayed enabled', async () => {
    await installAndConfigure(stack);
    await enableEpisodes(clock.now());
    await stack.server.chat2deskWebhooks.check((await stack.server.portals.get(stack.b24.memberId))!);
    at(-HOUR);
    const missed = closedDialog('79160000001');
    at(0);
    const webhook = stack.c2d.account().webhooks[0]!;
    (webhook.errors as Array<{ text: string; created_at: number }>).push({ text: 'Timeout', created_at: Math.floor(clock.now() / 1000) });
    expect(await stack.server.chat2deskWebhooks.check((await stack.server.portals.get(stack.b24.memberId))!)).toBe('reconciled');
    await stack.server.pipeline.settled([GAP_POLL_KIND, CLOSE_EPISODE_KIND]);
    expect(await episodeJobs()).toEqual([{ key: `episode:${missed.requestId}`, origin: 'poll' }]);
  });
});
