import { afterEach, describe, expect, it } from 'vitest';
import { TabTokens } from '../src/dialogs/tab-token.js';
import { NO_WORKSPACE_ACCESS } from '../src/dialogs/viewer.js';
import type { DialogSummary } from '../src/dialogs/dialog-reads.js';
import { NOT_ALL_SCOPE, WORKSPACE_DEPARTMENTS_TTL_MS } from '../src/dialogs/workspace.js';
import { NOTIFY_INCOMING_KIND } from '../src/jobs/kinds/notify-incoming.js';
import { eventuallyOnClock, noRetryWait, TestClock } from './support/clock.js';
import { adminHeaders, APP_SECRET, installAndConfigure, postForm, putSettings, startStack, type Stack } from './support/stack.js';

interface ListAnswer {
  dialogs: DialogSummary[];
  more: boolean;
  view: string;
}

/**
 * The Chat workspace's server side (README "The Chat workspace"): who sees which dialogs, the
 * lists and the search, the settings that widen access, and where notification links open.
 */
describe('the Chat workspace', () => {
  let stack: Stack;
  let clock: TestClock;
  afterEach(() => stack?.close());

  /** Chat2Desk operator 617 ↔ admin user 1, 311416 ↔ user 2 (the same e-mails in both fakes). */
  const ADMIN_OPERATOR = 617;
  const MANAGER_OPERATOR = 311416;

  interface Seeded {
    anna: number;
    boris: number;
    clara: number;
    percent: number;
    percentLookalike: number;
    underscore: number;
    underscoreLookalike: number;
    cyrillic: number;
  }

  /** A dialog of a client who wrote (so Chat2Desk's dialog names its client), assigned to `operatorId`. */
  function dialogOf(phone: string, name: string, operatorId: number | null, state: 'open' | 'closed' = 'open'): number {
    const { client, dialog } = stack.c2d.seedClient({ phone, name, withDialog: 'open' });
    stack.c2d.receiveMessage({ clientId: client.id as number, text: `hello from ${name}` });
    const dialogId = dialog!.id as number;
    (stack.c2d.account().dialogs.find((item) => item.id === dialogId) as Record<string, unknown>).operator_id = operatorId;
    if (state === 'closed') stack.c2d.closeDialog(dialogId);
    return dialogId;
  }

  /** Clients and dialogs seeded before Chat2Desk is connected, so the first cache fill knows every name. */
  async function setUp(settings: Record<string, unknown> = {}): Promise<Seeded> {
    clock = new TestClock();
    sessions.clear();
    stack = await startStack({ clock, retrySleep: noRetryWait });
    const seeded: Seeded = {
      anna: dialogOf('79161110001', 'Anna Petrova', MANAGER_OPERATOR),
      boris: dialogOf('79161110002', 'Boris', ADMIN_OPERATOR),
      clara: dialogOf('79161110003', 'Clara', MANAGER_OPERATOR, 'closed'),
      percent: dialogOf('79161110004', 'Sale 100% off', null),
      percentLookalike: dialogOf('79161110005', 'Sale 1000 off', null),
      underscore: dialogOf('79161110006', 'a_b', null),
      underscoreLookalike: dialogOf('79161110007', 'axb', null),
      cyrillic: dialogOf('79161110008', 'Анна Смирнова', null),
    };
    await installAndConfigure(stack, settings);
    return seeded;
  }

  /** One Bitrix24 session per user: the portal is asked who a token is once a minute, within a small share of its budget. */
  const sessions = new Map<number, ReturnType<Stack['b24']['issueAuth']>>();

  /** Bitrix24 opens the app page for this user (docs/protocols.md B13); the page's token and data. */
  async function openApp(userId: number, fields: Record<string, string> = {}): Promise<{ status: number; token: string; data: Record<string, unknown> }> {
    const auth = sessions.get(userId) ?? stack.b24.issueAuth(userId);
    sessions.set(userId, auth);
    const body = new URLSearchParams({
      AUTH_ID: auth.access_token,
      AUTH_EXPIRES: '3600',
      REFRESH_ID: auth.refresh_token,
      SERVER_ENDPOINT: auth.server_endpoint,
      APPLICATION_TOKEN: stack.b24.applicationToken,
      APPLICATION_SCOPE: stack.b24.scope,
      member_id: stack.b24.memberId,
      status: 'L',
      PLACEMENT: 'DEFAULT',
      PLACEMENT_OPTIONS: '',
      ...fields,
    });
    const response = await postForm(`${stack.server.url}/app`, body.toString(), `DOMAIN=${stack.b24.domain}&PROTOCOL=1&LANG=en&APP_SID=abc`);
    const html = await response.text();
    const json = /<script type="application\/json" id="page-data">(.*?)<\/script>/s.exec(html)?.[1];
    const data = json ? (JSON.parse(json) as Record<string, unknown>) : {};
    return { status: response.status, token: String(data.token ?? ''), data };
  }

  async function list(token: string, query: Record<string, string> = {}): Promise<{ status: number; body: ListAnswer & { error?: string; code?: string } }> {
    const response = await fetch(`${stack.server.url}/api/workspace/dialogs?${new URLSearchParams(query)}`, { headers: { authorization: `Bearer ${token}` } });
    return { status: response.status, body: (await response.json()) as ListAnswer & { error?: string; code?: string } };
  }

  const ids = (answer: { body: ListAnswer }) => answer.body.dialogs.map((dialog) => dialog.id);

  it('an admin lists open and all dialogs, newest first, as dialog summaries; "mine" holds their own operator’s', async () => {
    const seeded = await setUp();
    const { token } = await openApp(1);
    const all = await list(token, { view: 'all' });
    expect(all.status).toBe(200);
    const every = Object.values(seeded);
    expect(ids(all)).toEqual([...every].sort((a, b) => b - a));
    expect(all.body).toMatchObject({ more: false, view: 'all' });
    const anna = all.body.dialogs.find((dialog) => dialog.id === seeded.anna)!;
    expect(anna).toMatchObject({
      state: 'open',
      client: { name: 'Anna Petrova', phone: '79161110001' },
      channel: { id: 17404, name: 'Sales WhatsApp' },
      transport: 'whatsapp',
      lastMessage: { text: 'hello from Anna Petrova', type: 'from_client' },
      // No operatorMap: the operator's Bitrix24 user is the one with the same e-mail, as in the CRM tab.
      operator: { id: MANAGER_OPERATOR, name: 'John Doe', bitrixUserId: 2 },
      chat2deskUrl: `${new URL(stack.c2d.url).origin}/chat/all?dialogID=${seeded.anna}`,
    });
    expect(anna.lastMessage!.at).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.000Z$/);

    const open = await list(token, { view: 'open' });
    expect(open.status).toBe(200);
    expect(ids(open)).not.toContain(seeded.clara);
    expect(ids(open)).toHaveLength(every.length - 1);
    expect(open.body.dialogs.every((dialog) => dialog.state === 'open')).toBe(true);

    const mine = await list(token, { view: 'mine' });
    expect(ids(mine)).toEqual([seeded.boris]);
    // Chat2Desk did the filtering: one request, newest first, with its limit.
    expect(stack.c2d.calls.filter((call) => call.path === '/dialogs').map((call) => call.query)).toContainEqual({
      operator_id: String(ADMIN_OPERATOR),
      order: 'desc',
      limit: '50',
      offset: '0',
    });
  });

  it('a dialog whose client Chat2Desk no longer has is listed without one, and opens the same way', async () => {
    await setUp();
    const lost = dialogOf('79161110009', 'Gone', null);
    const clients = stack.c2d.account().clients;
    clients.splice(
      clients.findIndex((client) => client.phone === '79161110009'),
      1,
    );
    const { token } = await openApp(1);
    const listed = (await list(token, { view: 'all' })).body.dialogs.find((dialog) => dialog.id === lost);
    expect(listed).toMatchObject({ id: lost, client: null });
    const opened = await fetch(`${stack.server.url}/api/dialogs/${lost}`, { headers: { authorization: `Bearer ${token}` } });
    expect(opened.status).toBe(200);
    expect(await opened.json()).toEqual(listed);
  });

  it('a mapped user who is not an admin sees only their operator’s dialogs, and is refused open and all', async () => {
    const seeded = await setUp();
    const { token } = await openApp(2);
    const mine = await list(token);
    expect(mine.status).toBe(200);
    expect(mine.body.view).toBe('mine');
    expect(ids(mine)).toEqual([seeded.clara, seeded.anna]);
    for (const view of ['open', 'all']) {
      const refused = await list(token, { view });
      expect(refused.status).toBe(403);
      expect(refused.body.error).toBe(NOT_ALL_SCOPE);
    }
  });

  it('a user who is neither mapped nor listed sees nothing', async () => {
    await setUp();
    const stranger = stack.b24.seedUser({ departments: [5] });
    const { token } = await openApp(stranger);
    for (const view of ['mine', 'open', 'all']) {
      const refused = await list(token, { view });
      expect(refused.status).toBe(403);
      expect(refused.body.error).toBe(NO_WORKSPACE_ACCESS);
    }
  });

  it('a listed user and a member of a listed department see all; leaving the list or the department counts (the department within minutes)', async () => {
    const seeded = await setUp();
    const listed = stack.b24.seedUser();
    const member = stack.b24.seedUser({ departments: [5, 7] });
    const outsider = stack.b24.seedUser({ departments: [8] });
    expect((await putSettings(stack, { workspaceUsers: [listed], workspaceDepartments: [7] })).status).toBe(200);
    const [listedPage, memberPage, outsiderPage] = await Promise.all([openApp(listed), openApp(member), openApp(outsider)]);
    for (const page of [listedPage, memberPage]) {
      const all = await list(page.token, { view: 'all' });
      expect(all.status).toBe(200);
      expect(ids(all)).toContain(seeded.boris);
      // Seeing everything gives no dialogs of one's own: they have no operator.
      expect(await list(page.token, { view: 'mine' })).toMatchObject({ status: 403, body: { code: 'not_mapped' } });
    }
    expect((await list(outsiderPage.token, { view: 'all' })).status).toBe(403);

    // An HR move in the portal: seen once the remembered departments are older than the cache's life.
    stack.b24.setUserDepartments(member, [8]);
    stack.b24.setUserDepartments(outsider, [7]);
    clock.advance(WORKSPACE_DEPARTMENTS_TTL_MS + 1);
    expect((await list(memberPage.token, { view: 'all' })).status).toBe(403);
    expect((await list(outsiderPage.token, { view: 'all' })).status).toBe(200);

    // Taken off the list: refused on the next request.
    expect((await putSettings(stack, { workspaceUsers: [] })).status).toBe(200);
    expect((await list(listedPage.token, { view: 'all' })).status).toBe(403);
  });

  it('when the portal cannot say who is in a listed department, the user is told so (502) rather than shown more or less; the next request asks again', async () => {
    await setUp();
    const member = stack.b24.seedUser({ departments: [7] });
    expect((await putSettings(stack, { workspaceDepartments: [7] })).status).toBe(200);
    const { token } = await openApp(member);
    // Opening the page read the departments (its Chat section's views); the next ask comes after they are stale.
    clock.advance(WORKSPACE_DEPARTMENTS_TTL_MS + 1);
    stack.b24.failNext('user.get', { status: 403, error: 'ACCESS_DENIED', error_description: 'Access denied' });
    const failed = await list(token, { view: 'all' });
    expect(failed.status).toBe(502);
    expect(failed.body.error).toMatch(/^Bitrix24 could not be asked for your departments: .*try again$/);
    expect((await list(token, { view: 'all' })).status).toBe(200);
  });

  it('searches by phone (any common spelling) and by name in any case, with % and _ in a name matching only themselves', async () => {
    const seeded = await setUp();
    const { token } = await openApp(1);
    for (const q of ['79161110002', '+7 (916) 111-00-02', '+7 916 111 00 02']) {
      const found = await list(token, { view: 'all', q });
      expect(found.status).toBe(200);
      expect(ids(found)).toEqual([seeded.boris]);
    }
    expect(ids(await list(token, { view: 'all', q: 'Petrova' }))).toEqual([seeded.anna]);
    expect(ids(await list(token, { view: 'all', q: 'petROVA' }))).toEqual([seeded.anna]);
    expect(ids(await list(token, { view: 'all', q: 'анна' }))).toEqual([seeded.cyrillic]);
    expect(ids(await list(token, { view: 'all', q: '100%' }))).toEqual([seeded.percent]);
    expect(ids(await list(token, { view: 'all', q: 'a_b' }))).toEqual([seeded.underscore]);
    expect(ids(await list(token, { view: 'all', q: '%' }))).toEqual([seeded.percent]);
    expect(ids(await list(token, { view: 'all', q: 'nobody like this' }))).toEqual([]);
    // The view still applies to what a search finds.
    expect(ids(await list(token, { view: 'open', q: 'Clara' }))).toEqual([]);
    expect(ids(await list(token, { view: 'all', q: 'Clara' }))).toEqual([seeded.clara]);
  });

  it('what a search finds is filtered by the viewer’s scope', async () => {
    const seeded = await setUp();
    const { token } = await openApp(2);
    expect(ids(await list(token, { q: '79161110001' }))).toEqual([seeded.anna]);
    // Boris's dialog belongs to another operator: not found, by phone or by name.
    expect(await list(token, { q: '79161110002' })).toMatchObject({ status: 200, body: { dialogs: [] } });
    expect(await list(token, { q: 'Boris' })).toMatchObject({ status: 200, body: { dialogs: [] } });
    expect((await list(token, { view: 'all', q: 'Boris' })).status).toBe(403);
  });

  it('pages with Chat2Desk’s limit and offset', async () => {
    await setUp();
    for (let n = 0; n < 53; n++) stack.c2d.seedClient({ phone: `7916222${String(n).padStart(4, '0')}`, withDialog: 'open' });
    const { token } = await openApp(1);
    const first = await list(token, { view: 'all' });
    expect(first.body.dialogs).toHaveLength(50);
    expect(first.body.more).toBe(true);
    const second = await list(token, { view: 'all', offset: '50' });
    expect(second.body.dialogs).toHaveLength(53 + 8 - 50);
    expect(second.body.more).toBe(false);
    expect(new Set([...ids(first), ...ids(second)]).size).toBe(61);
  });

  it('refuses bad queries and a CRM tab’s token with a clear message', async () => {
    await setUp();
    const { token } = await openApp(1);
    expect(await list(token, { view: 'everything' })).toMatchObject({ status: 400, body: { error: 'view must be one of: mine, open, all' } });
    expect(await list(token, { view: 'all', offset: '-1' })).toMatchObject({ status: 400, body: { error: expect.stringMatching(/^offset must be a whole number/) } });
    expect(await list(token, { view: 'all', q: 'x'.repeat(101) })).toMatchObject({ status: 400, body: { error: 'q is longer than 100 characters' } });
    const portal = (await stack.server.portals.get(stack.b24.memberId))!;
    const tab = new TabTokens(APP_SECRET, clock).issue({
      memberId: portal.memberId,
      userId: 1,
      generation: portal.installedAt,
      admin: true,
      checkedAt: clock.now(),
      scope: { kind: 'record', entityTypeId: 2, entityId: 1, phones: ['79161110001'] },
    });
    expect(await list(tab.token, { view: 'mine' })).toMatchObject({ status: 403, body: { error: "The Chat workspace takes the app page's token, not a CRM tab's" } });
  });

  it('settings: the workspace keys are validated with errors naming them, and a refusal changes nothing', async () => {
    await setUp();
    const headers = adminHeaders(stack);
    const read = async () => (await (await fetch(`${stack.server.url}/api/settings`, { headers })).json()) as Record<string, unknown>;
    const put = (change: Record<string, unknown>) => fetch(`${stack.server.url}/api/settings`, { method: 'PUT', headers, body: JSON.stringify(change) });
    expect(await read()).toMatchObject({ workspaceUsers: [], workspaceDepartments: [], openLinksIn: 'chat2desk' });
    const refusals: Array<[Record<string, unknown>, string]> = [
      [{ workspaceUsers: 'everyone' }, 'workspaceUsers must be a list of Bitrix24 user ids'],
      [{ workspaceUsers: [3, 'x'] }, 'workspaceUsers items must be a number'],
      [{ workspaceUsers: [0] }, 'workspaceUsers items must be positive'],
      [{ workspaceDepartments: [1.5] }, 'workspaceDepartments items must be a whole number'],
      [{ workspaceDepartments: Array.from({ length: 101 }, (_, index) => index + 1) }, 'workspaceDepartments has more than 100 entries'],
      [{ workspaceUsers: Array.from({ length: 501 }, (_, index) => index + 1) }, 'workspaceUsers has more than 500 entries'],
      [{ openLinksIn: 'web' }, 'openLinksIn must be one of: chat2desk, app'],
    ];
    for (const [change, message] of refusals) {
      const refused = await put({ ...change, transcript: false });
      expect(refused.status).toBe(400);
      expect(((await refused.json()) as { error: string }).error).toContain(message);
    }
    expect(await read()).toMatchObject({ workspaceUsers: [], workspaceDepartments: [], openLinksIn: 'chat2desk', transcript: true });
    expect((await put({ workspaceUsers: [4, 3, 4], workspaceDepartments: [7], openLinksIn: 'app' })).status).toBe(200);
    expect(await read()).toMatchObject({ workspaceUsers: [4, 3], workspaceDepartments: [7], openLinksIn: 'app' });
  });

  it('notification links open the dialog in the app when the settings say so, in Chat2Desk otherwise', async () => {
    await setUp({ notifyIncoming: true, openLinksIn: 'app' });
    const { client, dialog } = stack.c2d.seedClient({ phone: '79169990001', name: 'Vera', withDialog: 'open' });
    const dialogId = dialog!.id as number;
    (stack.c2d.account().dialogs.find((item) => item.id === dialogId) as Record<string, unknown>).operator_id = MANAGER_OPERATOR;
    const notified = async (count: number) => {
      const { webhook } = stack.c2d.receiveMessage({ clientId: client.id as number, text: 'hi' });
      expect(await stack.c2d.deliverWebhook(webhook)).toEqual([200]);
      await eventuallyOnClock(
        () => stack.server,
        clock,
        async () => {
          const row = (await stack.db.row("select count(*) as n from jobs where kind = ? and state = 'done'", NOTIFY_INCOMING_KIND)) as { n: number };
          return row.n >= count;
        },
        20_000,
        `${count} notifications`,
      );
      return stack.b24.notifications[count - 1]!.message;
    };
    // The fake portal's app.info names the app's ID 7 (docs/protocols.md B19: the app page's address).
    expect(await notified(1)).toContain(`[url=https://${stack.b24.domain}/marketplace/app/7/?dialog=${dialogId}]Open the dialog in the app[/url]`);
    expect((await putSettings(stack, { openLinksIn: 'chat2desk' })).status).toBe(200);
    expect(await notified(2)).toContain(`[url=${new URL(stack.c2d.url).origin}/chat/all?dialogID=${dialogId}]Open the dialog in Chat2Desk[/url]`);
  });

  it('POST /app hands the page the dialog a link asked for (PLACEMENT_OPTIONS dialog, digits only); anything else is ignored', async () => {
    await setUp();
    const opened = await openApp(2, { PLACEMENT_OPTIONS: JSON.stringify({ dialog: '123', IFRAME: 'Y' }) });
    expect(opened.status).toBe(200);
    expect(opened.data.openDialogId).toBe(123);
    const hostile = [
      'not json',
      '{"dialog":"12x"}',
      '{"dialog":"<script>alert(1)</script>"}',
      '{"dialog":123}',
      '{"dialog":"-5"}',
      '{"dialog":"0"}',
      '["123"]',
      '{"dialog":["123"]}',
      '',
    ];
    for (const options of hostile) {
      const page = await openApp(2, { PLACEMENT_OPTIONS: options });
      expect(page.status, options).toBe(200);
      expect(page.data.openDialogId, options).toBeNull();
    }
  });
});
