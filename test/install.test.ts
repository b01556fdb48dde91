import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { activities } from '../src/activities/index.js';
import { CLOSE_EPISODE_KIND } from '../src/jobs/kinds/close-episode.js';
import { FIRE_TRIGGER_KIND } from '../src/jobs/kinds/fire-trigger.js';
import { adminHeaders, eventually, install, installAndConfigure, postForm, startStack, type Stack } from './support/stack.js';
import { bearer, tabToken } from './support/viewer-tokens.js';

const robotCodes = activities.map((activity) => activity.code);
const twinCodes = robotCodes.map((code) => `${code}_bp`);

describe('install and lifecycle', () => {
  let stack: Stack;
  beforeEach(async () => {
    stack = await startStack();
  });
  afterEach(() => stack.close());

  it('registers every robot, its business-process twin and the lifecycle events', async () => {
    const response = await postForm(`${stack.server.url}/install`, stack.b24.installEventBody());
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: 'success' });

    expect([...stack.b24.robots.keys()].sort()).toEqual([...robotCodes].sort());
    expect([...stack.b24.activities.keys()].sort()).toEqual([...twinCodes].sort());
    const robot = stack.b24.robots.get('c2d_send_message')!;
    expect(robot).toMatchObject({ HANDLER: `${stack.server.url}/bitrix24/robot`, USE_SUBSCRIPTION: 'Y' });
    const lower = (map: unknown) => Object.fromEntries(Object.entries(map as object).map(([key, value]) => [key.toLowerCase(), value]));
    expect(lower(robot.NAME)).toMatchObject({ en: 'Send Chat2Desk message', ru: 'Отправить сообщение Chat2Desk', la: 'Enviar mensaje de Chat2Desk' });
    expect(Object.keys(robot.PROPERTIES as object)).toEqual(['phone', 'text', 'attachment', 'channel_id', 'transport', 'open_dialog']);
    expect(Object.keys(robot.RETURN_PROPERTIES as object)).toEqual(['status', 'error', 'message_id', 'client_id', 'dialog_id', 'channel_id', 'transport']);
    expect(stack.b24.activities.get('c2d_send_message_bp')).toMatchObject({ HANDLER: robot.HANDLER });
    const events = stack.b24.eventBindings.map((binding) => `${binding.event.toUpperCase()} ${binding.handler}`).sort();
    expect(events).toEqual([`ONAPPUNINSTALL ${stack.server.url}/bitrix24/events`, `ONAPPUPDATE ${stack.server.url}/bitrix24/events`]);
  });

  it('is safe to repeat: a second install updates what exists and adds nothing', async () => {
    await install(stack);
    const firstCalls = stack.b24.calls.length;
    const response = await postForm(`${stack.server.url}/install`, stack.b24.installEventBody());
    expect(response.status).toBe(200);
    const secondRun = stack.b24.calls.slice(firstCalls).map((call) => call.method);
    expect(secondRun).toContain('bizproc.robot.update');
    expect(secondRun).not.toContain('bizproc.robot.add');
    expect(secondRun).not.toContain('event.bind');
    expect(stack.b24.robots.size).toBe(robotCodes.length);
    expect(stack.b24.eventBindings).toHaveLength(2);
  });

  it('answers the install page with a page that finishes the installation', async () => {
    const { query, body } = stack.b24.installPageRequest();
    const response = await postForm(`${stack.server.url}/install`, body, query);
    expect(response.status).toBe(200);
    const html = await response.text();
    // The app page in install mode (its script calls installFinish through b24jssdk: app-page.browser.test.ts).
    expect(html).toContain('id="install-note"');
    expect(html).toContain('"install":true');
    expect(html).toContain('/public/vendor/b24jssdk.min.js');
    expect(stack.b24.robots.size).toBe(robotCodes.length);
  });

  it.each([
    ['member id of another portal', { memberId: 'f'.repeat(32) }],
    ['domain of another portal', { domain: 'evil.bitrix24.com' }],
    ['access token the OAuth server does not know', { accessToken: 'forged-access-token' }],
  ])('refuses a forged install (%s) and stores nothing', async (_label, overrides) => {
    const response = await postForm(`${stack.server.url}/install`, stack.b24.installEventBody(overrides));
    expect(response.status).toBe(403);
    expect(await stack.server.portals.get(stack.b24.memberId)).toBeUndefined();
    expect(await stack.server.portals.get('f'.repeat(32))).toBeUndefined();
    expect(stack.b24.calls.filter((call) => call.method.startsWith('bizproc.'))).toHaveLength(0);
  });

  it('refuses an install by an employee who is not an administrator, and keeps the portal working', async () => {
    await install(stack);
    const employee = stack.b24.issueAuth(2);
    const { query, body } = stack.b24.installPageRequest({ accessToken: employee.access_token, applicationToken: 'attacker-chosen-token' });
    const page = await postForm(`${stack.server.url}/install`, body, query);
    expect(page.status).toBe(403);
    expect(await page.text()).toContain('only a Bitrix24 administrator can install the app');
    const callback = await postForm(`${stack.server.url}/install`, stack.b24.installEventBody({ accessToken: employee.access_token, applicationToken: 'attacker-chosen-token' }));
    expect(callback.status).toBe(403);
    const genuine = stack.b24.robotCallBody({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'still works' } });
    // (building an uninstall body makes the fake portal forget its robots, so the genuine call is built first)
    const forgedUninstall = await postForm(`${stack.server.url}/bitrix24/events`, stack.b24.uninstallEventBody({ applicationToken: 'attacker-chosen-token' }));
    expect(forgedUninstall.status).toBe(401);
    expect((await postForm(`${stack.server.url}/bitrix24/robot`, genuine.body)).status).toBe(200);
    expect(await stack.db.row('select installer_user_id from portals')).toEqual({ installer_user_id: 1 });
  });

  it('refuses an install for another application (client id mismatch)', async () => {
    await stack.server.close();
    const { startServer } = await import('../src/server.js');
    const { loadConfig } = await import('../src/config.js');
    const { createLogger } = await import('../src/log.js');
    stack.server = await startServer(loadConfig({ ...stack.env, B24_CLIENT_ID: 'local.someone-else.1' }), createLogger('silent'), { hostname: '127.0.0.1' });
    const response = await postForm(`${stack.server.url}/install`, stack.b24.installEventBody());
    expect(response.status).toBe(403);
    expect(await response.json()).toMatchObject({ error: 'Install refused: the token belongs to another application' });
    expect(await stack.server.portals.get(stack.b24.memberId)).toBeUndefined();
  });

  it('never sends the client secret anywhere but the configured OAuth server', async () => {
    await install(stack);
    stack.b24.expireAccessTokens();
    await fetch(`${stack.server.url}/api/settings`, { headers: adminHeaders(stack) });
    await stack.server.rest.call(stack.b24.memberId, 'app.info', {}, { idempotent: true });
    expect(stack.b24.oauthCalls.some((call) => call.method === 'oauth.token')).toBe(true);
    for (const call of stack.b24.calls) expect(JSON.stringify(call.params)).not.toContain(stack.b24.clientSecret);
  });

  it('uninstall wipes the secrets, stops queued jobs and refuses later calls', async () => {
    await installAndConfigure(stack);
    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    // The run's first Chat2Desk answer is held, so the run is in flight across the uninstall.
    const inFlight = stack.c2d.holdNext({});
    const queued = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'hi' } });
    expect(queued.status).toBe(200);
    await inFlight.arrived;

    const lateCall = stack.b24.robotCallBody({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'late' } });
    const forged = await postForm(`${stack.server.url}/bitrix24/events`, stack.b24.uninstallEventBody({ applicationToken: '0'.repeat(32) }));
    expect(forged.status).toBe(401);
    expect((await stack.server.portals.get(stack.b24.memberId))?.status).toBe('active');

    // Without "delete the app's data" (data[CLEAN]=0) the jobs stay, stopped.
    const response = await postForm(`${stack.server.url}/bitrix24/events`, stack.b24.uninstallEventBody({ clean: false }));
    expect(response.status).toBe(200);
    // Acted on because the portal refused our stored tokens (Bitrix24 revokes them before the event).
    expect(stack.b24.calls.filter((call) => call.method === 'app.info').map((call) => call.error)).toEqual(['NO_AUTH_FOUND']);
    const row = (await stack.db.row('select * from portals where member_id = ?', stack.b24.memberId)) as Record<string, unknown>;
    expect(row).toMatchObject({ status: 'uninstalled', access_token: null, refresh_token: null, chat2desk_token: null });
    expect(await stack.server.jobs.countByState()).toEqual({ cancelled: 1 });
    // The run that was in flight ends without reviving the job.
    inFlight.release();
    const runEnded = /"msg":"(job finished|job failed|job given up|transient failure; retrying)"/;
    await eventually(() => stack.logs.some((line) => runEnded.test(line)), 10_000, 'the run in flight to end');
    expect(await stack.server.jobs.countByState()).toEqual({ cancelled: 1 });
    expect(stack.b24.sentEvents).toHaveLength(0);

    const later = await postForm(`${stack.server.url}/bitrix24/robot`, lateCall.body);
    expect(later.status).toBe(401);
  });

  it('removes its webhook from Chat2Desk on uninstall (Chat2Desk allows five per account)', async () => {
    await installAndConfigure(stack);
    expect(stack.c2d.account().webhooks).toHaveLength(1);
    expect((await postForm(`${stack.server.url}/bitrix24/events`, stack.b24.uninstallEventBody())).status).toBe(200);
    await stack.server.idle();
    expect(stack.c2d.account().webhooks).toHaveLength(0);
    expect(await stack.db.row('select count(*) as n from c2d_webhooks')).toEqual({ n: 0 });
  });

  it('re-registers robots when Bitrix24 reports an app update', async () => {
    await install(stack);
    stack.b24.robots.clear();
    stack.b24.activities.clear();
    const response = await postForm(`${stack.server.url}/bitrix24/events`, stack.b24.eventBody('ONAPPUPDATE', { VERSION: '2', PREVIOUS_VERSION: '1' }));
    expect(response.status).toBe(200);
    await eventually(() => stack.b24.robots.size === robotCodes.length && stack.b24.activities.size === robotCodes.length, 5_000, 're-registration');
  });

  it('keeps secrets sealed in the database file', async () => {
    await installAndConfigure(stack);
    const row = (await stack.db.row('select * from portals')) as Record<string, string>;
    const dump = JSON.stringify(row);
    expect(dump).not.toContain(stack.c2d.token);
    expect(dump).not.toContain(stack.b24.applicationToken);
    expect(row.access_token).toMatch(/^v1\./);
  });
});

describe('opening the installed app', () => {
  let stack: Stack;
  beforeEach(async () => {
    stack = await startStack();
  });
  afterEach(() => stack.close());

  it("shows the status without replacing the installer's tokens or registering again", async () => {
    await install(stack);
    const before = await stack.db.row('select access_token, refresh_token from portals');
    const callsBefore = stack.b24.calls.length;
    const { query, body } = stack.b24.installPageRequest({ accessToken: stack.b24.issueAuth(2).access_token });
    const response = await postForm(`${stack.server.url}/install`, body, query);
    expect(response.status).toBe(200);
    expect(await response.text()).toContain('id="status-chat2desk"');
    expect(await stack.db.row('select access_token, refresh_token from portals')).toEqual(before);
    expect(stack.b24.calls.slice(callsBefore).filter((call) => call.method.startsWith('bizproc.'))).toHaveLength(0);
  });

  describe("the portal's data after an uninstall", () => {
    /** Rows of the portal's data: its jobs, their effects, webhook deliveries, its clients' remembered CRM records and the account's cache. */
    const dataRows = async () => {
      const count = async (sql: string) => ((await stack.db.row(sql, stack.b24.memberId)) as { n: number }).n;
      return {
        jobs: await count('select count(*) as n from jobs where member_id = ?'),
        effects: await count('select count(*) as n from effects where member_id = ?'),
        deliveries: await count('select count(*) as n from webhook_deliveries where member_id = ?'),
        episodeRecords: await count('select count(*) as n from episode_records where member_id = ?'),
        uploadedFiles: await count('select count(*) as n from uploaded_files where member_id = ?'),
        openLines: await count('select count(*) as n from open_lines where member_id = ?'),
        openChannelChats: await count('select count(*) as n from open_channel_chats where member_id = ?'),
        cachedClients: await count('select count(*) as n from c2d_clients where cast(? as text) is not null'),
        settings: ((await stack.db.row('select settings from portals where member_id = ?', stack.b24.memberId)) as { settings: string }).settings,
      };
    };

    /**
     * A portal in use: a message sent by a robot (a job and its effects), a delivery received, the
     * cache filled, and a closed dialog turned into a lead (the client's record remembered).
     */
    async function portalInUse(): Promise<void> {
      await installAndConfigure(stack, { defaultCountry: 'RU', episodesEnabled: true });
      const { client } = stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
      const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'hi' } });
      await eventually(() => stack.b24.sentEvents.some((event) => event.eventToken === call.eventToken), 10_000, 'the result');
      const { webhook, message } = stack.c2d.receiveMessage({ clientId: client.id as number, text: 'hello' });
      expect(await stack.c2d.deliverWebhook(webhook)).toEqual([200]);
      const closed = stack.c2d.closeDialog(message.dialog_id as number);
      expect(await stack.c2d.deliverWebhook(closed.closeDialog)).toEqual([200]);
      await eventually(async () => (await dataRows()).episodeRecords === 1, 10_000, 'the closed dialog to become a lead');
      await stack.server.pipeline.settled([CLOSE_EPISODE_KIND, FIRE_TRIGGER_KIND]);
      // A file a user attached in the CRM tab.
      const form = new FormData();
      form.append('file', new Blob(['notes']), 'notes.txt');
      const upload = await fetch(`${stack.server.url}/api/files`, { method: 'POST', headers: bearer(await tabToken(stack, { userId: 1, phones: ['79161234567'] })), body: form });
      expect(upload.status).toBe(201);
      // An Open Channel line once connected (Open Channels mode, src/db/open-lines.ts).
      await stack.db.run("insert into open_lines (member_id, line_id, position, options, connected_at, updated_at) values (?, 1, 1, '{}', 0, 0)", stack.b24.memberId);
      // A client's Open Channel chat, remembered for the Chat workspace (src/db/open-channel-chats.ts).
      await stack.db.run("insert into open_channel_chats (member_id, client_id, line_id, chat_id, im_chat_id, sent_at) values (?, 7, 1, 'c7', 31, 0)", stack.b24.memberId);
      expect(await dataRows()).toMatchObject({ deliveries: 2, uploadedFiles: 1, openLines: 1, openChannelChats: 1 });
      expect((await dataRows()).jobs).toBeGreaterThan(1);
      expect((await dataRows()).effects).toBeGreaterThan(0);
      expect((await dataRows()).cachedClients).toBeGreaterThan(0);
    }

    it('deletes the event log, effects, deliveries, remembered CRM records, cache and settings when Bitrix24 asks to delete the data (CLEAN=1)', async () => {
      await portalInUse();
      // A forged event asking the same changes nothing: the portal still accepts our tokens.
      const forged = await postForm(`${stack.server.url}/bitrix24/events`, stack.b24.uninstallEventBody({ applicationToken: '0'.repeat(32), clean: true }));
      expect(forged.status).toBe(401);
      expect(await dataRows()).toMatchObject({ deliveries: 2, episodeRecords: 1 });

      const response = await postForm(`${stack.server.url}/bitrix24/events`, stack.b24.uninstallEventBody({ clean: true }));
      expect(response.status).toBe(200);
      expect(await dataRows()).toEqual({
        jobs: 0,
        effects: 0,
        deliveries: 0,
        episodeRecords: 0,
        uploadedFiles: 0,
        openLines: 0,
        openChannelChats: 0,
        cachedClients: 0,
        settings: '{}',
      });
      expect((await stack.server.portals.get(stack.b24.memberId))?.status).toBe('uninstalled');
    });

    it('keeps the event log, effects, deliveries, remembered CRM records, cache and settings when the uninstall does not ask to delete the data', async () => {
      await portalInUse();
      const before = await dataRows();
      // data[CLEAN] left out altogether, as well as CLEAN=0 (the lifecycle test above).
      const body = stack.b24.uninstallEventBody({ clean: false }).replace(/&data%5BCLEAN%5D=0|data%5BCLEAN%5D=0&?/, '');
      expect(body).not.toContain('CLEAN');
      const response = await postForm(`${stack.server.url}/bitrix24/events`, body);
      expect(response.status).toBe(200);
      expect((await stack.server.portals.get(stack.b24.memberId))?.status).toBe('uninstalled');
      expect(await dataRows()).toEqual(before);
      expect(JSON.parse(before.settings)).toMatchObject({ defaultCountry: 'RU' });
    });
  });
});
