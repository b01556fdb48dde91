import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Clock } from '../src/clock.js';
import { nextStepFor, type EventLogEntry, type EventLogPage } from '../src/event-log.js';
import { CLOSE_EPISODE_KIND, closeEpisodeOptions, type CloseEpisodeInput } from '../src/jobs/kinds/close-episode.js';
import { FIRE_TRIGGER_KIND } from '../src/jobs/kinds/fire-trigger.js';
import { NOTIFY_INCOMING_KIND } from '../src/jobs/kinds/notify-incoming.js';
import { SYNC_RESPONSIBLE_KIND } from '../src/jobs/kinds/sync-responsible.js';
import { TRIGGER_CODES } from '../src/triggers/triggers.js';
import { adminHeaders, eventually, install, installAndConfigure, putSettings, startStack, type Stack } from './support/stack.js';

const DAY = 24 * 3600_000;

/** Real time moved by an offset, or held at one instant (entries created together share their time). */
class StoppableClock implements Clock {
  offsetMs = 0;
  heldAt: number | undefined;
  now(): number {
    return this.heldAt ?? Date.now() + this.offsetMs;
  }
}

describe('event log', () => {
  let stack: Stack;
  let clock: StoppableClock;

  beforeEach(async () => {
    tokens.clear();
    clock = new StoppableClock();
    stack = await startStack({ clock, b24: { domain: 'acme.bitrix24.com' } });
  });
  afterEach(() => stack.close());

  /** One Bitrix24 token per user: each new one is a question to the portal, and those are rationed. */
  const tokens = new Map<number, Record<string, string>>();
  const headersOf = (userId = 1) => tokens.get(userId) ?? tokens.set(userId, adminHeaders(stack, userId)).get(userId)!;
  const list = async (query = '', userId = 1): Promise<EventLogPage> => {
    const response = await fetch(`${stack.server.url}/api/event-log${query}`, { headers: headersOf(userId) });
    expect(response.status).toBe(200);
    return (await response.json()) as EventLogPage;
  };
  const rerun = (id: string, headers = headersOf()) => fetch(`${stack.server.url}/api/event-log/${id}/rerun`, { method: 'POST', headers });

  /** Chat2Desk connected and closed dialogs on since long before any episode of the test. */
  async function configureEpisodes(): Promise<void> {
    await installAndConfigure(stack, { defaultCountry: 'RU', episodesEnabled: true });
    const portal = (await stack.server.portals.get(stack.b24.memberId))!;
    await stack.server.portals.saveSettings(stack.b24.memberId, { ...portal.settings, episodesEnabledAt: new Date(Date.now() - 30 * DAY).toISOString() });
  }

  /** A client wrote in and the operator closed the dialog in the fake Chat2Desk: the episode as the webhook path stores it. */
  function closedDialog(phone: string): CloseEpisodeInput {
    const { client, dialog } = stack.c2d.seedClient({ phone, name: 'Anna', withDialog: 'open' });
    stack.c2d.receiveMessage({ clientId: client.id as number, text: 'Where is my order?' });
    const { requestId } = stack.c2d.closeDialog(dialog!.id as number);
    return { requestId, dialogId: dialog!.id as number, clientId: client.id as number, closedAt: new Date(clock.now()).toISOString(), origin: 'webhook' };
  }

  /** The real `close_episode` job of a closed dialog, enqueued as the webhook path would, not waited for. */
  async function enqueueEpisode(input: CloseEpisodeInput, memberId = stack.b24.memberId): Promise<number> {
    const { job } = await stack.server.pipeline.enqueue(CLOSE_EPISODE_KIND, memberId, input, closeEpisodeOptions(input, clock.now()));
    return job.id;
  }

  /** A closed dialog's episode, run to its end (done or failed) with the trigger it fires; its event-log id. */
  async function closedEpisode(phone: string, memberId = stack.b24.memberId): Promise<string> {
    const id = await enqueueEpisode(closedDialog(phone), memberId);
    await eventually(async () => (await stack.server.jobs.get(id))?.state === 'done', 10_000, `the episode of ${phone} to finish`);
    await stack.server.pipeline.settled([FIRE_TRIGGER_KIND]);
    return (await stack.server.jobs.get(id))!.publicId;
  }

  /** Holds the episode's run at its first Chat2Desk read (the client) until released. */
  const holdEpisode = (input: CloseEpisodeInput) => stack.c2d.holdNext({ method: 'GET', path: new RegExp(`/clients/${input.clientId}$`) });

  it("shows a robot run in the admin's words: title, record and dialog links, phone and a summary", async () => {
    await installAndConfigure(stack, { defaultCountry: 'RU' });
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    const call = await stack.b24.callRobot({
      code: 'c2d_send_message',
      properties: { phone: '8 (916) 123-45-67', text: 'hi' },
      documentId: ['crm', 'CCrmDocumentDeal', 'DEAL_12'],
    });
    await eventually(() => stack.b24.sentEvents.some((event) => event.eventToken === call.eventToken), 10_000, 'the result');
    const sent = stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken)!;
    const { entries, next } = await list();
    expect(next).toBeNull();
    expect(entries).toHaveLength(1);
    const dialogId = Number(sent.returnValues.dialog_id);
    expect(entries[0]).toMatchObject({
      kind: 'robot',
      title: 'Send Chat2Desk message',
      status: 'done',
      record: { type: 'deal', id: 12, url: 'https://acme.bitrix24.com/crm/deal/details/12/' },
      dialog: { id: dialogId, url: `${stack.c2d.url.replace('/v1', '')}/chat/all?dialogID=${dialogId}` },
      phone: '+79161234567',
      error: null,
      canRerun: false,
    });
    expect(entries[0]!.summary).toMatch(/^Chat2Desk message \d+ sent to client \d+/);
    expect(entries[0]!.finishedAt).not.toBeNull();
  });

  it("shows CRM automation in the admin's words: a trigger fired, a notification sent, a responsible changed", async () => {
    await installAndConfigure(stack, { defaultCountry: 'RU', notifyIncoming: true, responsibleSync: true });
    const { client, dialog } = stack.c2d.seedClient({ phone: '79161234567', name: 'Anna', withDialog: 'open' });
    const clientId = client.id as number;
    const dialogId = dialog!.id as number;
    const { message } = stack.c2d.receiveMessage({ clientId, text: 'hi' });
    // Operator 311416 (manager@example.com) ↔ Bitrix24 user 2 (the same e-mail).
    (stack.c2d.account().dialogs.find((item) => item.id === dialogId) as Record<string, unknown>).operator_id = 311416;
    const contactId = stack.b24.seedContact({ name: 'Anna', phones: ['+79161234567'] });
    const enqueue = (kind: string, input: unknown) => stack.server.pipeline.enqueue(kind, stack.b24.memberId, input, { deadlineAt: clock.now() + DAY });
    await enqueue(NOTIFY_INCOMING_KIND, { dialogId, requestId: null, clientName: 'Anna', fromMessageId: message.id });
    await enqueue(SYNC_RESPONSIBLE_KIND, { dialogId, clientId, operatorId: 311416 });
    await enqueue(FIRE_TRIGGER_KIND, { code: TRIGGER_CODES.clientWrote, eventKey: 'delivery:1', clientId, dialogId, record: null });
    await stack.server.pipeline.settled([NOTIFY_INCOMING_KIND, SYNC_RESPONSIBLE_KIND, FIRE_TRIGGER_KIND]);

    const { entries } = await list('?kind=automation');
    expect(entries.map((entry) => [entry.kind, entry.title, entry.status, entry.summary, entry.record?.id ?? null, entry.dialog?.id ?? null])).toEqual([
      ['automation', 'Trigger “Client wrote in Chat2Desk”', 'done', `Fired on contact ${contactId}`, contactId, dialogId],
      [
        'automation',
        "Responsible follows the dialog's operator",
        'done',
        `Bitrix24 user 2 is now responsible for contact ${contactId} (Chat2Desk operator 311416)`,
        contactId,
        dialogId,
      ],
      ['automation', 'Notification of new Chat2Desk messages', 'done', 'Bitrix24 user 2 was told of 1 new message', null, dialogId],
    ]);
    expect((await list('?kind=app')).entries).toHaveLength(0);
  });

  it('says what the admin does next about a failure', async () => {
    await install(stack);
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'hi' } });
    await eventually(() => stack.b24.sentEvents.some((event) => event.eventToken === call.eventToken), 10_000, 'the result');
    const [entry] = (await list()).entries;
    // A run that failed still has its client's phone (normalised by the worker, stored with the finish).
    expect(entry).toMatchObject({ status: 'failed', phone: '+79161234567', error: { nextStep: 'Enter the Chat2Desk API token in Connection.' } });
    expect(entry!.error!.message).toContain('Chat2Desk is not configured');
    expect(entry!.summary).toBe(entry!.error!.message);

    // The table, against the messages our code writes.
    expect(nextStepFor('Chat2Desk rejected the API token: Token is not correct')).toBe('Check the token in Chat2Desk → Settings → API and enter it again in Connection.');
    expect(nextStepFor('Bitrix24 refused crm.lead.add: ACCESS_DENIED (field UF_CRM_1700000000 is required)')).toBe(
      'Make the field UF_CRM_1700000000 optional in Bitrix24, or map it in Extra fields.',
    );
    expect(nextStepFor('Bitrix24 refused crm.lead.add: ERROR_CORE (Required field SOURCE_ID is not filled)')).toBe(
      'Make the field SOURCE_ID optional in Bitrix24, or map it in Extra fields.',
    );
    expect(nextStepFor('Bitrix24 refused the result: the workflow no longer waits for it')).toMatch(/^Nothing to repeat/);
    expect(nextStepFor('Portal m1: Bitrix24 rejected the stored refresh token; reinstall the app to authorise it again')).toBe(
      'Reinstall the app in Bitrix24 to authorise it again.',
    );
    expect(nextStepFor('Bitrix24 user 5 has no Chat2Desk operator: map it in the app settings (operatorMap) or give the operator the same e-mail in both systems')).toMatch(
      /^Map the Bitrix24 user/,
    );
    expect(nextStepFor('Chat2Desk: API calls exceeded API limit per month')).toMatch(/used its API requests for the month/);
    expect(nextStepFor('something nobody foresaw')).toBe("If it happens again, send this entry's id to the app's support.");
  });

  it('filters by status, kind, date and phone', async () => {
    await configureEpisodes();
    clock.offsetMs = -3 * DAY;
    await closedEpisode('79160000001');
    clock.offsetMs = -DAY;
    stack.b24.requireFields('lead', ['UF_CRM_1']);
    await closedEpisode('79160000002');
    stack.b24.requireFields('lead', []);
    const contactId = stack.b24.seedContact({ name: 'Anna', phones: ['+7 999 123-45-67'] });
    await closedEpisode('79991234567');
    clock.offsetMs = 0;
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '+7 916 123-45-67', text: 'hi' } });
    await eventually(() => stack.b24.sentEvents.some((event) => event.eventToken === call.eventToken), 10_000, 'the robot result');
    const waiting = closedDialog('79160000004');
    const hold = holdEpisode(waiting);
    await enqueueEpisode(waiting);
    await hold.arrived;

    const summaries = (entries: EventLogEntry[]) => entries.map((entry) => entry.summary);
    const day = (offset: number) => new Date(Date.now() + offset * DAY).toISOString().slice(0, 10);
    const leadId = Math.max(...stack.b24.crm.leads.keys());
    // Each recorded episode fired "Chat2Desk dialog closed" on its record: automation entries.
    expect((await list()).entries).toHaveLength(7);
    expect((await list('?status=failed')).entries.map((entry) => entry.kind)).toEqual(['closed_episode']);
    expect(summaries((await list('?status=done')).entries)).toEqual([
      expect.stringMatching(/^Chat2Desk message \d+ sent to client \d+/),
      `Fired on contact ${contactId}`,
      `Pinned the dialog to contact ${contactId}`,
      `Fired on lead ${leadId}`,
      `Created lead ${leadId} and pinned the dialog to it`,
    ]);
    expect((await list('?status=running')).entries).toHaveLength(1);
    expect((await list('?status=waiting')).entries).toHaveLength(0);
    expect((await list('?kind=robot')).entries.map((entry) => entry.title)).toEqual(['Send Chat2Desk message']);
    expect((await list('?kind=closed_episode')).entries).toHaveLength(4);
    expect((await list('?kind=automation')).entries.map((entry) => [entry.title, entry.record?.id])).toEqual([
      ['Trigger “Chat2Desk dialog closed”', contactId],
      ['Trigger “Chat2Desk dialog closed”', leadId],
    ]);
    expect((await list('?kind=app')).entries).toHaveLength(0);
    expect((await list(`?from=${day(-1)}&to=${day(-1)}`)).entries).toHaveLength(3);
    expect((await list(`?from=${day(-3)}&to=${day(-2)}`)).entries).toHaveLength(2);
    expect((await list(`?from=${day(0)}`)).entries).toHaveLength(2);
    expect((await list(`?to=${day(-2)}`)).entries).toHaveLength(2);
    // The robot's phone as stored with its run, the episodes' as learnt from Chat2Desk; typed either way.
    expect((await list('?phone=%2B7%20916%20123-45-67')).entries.map((entry) => entry.kind)).toEqual(['robot']);
    expect((await list('?phone=79161234567')).entries).toHaveLength(1);
    expect(summaries((await list('?phone=79991234567')).entries)).toEqual([`Pinned the dialog to contact ${contactId}`]);
    expect((await list('?phone=79990000000')).entries).toHaveLength(0);
    const [failed] = (await list('?status=failed&kind=closed_episode')).entries;
    expect(failed).toMatchObject({ canRerun: true, phone: '+79160000002', error: { nextStep: 'Make the field UF_CRM_1 optional in Bitrix24, or map it in Extra fields.' } });
    expect(failed!.error!.message).toMatch(/^Bitrix24 refused to create the lead: .*UF_CRM_1/);
    expect(summaries((await list('?phone=79160000002')).entries)).toEqual([failed!.error!.message]);
    hold.release();
  });

  it('pages without duplicates or gaps when entries share their time', async () => {
    await install(stack);
    const expected: string[] = [];
    for (const [at, count] of [
      [Date.now() - 2 * DAY, 7],
      [Date.now() - DAY, 5],
    ] as const) {
      clock.heldAt = at;
      const stored = await Promise.all(
        Array.from({ length: count }, (_, i) => {
          const input = { requestId: at + i, dialogId: null, clientId: 1, closedAt: new Date(at).toISOString(), origin: 'webhook' as const };
          return stack.server.pipeline.enqueue(CLOSE_EPISODE_KIND, stack.b24.memberId, input, closeEpisodeOptions(input, at));
        }),
      );
      for (const { job } of stored) expected.push((await stack.server.jobs.get(job.id))!.publicId);
    }
    clock.heldAt = undefined;
    const seen: string[] = [];
    let query = '?limit=3';
    for (let pages = 0; pages < 10; pages += 1) {
      const page = await list(query);
      seen.push(...page.entries.map((entry) => entry.id));
      if (!page.next) break;
      query = `?limit=3&before=${page.next}`;
    }
    expect(seen).toHaveLength(12);
    expect(new Set(seen).size).toBe(12);
    // Newest first: the later time's entries, each time's in reverse order of storing.
    expect(seen).toEqual([...expected.slice(7).reverse(), ...expected.slice(0, 7).reverse()]);
  });

  it('answers 400 naming the bad parameter', async () => {
    await install(stack);
    const cases: Array<[string, RegExp]> = [
      ['?status=broken', /^status must be one of/],
      ['?kind=everything', /^kind must be one of robot, closed_episode, automation, dialog_action, open_channels, app$/],
      ['?from=2026-02-31', /^from must be a date as YYYY-MM-DD/],
      ['?to=yesterday', /^to must be a date/],
      ['?from=2026-03-02&to=2026-03-01', /^to must not be before from/],
      ['?phone=call-me', /^phone must be a phone number/],
      ['?before=not-a-cursor', /^before must be a cursor/],
      ['?limit=0', /^limit must be a whole number from 1 to 100/],
      ['?limit=101', /^limit must be/],
      ['?status=done&status=failed', /^status may be given once/],
      ['?sort=asc', /^Unknown parameter "sort"/],
    ];
    for (const [query, error] of cases) {
      const response = await fetch(`${stack.server.url}/api/event-log${query}`, { headers: headersOf() });
      expect(response.status, query).toBe(400);
      expect(((await response.json()) as { error: string }).error, query).toMatch(error);
    }
  });

  it('refuses callers who are not an admin of the portal, and another portal’s entries, changing nothing', async () => {
    // Chat2Desk not connected: the episode fails at once, saying so.
    await install(stack);
    const ours = await closedEpisode('79160000007');
    const theirs = await closedEpisode('79160000008', 'another-portal');
    const url = `${stack.server.url}/api/event-log`;
    expect((await fetch(url)).status).toBe(401);
    expect((await fetch(url, { headers: { authorization: 'Bearer forged', 'x-bitrix24-member-id': stack.b24.memberId } })).status).toBe(401);
    expect((await fetch(url, { headers: headersOf(2) })).status).toBe(403);
    expect((await fetch(url, { headers: { ...headersOf(), 'x-bitrix24-member-id': 'another-portal' } })).status).toBe(401);
    expect((await rerun(ours, { authorization: 'Bearer forged', 'x-bitrix24-member-id': stack.b24.memberId })).status).toBe(401);
    expect((await rerun(ours, headersOf(2))).status).toBe(403);
    // Only our portal's entries are listed; another portal's id is unknown here.
    expect((await list()).entries.map((entry) => entry.id)).toEqual([ours]);
    const foreign = await rerun(theirs);
    expect(foreign.status).toBe(404);
    expect(await stack.server.jobs.countByState()).toEqual({ done: 2 });
  });

  it('re-runs a failed closed episode once, whatever the clicks, and nothing else', async () => {
    await configureEpisodes();
    const doneInput = closedDialog('79160000010');
    const doneId = await enqueueEpisode(doneInput);
    await eventually(async () => (await stack.server.jobs.get(doneId))?.state === 'done', 10_000, 'the first episode');
    const done = { id: (await stack.server.jobs.get(doneId))!.publicId, requestId: doneInput.requestId };
    stack.b24.requireFields('lead', ['UF_CRM_1']);
    const episode = closedDialog('79160000009');
    const id = await enqueueEpisode(episode);
    await eventually(async () => (await stack.server.jobs.get(id))?.state === 'done', 10_000, 'the episode to fail');
    const failed = (await stack.server.jobs.get(id))!.publicId;
    // The re-run is held at its first read of the episode.
    const hold = holdEpisode(episode);

    const clicks = await Promise.all([rerun(failed), rerun(failed)]);
    expect(clicks.map((response) => response.status)).toEqual([202, 202]);
    const [first, second] = (await Promise.all(clicks.map((response) => response.json()))) as Array<{ id: string }>;
    expect(second!.id).toBe(first!.id);
    // Clicked again while it is still running: the same job.
    const again = await rerun(failed);
    expect(await again.json()).toEqual({ id: first!.id });
    expect((await list('?kind=closed_episode')).entries).toHaveLength(3);

    await hold.arrived;
    hold.release();
    await eventually(async () => (await list('?status=failed')).entries.length === 2, 10_000, 'the re-run to fail');
    // That one failed too: the next click is a new run, and the field is no longer required.
    stack.b24.requireFields('lead', []);
    const third = (await (await rerun(failed)).json()) as { id: string };
    expect(third.id).not.toBe(first!.id);
    await eventually(async () => (await list('?status=done')).entries.some((entry) => entry.id === third.id), 10_000, 'the second re-run');
    const rows = (await stack.db.rows<{ key: string; input: string }>("select dedup_key as key, input from jobs where kind = 'close_episode' order by id")).map(
      ({ key, input }) => ({
        key,
        origin: JSON.parse(input).origin,
      }),
    );
    expect(rows).toEqual([
      { key: `episode:${done.requestId}`, origin: 'webhook' },
      { key: `episode:${episode.requestId}`, origin: 'webhook' },
      { key: `episode:${episode.requestId}:rerun:1`, origin: 'rerun' },
      { key: `episode:${episode.requestId}:rerun:2`, origin: 'rerun' },
    ]);
    // One lead, by the second re-run, with one comment.
    expect(stack.b24.crm.leads.size).toBe(2);
    expect(stack.b24.timelineComments).toHaveLength(2);

    const refusal = await rerun(done.id);
    expect(refusal.status).toBe(409);
    expect(await refusal.json()).toEqual({ error: 'Only a failed closed dialog can be run again' });
    expect((await list()).entries.find((entry) => entry.id === done.id)?.canRerun).toBe(false);
    expect((await rerun('no-such-entry')).status).toBe(404);
  });

  it("prunes finished entries after the portal's eventLogRetentionDays, and keeps what is still running", async () => {
    await configureEpisodes();
    const saved = await putSettings(stack, { eventLogRetentionDays: 2 });
    expect(saved.status).toBe(200);
    expect(await saved.json()).toMatchObject({ eventLogRetentionDays: 2 });
    for (const bad of [0, 366, 1.5, '7']) {
      const response = await putSettings(stack, { eventLogRetentionDays: bad });
      expect(response.status).toBe(400);
      expect(((await response.json()) as { error: string }).error).toMatch(/^eventLogRetentionDays must/);
    }
    await closedEpisode('79160000001');
    // Another portal keeps the default 30 days.
    await closedEpisode('79160000002', 'another-portal');
    const running = closedDialog('79160000003');
    const hold = holdEpisode(running);
    await enqueueEpisode(running);
    await hold.arrived;

    const now = Date.now();
    expect(await stack.server.jobs.pruneFinished(now + 2 * DAY - 60_000, 30)).toBe(0);
    // The episode and the trigger it fired.
    expect(await stack.server.jobs.pruneFinished(now + 2 * DAY + 60_000, 30)).toBe(2);
    expect((await list()).entries.map((entry) => entry.status)).toEqual(['running']);
    expect(await stack.server.jobs.pruneFinished(now + 30 * DAY + 60_000, 30)).toBe(1);
    expect(await stack.server.jobs.countByState()).toEqual({ running: 1 });
    hold.release();
  });
});
