import { afterEach, describe, expect, it } from 'vitest';
import { CLOSE_EPISODE_KIND } from '../src/jobs/kinds/close-episode.js';
import { CONNECTOR_ID } from '../src/open-channels/connector.js';
import { DEFAULT_LINE_OPTIONS, type LineOptions } from '../src/open-channels/lines.js';
import { adminHeaders, eventually, install, installAndConfigure, postForm, putSettings, sentMessages, startStack, type Stack } from './support/stack.js';

/**
 * Open Channels mode, the connector side (README "Open Channels mode"): the mode switch registers
 * our connector and binds its events and switching back takes them away; the connector settings
 * page (SETTING_CONNECTOR) connects a line with its options; line and status deletions forget it;
 * closed-episode records stop in this mode. The browser side is in connector.browser.test.ts.
 */
describe('the Open Channels connector', () => {
  let stack: Stack;
  afterEach(() => stack.close());

  const CONNECTOR_EVENTS = ['ONIMCONNECTORMESSAGEADD', 'ONIMCONNECTORMESSAGEUPDATE', 'ONIMCONNECTORMESSAGEDELETE', 'ONIMCONNECTORLINEDELETE', 'ONIMCONNECTORSTATUSDELETE'];
  const connectorEvents = () =>
    stack.b24.eventBindings
      .filter((binding) => CONNECTOR_EVENTS.includes(binding.event.toUpperCase()) && binding.handler === `${stack.config.publicUrl}/bitrix24/events`)
      .map((binding) => binding.event.toUpperCase())
      .sort();
  const lineRows = async () => (await stack.db.rows('select line_id as lineId, options from open_lines')) as Array<{ lineId: number; options: string }>;

  async function openChannelsPortal(): Promise<void> {
    stack = await startStack();
    await installAndConfigure(stack, { defaultCountry: 'RU' });
    const switched = await putSettings(stack, { integrationType: 'open_channels' });
    expect(switched.status).toBe(200);
    expect(((await switched.json()) as { registration: unknown }).registration).toEqual({ ok: true });
  }

  async function openPage(options: { line?: number | string; connector?: string; userId?: number; applicationToken?: string } = {}) {
    const auth = stack.b24.issueAuth(options.userId ?? 1);
    const request = stack.b24.settingConnectorPageRequest(
      { line: (options.line ?? 1) as number, connector: options.connector ?? CONNECTOR_ID },
      { accessToken: auth.access_token, applicationToken: options.applicationToken },
    );
    const response = await postForm(`${stack.server.url}/connector`, request.body, request.query);
    const html = await response.text();
    const raw = /<script type="application\/json" id="page-data">(.*?)<\/script>/s.exec(html)?.[1];
    const data = raw ? (JSON.parse(raw) as { token?: string; error?: string; connected?: boolean; options?: LineOptions }) : {};
    return { status: response.status, html, ...data };
  }

  const writeLine = (token: string, line: number | string, method: 'PUT' | 'DELETE', body?: unknown) =>
    fetch(`${stack.server.url}/api/connector/lines/${line}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });

  const byChannels: LineOptions = { ...DEFAULT_LINE_OPTIONS, route: { kind: 'channels', channelIds: [17404] }, signature: false, holdUntilOperator: true };

  it('switching to Open Channels registers the connector with its settings page and binds its events; repeating changes nothing; an install in this mode registers it again', async () => {
    await openChannelsPortal();
    const registered = stack.b24.connectors.get(CONNECTOR_ID)!;
    expect(registered).toMatchObject({ ID: CONNECTOR_ID, NAME: 'Chat2Desk', PLACEMENT_HANDLER: `${stack.config.publicUrl}/connector` });
    expect(String((registered.ICON as Record<string, unknown>).DATA_IMAGE)).toMatch(/^data:image\/svg\+xml,/);
    expect(connectorEvents()).toEqual([...CONNECTOR_EVENTS].sort());
    // Saving again (as an update re-registers): nothing bound twice.
    expect((await putSettings(stack, { integrationType: 'open_channels' })).status).toBe(200);
    expect(connectorEvents()).toEqual([...CONNECTOR_EVENTS].sort());
    // Installed again (an update registers the same way) while in Open Channels mode: registered again.
    stack.b24.connectors.clear();
    await install(stack);
    await stack.server.idle();
    expect(stack.b24.connectors.get(CONNECTOR_ID)).toMatchObject({ PLACEMENT_HANDLER: `${stack.config.publicUrl}/connector` });
  });

  it('Chat2Desk mode registers no connector, and a bad integrationType is refused naming the field, changing nothing', async () => {
    stack = await startStack();
    await installAndConfigure(stack, { defaultCountry: 'RU' });
    expect(stack.b24.connectors.size).toBe(0);
    expect(connectorEvents()).toEqual([]);
    const refused = await putSettings(stack, { integrationType: 'openlines' });
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { error: string }).error).toContain('integrationType must be one of: chat2desk, open_channels');
    expect(stack.b24.connectors.size).toBe(0);
  });

  it('the app page names imopenlines and imconnector as missing only in Open Channels mode', async () => {
    stack = await startStack();
    await installAndConfigure(stack, { defaultCountry: 'RU' });
    const missing = async () => {
      const auth = stack.b24.issueAuth(1);
      const body = new URLSearchParams({
        AUTH_ID: auth.access_token,
        APPLICATION_TOKEN: stack.b24.applicationToken,
        APPLICATION_SCOPE: 'crm,bizproc,user_basic,placement',
        member_id: stack.b24.memberId,
        PLACEMENT: 'DEFAULT',
      });
      const html = await (await postForm(`${stack.server.url}/app`, body.toString(), 'LANG=en')).text();
      // The Permissions section's list (the mode switch names the Open Channels scopes in its own).
      const list = /<ul class="c2d-list" id="missing-scopes">(.*?)<\/ul>/s.exec(html)?.[1] ?? '';
      return [...list.matchAll(/data-scope="([a-z_]+)"/g)].map((match) => match[1]);
    };
    expect(await missing()).toEqual([]);
    expect((await putSettings(stack, { integrationType: 'open_channels' })).status).toBe(200);
    expect(await missing()).toEqual(['imopenlines', 'imconnector']);
  });

  it('a refused registration (HTTP 200, result.result=false) is reported with what Bitrix24 said', async () => {
    // The fake refuses on its own when the placement handler is missing (bitrix24.md §12.1): the
    // register command leaves our server without it, so the portal answers as it does for a real refusal.
    const withoutHandler: typeof fetch = (input, init) => {
      const body = typeof init?.body === 'string' && String(input).endsWith('/batch') ? init.body.replace(/PLACEMENT_HANDLER(%5D)?=/g, 'NOT_A_FIELD$1=') : init?.body;
      return fetch(input, { ...init, body });
    };
    stack = await startStack({ fetch: withoutHandler });
    await installAndConfigure(stack, { defaultCountry: 'RU' });
    const response = await putSettings(stack, { integrationType: 'open_channels' });
    expect(response.status).toBe(200);
    const view = (await response.json()) as { registration: { ok: boolean; error?: string }; integrationType: string };
    expect(view.integrationType).toBe('open_channels');
    expect(view.registration).toEqual({ ok: false, error: 'Bitrix24 refused to register the Chat2Desk connector: HANDLER_URL_REQUIRED Placement handler is not specified' });
    expect(stack.b24.connectors.size).toBe(0);
  });

  it('switching back deactivates every connected line, unregisters the connector and unbinds its events', async () => {
    await openChannelsPortal();
    const page = await openPage();
    expect((await writeLine(page.token!, 1, 'PUT', { options: byChannels })).status).toBe(200);
    expect(stack.b24.connectorLines.get(`${CONNECTOR_ID} 1`)?.active).toBe(true);
    const back = await putSettings(stack, { integrationType: 'chat2desk' });
    expect(((await back.json()) as { connector: unknown }).connector).toEqual({ ok: true });
    const deactivations = stack.b24.calls.filter((call) => call.method === 'imconnector.activate' && String(call.params.ACTIVE) === '0');
    expect(deactivations).toHaveLength(1);
    expect(stack.b24.connectors.has(CONNECTOR_ID)).toBe(false);
    expect(connectorEvents()).toEqual([]);
    expect(await lineRows()).toEqual([]);
  });

  it('a switch back Bitrix24 refuses keeps the portal in Open Channels mode, and saving again finishes it', async () => {
    await openChannelsPortal();
    stack.b24.failNext('imconnector.unregister', { status: 403, error: 'ACCESS_DENIED', error_description: 'Access denied' });
    const refused = await putSettings(stack, { integrationType: 'chat2desk', defaultCountry: 'MX' });
    expect(refused.status).toBe(502);
    expect(((await refused.json()) as { error: string }).error).toContain('stays in Open Channels mode');
    const kept = (await (await fetch(`${stack.server.url}/api/settings`, { headers: adminHeaders(stack) })).json()) as { integrationType: string; defaultCountry: string };
    expect(kept).toMatchObject({ integrationType: 'open_channels', defaultCountry: 'RU' });
    expect(stack.b24.connectors.has(CONNECTOR_ID)).toBe(true);
    const again = await putSettings(stack, { integrationType: 'chat2desk' });
    expect(again.status).toBe(200);
    expect(stack.b24.connectors.has(CONNECTOR_ID)).toBe(false);
    expect(connectorEvents()).toEqual([]);
  });

  it('the settings page refuses a forged application token, a non-admin, an unknown line and another connector', async () => {
    await openChannelsPortal();
    const forged = await openPage({ applicationToken: 'not-the-token' });
    expect(forged.status).toBe(401);
    expect(forged.token).toBeUndefined();
    const employee = stack.b24.seedUser({ name: 'Employee' });
    const notAdmin = await openPage({ userId: employee });
    expect(notAdmin.status).toBe(403);
    expect(notAdmin.error).toContain('Only a Bitrix24 administrator');
    expect(notAdmin.token).toBeUndefined();
    const unknownLine = await openPage({ line: 999 });
    expect(unknownLine.status).toBe(404);
    expect(unknownLine.error).toContain('line 999 does not exist');
    const foreign = await openPage({ connector: 'someone_else' });
    expect(foreign.status).toBe(400);
    expect(foreign.error).toContain('CONNECTOR must be chat2desk');
    // The portal cannot say whether the line exists: a refusal page, no token.
    stack.b24.failNext('imopenlines.config.get', { status: 403, error: 'ACCESS_DENIED', error_description: 'Access denied' });
    const unasked = await openPage();
    expect(unasked.status).toBe(502);
    expect(unasked.error).toContain('Bitrix24 could not be asked about this line');
    expect(unasked.token).toBeUndefined();
  });

  it('connecting saves the options, activates the line and sets its connection data; the page shows them again', async () => {
    await openChannelsPortal();
    const page = await openPage();
    expect(page.status).toBe(200);
    expect(page.connected).toBe(false);
    expect(page.html).toContain('Sales WhatsApp');
    const saved = await writeLine(page.token!, 1, 'PUT', { options: byChannels });
    expect(saved.status).toBe(200);
    expect(await saved.json()).toEqual({ connected: true, options: byChannels });
    const state = stack.b24.connectorLines.get(`${CONNECTOR_ID} 1`)!;
    expect(state).toMatchObject({ active: true, connected: true });
    expect(state.data).toMatchObject({ ID: `${CONNECTOR_ID}_1`, NAME: 'Chat2Desk' });
    expect((await lineRows()).map((row) => ({ lineId: row.lineId, options: JSON.parse(row.options) as unknown }))).toEqual([{ lineId: 1, options: byChannels }]);
    const again = await openPage();
    expect(again.connected).toBe(true);
    expect(again.options).toEqual(byChannels);
  });

  it('refuses bad options with a 400 naming the field, and changes nothing', async () => {
    await openChannelsPortal();
    const { token } = await openPage();
    const cases: Array<[unknown, string]> = [
      [{ ...byChannels, route: { kind: 'channels', channelIds: [] } }, 'route.channelIds must name at least one channel'],
      [{ ...byChannels, route: { kind: 'channels', channelIds: [5] } }, 'route.channelIds: 5 is not a channel of this Chat2Desk account'],
      [{ ...byChannels, route: { kind: 'everything' } }, 'route.kind must be default, channels or tags'],
      [{ ...byChannels, chatPer: 'dialog' }, 'chatPer must be client or request'],
      [{ ...byChannels, signature: 'yes' }, 'signature must be true or false'],
      [{ ...byChannels, tagFilter: { mode: 'only', tagIds: [], sendPreviousAfterTagging: false } }, 'tagFilter.tagIds must name at least one tag'],
      [{ ...byChannels, tagFilter: { mode: 'except', tagIds: [1], sendPreviousAfterTagging: false } }, 'tagFilter.tagIds: 1 is not a tag of this Chat2Desk account'],
      [{ ...byChannels, extra: true }, 'line options must be an object'],
    ];
    for (const [options, error] of cases) {
      const response = await writeLine(token!, 1, 'PUT', { options });
      expect(response.status, error).toBe(400);
      expect(((await response.json()) as { error: string }).error).toContain(error);
    }
    expect((await writeLine(token!, 'abc', 'PUT', { options: byChannels })).status).toBe(400);
    const unknownLine = await writeLine(token!, 999, 'PUT', { options: byChannels });
    expect(unknownLine.status).toBe(404);
    expect(await lineRows()).toEqual([]);
    expect(stack.b24.calls.filter((call) => call.method === 'imconnector.activate')).toHaveLength(0);
  });

  it('a non-admin page token cannot write, and an employee’s own Bitrix24 token neither', async () => {
    await openChannelsPortal();
    const employee = stack.b24.seedUser({ name: 'Employee' });
    const response = await fetch(`${stack.server.url}/api/connector/lines/1`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${stack.b24.issueAuth(employee).access_token}`, 'x-bitrix24-member-id': stack.b24.memberId, 'content-type': 'application/json' },
      body: JSON.stringify({ options: byChannels }),
    });
    expect(response.status).toBe(403);
    expect(await lineRows()).toEqual([]);
  });

  it('disconnecting deactivates the line and forgets it', async () => {
    await openChannelsPortal();
    const { token } = await openPage();
    expect((await writeLine(token!, 1, 'PUT', { options: byChannels })).status).toBe(200);
    const disconnected = await writeLine(token!, 1, 'DELETE');
    expect(disconnected.status).toBe(200);
    expect(stack.b24.connectorLines.get(`${CONNECTOR_ID} 1`)?.active).toBe(false);
    expect(await lineRows()).toEqual([]);
  });

  it('a line deleted in Bitrix24 is forgotten; the repeat is harmless; a forged delete of a live line changes nothing', async () => {
    await openChannelsPortal();
    const { token } = await openPage();
    expect((await writeLine(token!, 1, 'PUT', { options: byChannels })).status).toBe(200);
    // Forged: the application token is right (it is on every page) but the line still exists.
    const forged = await postForm(`${stack.server.url}/bitrix24/events`, stack.b24.eventBody('ONIMCONNECTORLINEDELETE', 1));
    expect(forged.status).toBe(200);
    expect(await lineRows()).toHaveLength(1);
    const replies = await stack.b24.deleteOpenLine(1);
    expect(replies.map((reply) => reply.status)).toEqual([200]);
    expect(await lineRows()).toEqual([]);
    const repeat = await postForm(`${stack.server.url}/bitrix24/events`, stack.b24.eventBody('ONIMCONNECTORLINEDELETE', 1));
    expect(repeat.status).toBe(200);
  });

  it('our connector disconnected from a line in Bitrix24 is forgotten there; another connector’s status delete, or a forged one, changes nothing', async () => {
    await openChannelsPortal();
    const { token } = await openPage();
    expect((await writeLine(token!, 1, 'PUT', { options: byChannels })).status).toBe(200);
    // Another connector's disconnection is not ours, even while Bitrix24 would say ours is not active on the line.
    const ours = stack.b24.connectorLines.get(`${CONNECTOR_ID} 1`)!;
    ours.active = false;
    const foreign = await postForm(`${stack.server.url}/bitrix24/events`, stack.b24.eventBody('ONIMCONNECTORSTATUSDELETE', { connector: 'other', line: 1 }));
    expect(foreign.status).toBe(200);
    expect(await lineRows()).toHaveLength(1);
    ours.active = true;
    // A forged one for ours while the connector is still active on the line changes nothing either.
    const forged = await postForm(`${stack.server.url}/bitrix24/events`, stack.b24.eventBody('ONIMCONNECTORSTATUSDELETE', { connector: CONNECTOR_ID, line: 1 }));
    expect(forged.status).toBe(200);
    expect(await lineRows()).toHaveLength(1);
    const replies = await stack.b24.disconnectConnector({ connector: CONNECTOR_ID, line: 1 });
    expect(replies.map((reply) => reply.status)).toEqual([200]);
    expect(await lineRows()).toEqual([]);
  });

  it('the fake portal takes connector parameters only as Bitrix24 spells them (upper-case), as the real one does', async () => {
    await openChannelsPortal();
    const call = async (method: string, params: Record<string, unknown>) => {
      const response = await fetch(`${stack.b24.clientEndpoint}${method}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...params, auth: stack.b24.issueAuth(1).access_token }),
      });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    expect(await call('imconnector.activate', { connector: CONNECTOR_ID, line: 1, active: 1 })).toMatchObject({ status: 400, body: { error: 'ERROR_ARGUMENT' } });
    expect(await call('imconnector.activate', { CONNECTOR: CONNECTOR_ID, LINE: 1, ACTIVE: 1 })).toMatchObject({ status: 200, body: { result: true } });
  });

  it('a forged status delete does not drop a line whose connector is only in error (STATUS false, still CONFIGURED)', async () => {
    await openChannelsPortal();
    const { token } = await openPage();
    expect((await writeLine(token!, 1, 'PUT', { options: byChannels })).status).toBe(200);
    // imconnector.set.error lowers STATUS ("configured and without an error"); the connection is still there.
    stack.b24.connectorLines.get(`${CONNECTOR_ID} 1`)!.error = true;
    const forged = await postForm(`${stack.server.url}/bitrix24/events`, stack.b24.eventBody('ONIMCONNECTORSTATUSDELETE', { connector: CONNECTOR_ID, line: 1 }));
    expect(forged.status).toBe(200);
    expect(await lineRows()).toHaveLength(1);
  });

  it('mode switch back and forth with work in flight: a job queued in each mode before each switch finishes as it was queued, once; closed dialogs make records only in Chat2Desk mode', async () => {
    stack = await startStack();
    await installAndConfigure(stack, { defaultCountry: 'RU', episodesEnabled: true });
    const jobOf = async (kind: string, dedupKey: string) =>
      (await stack.db.row('select state, return_values as returnValues from jobs where kind = ? and dedup_key = ?', kind, dedupKey)) as
        | { state: string; returnValues: string | null }
        | undefined;
    const episodeJob = async (requestId: number) => await jobOf(CLOSE_EPISODE_KIND, `episode:${requestId}`);
    const episode = (phone: string) => {
      const { client, dialog } = stack.c2d.seedClient({ phone, name: 'Anna', transport: 'whatsapp', withDialog: 'open' });
      stack.c2d.receiveMessage({ clientId: client.id as number, text: 'Hello' });
      return stack.c2d.closeDialog(dialog!.id as number);
    };
    const leads = () => stack.b24.crm.leads.size;
    /** A closed dialog queued in Chat2Desk mode, held at its first Bitrix24 call while `switchMode` runs; it still makes its one record. */
    const episodeAcrossSwitch = async (phone: string, switchMode: () => Promise<void>) => {
      const held = stack.b24.hold({ rest: 'batch' });
      const closed = episode(phone);
      expect(await stack.c2d.deliverWebhook(closed.closeRequest)).toEqual([200]);
      expect(await episodeJob(closed.requestId)).toBeDefined();
      await held.arrived;
      const before = leads();
      await switchMode();
      held.release();
      const finished = await eventually(
        async () => ((await episodeJob(closed.requestId))?.state === 'done' ? episodeJob(closed.requestId) : undefined),
        20_000,
        'the queued episode',
      );
      expect(JSON.parse(finished.returnValues!)).toMatchObject({ status: 'done', created: true });
      expect(leads()).toBe(before + 1);
    };
    const toOpenChannels = async () => {
      const switched = await putSettings(stack, { integrationType: 'open_channels' });
      expect(switched.status).toBe(200);
      expect(((await switched.json()) as { registration: unknown }).registration).toEqual({ ok: true });
    };
    /** In Open Channels mode a closed dialog is acknowledged (stored before the answer) and starts no job. */
    const closesMakeNothing = async (phone: string) => {
      const after = episode(phone);
      expect(await stack.c2d.deliverWebhook(after.closeRequest)).toEqual([200]);
      expect(await stack.c2d.deliverWebhook(after.closeDialog)).toEqual([200]);
      expect(await episodeJob(after.requestId)).toBeUndefined();
    };

    // 1. Chat2Desk mode → Open Channels, with a closed dialog in flight.
    await episodeAcrossSwitch('79160000001', toOpenChannels);
    await closesMakeNothing('79160000002');

    // 2. Open Channels → Chat2Desk, with an operator's answer in flight: the client wrote (inbound put it
    // in line 1's chat), the operator answered in Bitrix24, and Chat2Desk's answer to our send is held.
    const { token } = await openPage();
    expect((await writeLine(token!, 1, 'PUT', { options: DEFAULT_LINE_OPTIONS })).status).toBe(200);
    const { client } = stack.c2d.seedClient({ phone: '79160000003', name: 'Maria', transport: 'whatsapp', withDialog: 'open' });
    const chatId = `c${client.id}`;
    expect(await stack.c2d.deliverWebhook(stack.c2d.receiveMessage({ clientId: client.id as number, text: 'Is my order ready?' }).webhook)).toEqual([200]);
    await eventually(() => stack.b24.openLineMessages(1, chatId).length === 1, 15_000, 'the client message in the Open Channel');
    const held = stack.c2d.holdNext({ method: 'POST', path: '/messages' });
    const written = await stack.b24.operatorWrites({ line: 1, externalChatId: chatId, text: 'Yes, it is' });
    expect(written.replies.map((reply) => reply.status)).toEqual([200]);
    await held.arrived;
    const back = await putSettings(stack, { integrationType: 'chat2desk' });
    expect(back.status).toBe(200);
    expect(stack.b24.connectors.has(CONNECTOR_ID)).toBe(false);
    held.release();
    await stack.server.idle();
    const answers = sentMessages(stack).filter((call) => (call.body as { external_id?: string }).external_id === `b24ol:${written.imMessageId}`);
    expect(answers).toHaveLength(1);
    const outbound = async () => (await stack.db.rows("select state, last_error as lastError from jobs where kind = 'ol_outbound'")) as Array<{ state: string }>;
    await eventually(async () => (await outbound())[0]?.state === 'done', 20_000, `the answer's job done (${JSON.stringify(await outbound())})`).catch(async () =>
      expect(await outbound()).toEqual([{ state: 'done' }]),
    );
    // The event log names this work in the admin's words, under its own kind.
    const log = (await (await fetch(`${stack.server.url}/api/event-log?kind=open_channels`, { headers: adminHeaders(stack) })).json()) as {
      entries: Array<{ kind: string; title: string; status: string; summary: string }>;
    };
    expect(log.entries.map((entry) => [entry.kind, entry.title, entry.status])).toEqual([
      ['open_channels', 'Open Channel message to the client', 'done'],
      ['open_channels', 'Chat2Desk message to Open Channels', 'done'],
    ]);
    // The client has the answer; the line it came from is gone, so Bitrix24 cannot be told (and that is no failure).
    expect(log.entries[0]!.summary).toContain('Bitrix24 was not told it was delivered: line 1 is no longer connected to Chat2Desk');

    // 3. Chat2Desk mode again: closed dialogs make records; one in flight across the next switch still does.
    await episodeAcrossSwitch('79160000004', toOpenChannels);
    await closesMakeNothing('79160000005');
  });

  describe('mode-switch races (README "Open Channels mode")', () => {
    const storedSettings = async () =>
      (await (await fetch(`${stack.server.url}/api/settings`, { headers: adminHeaders(stack) })).json()) as {
        integrationType: string;
        defaultCountry: string;
        openLines: unknown[];
      };

    it('a save begun in Open Channels mode (re-registering the connector) and a switch back run one after the other: the switch is not undone, the connector stays away', async () => {
      await openChannelsPortal();
      // A save of another field, held at its registration batch (which registers the connector again).
      const held = stack.b24.hold({ rest: 'batch', command: 'imconnector.register' });
      const slow = putSettings(stack, { defaultCountry: 'MX' });
      await held.arrived;
      const back = putSettings(stack, { integrationType: 'chat2desk' });
      held.release();
      expect((await slow).status).toBe(200);
      expect((await back).status).toBe(200);
      expect(await storedSettings()).toMatchObject({ integrationType: 'chat2desk', defaultCountry: 'MX', openLines: [] });
      expect(stack.b24.connectors.has(CONNECTOR_ID)).toBe(false);
      expect(connectorEvents()).toEqual([]);
    });

    it('a line written on the connector page while the switch back runs waits for it and is refused with 409; nothing stays connected', async () => {
      await openChannelsPortal();
      const page = await openPage();
      expect((await writeLine(page.token!, 1, 'PUT', { options: DEFAULT_LINE_OPTIONS })).status).toBe(200);
      // The switch back has read the lines and deactivated line 1; it waits at imconnector.unregister while
      // the admin, on the connector page still open, saves line 1 again.
      const held = stack.b24.hold({ rest: 'imconnector.unregister' });
      const back = putSettings(stack, { integrationType: 'chat2desk' });
      await held.arrived;
      const during = writeLine(page.token!, 1, 'PUT', { options: DEFAULT_LINE_OPTIONS });
      held.release();
      expect((await back).status).toBe(200);
      const refused = await during;
      expect(refused.status).toBe(409);
      expect(((await refused.json()) as { error: string }).error).toContain('not in Open Channels mode');
      expect(await lineRows()).toEqual([]);
      expect(stack.b24.calls.filter((call) => call.method === 'imconnector.activate' && String(call.params.ACTIVE) === '1')).toHaveLength(1);
      expect(await storedSettings()).toMatchObject({ integrationType: 'chat2desk', openLines: [] });
    });

    it('switching back finishes waiting Open Channels inbound messages as not sent, saying they are in Chat2Desk', async () => {
      await openChannelsPortal();
      const inbound = async () =>
        (await stack.db.rows("select state, attempts, return_values as returnValues from jobs where kind = 'ol_inbound'")) as Array<{
          state: string;
          attempts: number;
          returnValues: string | null;
        }>;
      // No line is connected: the message is held (tried once, waiting for a line).
      const { client } = stack.c2d.seedClient({ phone: '79160000011', name: 'Olga', transport: 'whatsapp', withDialog: 'open' });
      expect(await stack.c2d.deliverWebhook(stack.c2d.receiveMessage({ clientId: client.id as number, text: 'Anyone there?' }).webhook)).toEqual([200]);
      await eventually(
        async () => (await inbound()).length === 1 && (await inbound())[0]!.state === 'queued' && (await inbound())[0]!.attempts > 0,
        15_000,
        'the held inbound message',
      );
      expect((await putSettings(stack, { integrationType: 'chat2desk' })).status).toBe(200);
      const [finished] = await inbound();
      expect(finished!.state).toBe('done');
      expect(JSON.parse(finished!.returnValues!)).toEqual({ status: 'failed', error: expect.stringContaining('the message is in Chat2Desk, where operators now work') });
    });
  });
});
