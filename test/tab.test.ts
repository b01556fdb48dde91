import { gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { TestClock } from './support/clock.js';
import { openChannelChatOf } from './support/open-channels.js';
import { install, installAndConfigure, postForm, putSettings, startStack, type Stack, type StackOptions } from './support/stack.js';

type OpenChannelChat = { state: 'found'; chatId: number } | { state: 'none' } | { state: 'unknown'; reason: string };

/**
 * The CRM card tab over plain HTTP: binding on install, who may open it (docs/protocols.md B9, B18),
 * the record's phones read as the user in one batch, the tab token's reach, and what a cold cache
 * costs Chat2Desk. The browser side is in tab.browser.test.ts.
 */
describe('the CRM tab', () => {
  let stack: Stack;
  afterEach(() => stack.close());

  async function configured(options: StackOptions = {}, settings: Record<string, unknown> = {}) {
    stack = await startStack(options);
    await installAndConfigure(stack, { defaultCountry: 'RU', ...settings });
  }

  async function openTab(placement: string, id: number | string, options: { userId?: number; applicationToken?: string } = {}) {
    const auth = stack.b24.issueAuth(options.userId ?? 1);
    const request = stack.b24.placementPageRequest(
      placement,
      { ID: String(id), URI: `/crm/deal/details/${id}/` },
      { accessToken: auth.access_token, applicationToken: options.applicationToken },
    );
    const response = await postForm(`${stack.server.url}/tab`, request.body, request.query);
    const html = await response.text();
    const raw = /<script type="application\/json" id="page-data">(.*?)<\/script>/s.exec(html)?.[1];
    const data = raw ? (JSON.parse(raw) as { token?: string; phones?: string[]; error?: string; openChannelChat?: OpenChannelChat }) : {};
    return {
      status: response.status,
      html,
      token: data.token,
      phones: data.phones,
      error: data.error,
      openChannelChat: data.openChannelChat,
      authId: auth.access_token,
      headers: response.headers,
    };
  }

  const get = (path: string, token: string) => fetch(`${stack.server.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  const renew = (token: string, authId: string) =>
    fetch(`${stack.server.url}/api/tab/renew`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ authId }),
    });

  it('is bound on install to lead, deal, contact, company and each smart process card, titled in the portal’s language, and binding again changes nothing', async () => {
    stack = await startStack({ b24: { languageId: 'ru' } });
    stack.b24.seedSmartProcess(183, 'Orders');
    await install(stack);
    await stack.server.idle();
    const handler = `${stack.config.publicUrl}/tab`;
    const bound = () => stack.b24.placements.filter((binding) => binding.handler === handler).map((binding) => binding.placement);
    expect(bound().sort()).toEqual(['CRM_COMPANY_DETAIL_TAB', 'CRM_CONTACT_DETAIL_TAB', 'CRM_DEAL_DETAIL_TAB', 'CRM_DYNAMIC_183_DETAIL_TAB', 'CRM_LEAD_DETAIL_TAB']);
    const deal = stack.b24.placements.find((binding) => binding.placement === 'CRM_DEAL_DETAIL_TAB')!;
    expect(deal.title).toBe('Чаты Chat2Desk');
    expect(deal.langAll).toMatchObject({ en: { TITLE: 'Chat2Desk chats' }, ru: { TITLE: 'Чаты Chat2Desk' }, la: { TITLE: 'Chats de Chat2Desk' } });
    // The portal's placement.get (§9) shows the same.
    const listed = await fetch(`${stack.b24.clientEndpoint}placement.get`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ auth: stack.b24.issueAuth(1).access_token }),
    });
    expect(((await listed.json()) as { result: Array<{ placement: string }> }).result.map((item) => item.placement)).toContain('CRM_DYNAMIC_183_DETAIL_TAB');

    // Installing again (an update re-registers too): nothing bound twice, nothing refused.
    stack.b24.resetCalls();
    await install(stack);
    await stack.server.idle();
    expect(bound()).toHaveLength(5);
    expect(stack.b24.calls.filter((call) => call.method === 'placement.bind')).toHaveLength(0);
  });

  it('registers the robots even when the portal refuses a card tab for good', async () => {
    stack = await startStack();
    stack.b24.failNext('placement.bind', { status: 400, error: 'ERROR_PLACEMENT_MAX_COUNT', error_description: 'Placement max count exceeded' });
    await install(stack);
    await stack.server.idle();
    expect(stack.b24.robots.size).toBeGreaterThan(0);
    expect(stack.b24.placements.map((binding) => binding.placement)).toHaveLength(3);
    expect(stack.logs.join('')).toContain('CRM card tab not bound');
  });

  it('weighs at most 50 KB compressed in our own scripts and styles (the official SDK aside)', async () => {
    await configured();
    const contact = stack.b24.seedContact({ phones: ['+7 916 123-45-67'] });
    const tab = await openTab('CRM_CONTACT_DETAIL_TAB', contact);
    const assets = [...tab.html.matchAll(/(?:href|src)="(\/public\/[^"]+)"/g)].map((match) => match[1]!).filter((path) => !path.includes('b24jssdk'));
    expect(assets.some((path) => path.startsWith('/public/tab.js'))).toBe(true);
    // dialog-view.js is imported by tab.js (an ES module), not named in the page.
    assets.push('/public/dialog-view.js');
    let compressed = 0;
    for (const path of assets) {
      const response = await fetch(`${stack.server.url}${path}`);
      expect(response.status, path).toBe(200);
      compressed += gzipSync(Buffer.from(await response.arrayBuffer())).length;
    }
    expect(compressed).toBeLessThanOrEqual(50_000);
  });

  it('refuses a forged APPLICATION_TOKEN with a page that carries no token', async () => {
    await configured();
    const contact = stack.b24.seedContact({ name: 'Ana', phones: ['+7 916 123-45-67'] });
    const forged = await openTab('CRM_CONTACT_DETAIL_TAB', contact, { applicationToken: 'f'.repeat(32) });
    expect(forged.status).toBe(401);
    expect(forged.token).toBeUndefined();
    expect(forged.html).not.toContain('79161234567');
    const genuine = await openTab('CRM_CONTACT_DETAIL_TAB', contact);
    expect(genuine.status).toBe(200);
    expect(genuine.phones).toEqual(['79161234567']);
    expect(genuine.headers.get('content-security-policy')).toContain(`frame-ancestors ${stack.b24.domain}`);
    expect(genuine.headers.get('x-frame-options')).toBeNull();
    expect(genuine.headers.get('set-cookie')).toBeNull();
  });

  it('takes the record id of PLACEMENT_OPTIONS only as Bitrix24 writes it, in digits', async () => {
    await configured();
    const contact = stack.b24.seedContact({ name: 'Ana', phones: ['+7 916 123-45-67'] });
    for (const odd of [`${contact}e0`, `0x${contact.toString(16)}`, ` ${contact}`, `${contact}.0`, '9'.repeat(20)]) {
      const refused = await openTab('CRM_CONTACT_DETAIL_TAB', odd);
      expect(refused.status, odd).toBe(400);
      expect(refused.error).toBe('PLACEMENT_OPTIONS does not name the record (ID)');
    }
    expect((await openTab('CRM_CONTACT_DETAIL_TAB', String(contact))).phones).toEqual(['79161234567']);
  });

  it('refuses a user who may not read the record, and tells nothing about it', async () => {
    await configured();
    const contact = stack.b24.seedContact({ phones: ['+7 916 123-45-67'] });
    const deal = stack.b24.seedDeal({ contactIds: [contact] });
    stack.b24.denyRead(2, 2, deal);
    const denied = await openTab('CRM_DEAL_DETAIL_TAB', deal, { userId: 2 });
    expect(denied.status).toBe(403);
    expect(denied.token).toBeUndefined();
    expect(denied.html).toContain('You cannot see this CRM record');
    expect(denied.html).not.toContain('79161234567');
    // A record that does not exist answers the same.
    const missing = await openTab('CRM_DEAL_DETAIL_TAB', 999_999, { userId: 2 });
    expect(missing.status).toBe(403);
    expect(missing.error).toBe(denied.error);
    // Another user with the rights opens it.
    expect((await openTab('CRM_DEAL_DETAIL_TAB', deal, { userId: 1 })).phones).toEqual(['79161234567']);
  });

  it('reads a deal’s phones from all its contacts and its company, as the user, in one batch', async () => {
    await configured();
    const first = stack.b24.seedContact({ phones: ['+7 916 111-11-11', '8 (916) 222-22-22'] });
    const second = stack.b24.seedContact({ phones: ['+52 55 1234 5678'] });
    const company = stack.b24.seedCompany({ phones: ['+7 495 333-33-33'] });
    const deal = stack.b24.seedDeal({ contactIds: [first, second], companyId: company });
    stack.b24.resetCalls();
    const tab = await openTab('CRM_DEAL_DETAIL_TAB', deal, { userId: 2 });
    expect(tab.status).toBe(200);
    expect(tab.phones).toEqual(['79161111111', '79162222222', '525512345678', '74953333333']);
    const asUser = stack.b24.calls.filter((call) => call.accessToken === tab.authId);
    // One request to the portal: the batch; the rest are its sub-commands.
    const topLevel = asUser.filter((call) => call.method === 'batch');
    expect(topLevel).toHaveLength(1);
    expect(asUser.map((call) => call.method)).toEqual(expect.arrayContaining(['profile', 'crm.deal.get', 'crm.deal.contact.items.get', 'crm.contact.get', 'crm.company.get']));
    expect(stack.b24.calls.filter((call) => call.accessToken !== tab.authId)).toEqual([]);
  });

  it('reads a smart-process item’s phones from its contacts and company', async () => {
    stack = await startStack();
    stack.b24.seedSmartProcess(183);
    await installAndConfigure(stack, { defaultCountry: 'RU' });
    const contact = stack.b24.seedContact({ phones: ['+7 916 444-44-44'] });
    const company = stack.b24.seedCompany({ phones: ['+7 495 555-55-55'] });
    const item = stack.b24.seedSmartItem(183, { contactIds: [contact], companyId: company });
    const tab = await openTab('CRM_DYNAMIC_183_DETAIL_TAB', item);
    expect(tab.status).toBe(200);
    expect(tab.phones).toEqual(['79164444444', '74955555555']);
    stack.b24.denyRead(2, 183, item);
    expect((await openTab('CRM_DYNAMIC_183_DETAIL_TAB', item, { userId: 2 })).status).toBe(403);
  });

  it('a tab token for record A cannot read record B’s phone or dialogs', async () => {
    await configured();
    const a = stack.b24.seedContact({ phones: ['+7 916 100-00-01'] });
    const b = stack.b24.seedContact({ phones: ['+7 916 100-00-02'] });
    const seededA = stack.c2d.seedClient({ phone: '79161000001', name: 'A', withDialog: 'open' });
    const seededB = stack.c2d.seedClient({ phone: '79161000002', name: 'B', withDialog: 'open' });
    stack.c2d.receiveMessage({ clientId: Number(seededB.client.id), text: 'secret of B' });
    const tabA = await openTab('CRM_CONTACT_DETAIL_TAB', a);
    expect((await openTab('CRM_CONTACT_DETAIL_TAB', b)).status).toBe(200);

    const own = await get('/api/dialogs/by-phone?phone=79161000001', tabA.token!);
    expect(own.status).toBe(200);
    expect(((await own.json()) as { latest: { id: number } }).latest.id).toBe(Number(seededA.dialog!.id));
    const dialogB = Number(seededB.dialog!.id);
    for (const path of ['/api/dialogs/by-phone?phone=79161000002', `/api/dialogs/${dialogB}`, `/api/dialogs/${dialogB}/messages`]) {
      const response = await get(path, tabA.token!);
      expect(response.status, path).toBe(404);
      const text = await response.text();
      expect(text).toContain('No such dialog here');
      expect(text).not.toContain('secret of B');
    }
    // A dialog that does not exist answers exactly the same.
    expect(await (await get('/api/dialogs/987654/messages', tabA.token!)).json()).toEqual({ error: 'No such dialog here' });
  });

  it('refuses an expired or forged tab token with renew; a fresh AUTH_ID renews it and reads the record again', async () => {
    const clock = new TestClock();
    await configured({ clock });
    const contact = stack.b24.seedContact({ phones: ['+7 916 100-00-01'] });
    stack.c2d.seedClient({ phone: '79161000001', withDialog: 'open' });
    const tab = await openTab('CRM_CONTACT_DETAIL_TAB', contact);
    expect((await get('/api/dialogs/by-phone?phone=79161000001', tab.token!)).status).toBe(200);

    const [head, body, signature] = tab.token!.split('.');
    const claims = JSON.parse(Buffer.from(body!, 'base64url').toString()) as { p: string[] };
    claims.p.push('79161000002');
    const forged = `${head}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${signature}`;
    const refusedForged = await get('/api/dialogs/by-phone?phone=79161000002', forged);
    expect(refusedForged.status).toBe(401);
    expect(await refusedForged.json()).toMatchObject({ renew: true });
    // A page token is not a tab token, nor the other way round (each its own key).
    expect((await get('/api/dialogs/by-phone?phone=79161000001', `c2dp.${body}.${signature}`)).status).toBe(401);

    clock.advance(15 * 60_000 + 1);
    const expired = await get('/api/dialogs/by-phone?phone=79161000001', tab.token!);
    expect(expired.status).toBe(401);
    expect(await expired.json()).toMatchObject({ renew: true });

    // The record gained a phone meanwhile: the renewed token carries it.
    const stored = stack.b24.crm.contacts.get(contact)!;
    (stored.PHONE as Array<Record<string, string>>).push({ ID: '999', VALUE_TYPE: 'WORK', VALUE: '+7 916 100-00-03', TYPE_ID: 'PHONE' });
    const renewed = await renew(tab.token!, stack.b24.issueAuth(1).access_token);
    expect(renewed.status).toBe(200);
    const fresh = (await renewed.json()) as { token: string; phones: string[] };
    expect(fresh.phones).toEqual(['79161000001', '79161000003']);
    expect((await get('/api/dialogs/by-phone?phone=79161000003', fresh.token)).status).toBe(200);
    // Another user's AUTH_ID cannot take the token over.
    expect((await renew(fresh.token, stack.b24.issueAuth(2).access_token)).status).toBe(401);
  });

  it('answers a renewal whose body is JSON but not an object with a clear 400', async () => {
    await configured();
    const contact = stack.b24.seedContact({ name: 'Ana', phones: ['+7 916 123-45-67'] });
    const tab = await openTab('CRM_CONTACT_DETAIL_TAB', contact);
    for (const body of ['null', '[]', '"x"']) {
      const response = await fetch(`${stack.server.url}/api/tab/renew`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tab.token}`, 'content-type': 'application/json' },
        body,
      });
      expect(response.status, body).toBe(400);
      expect(await response.json()).toEqual({ error: 'The body must be a JSON object with authId' });
    }
  });

  it('takes an app page token too: an admin sees every dialog, a mapped user their operator’s, anybody else is refused', async () => {
    stack = await startStack();
    // No operator shares an e-mail with user 2, so only operatorMap can map them.
    const operator = stack.c2d.account().operators.find((item) => item.email === 'manager@example.com')!;
    operator.email = 'someone-else@example.com';
    const operatorId = Number(operator.id);
    await installAndConfigure(stack);
    const mine = stack.c2d.seedClient({ phone: '79161000001', withDialog: 'open' });
    stack.c2d.account().dialogs.find((dialog) => dialog.id === Number(mine.dialog!.id))!.operator_id = operatorId;
    const theirs = stack.c2d.seedClient({ phone: '79161000002', withDialog: 'open' });
    const openApp = async (userId: number) => {
      const request = stack.b24.installPageRequest({ accessToken: stack.b24.issueAuth(userId).access_token });
      const html = await (await postForm(`${stack.server.url}/app`, request.body, request.query)).text();
      return (JSON.parse(/id="page-data">(.*?)<\/script>/s.exec(html)![1]!) as { token: string }).token;
    };
    const admin = await openApp(1);
    expect((await get(`/api/dialogs/${theirs.dialog!.id}`, admin)).status).toBe(200);
    const employee = await openApp(2);
    const refused = await get('/api/dialogs/by-phone?phone=79161000001', employee);
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { error: string }).error).toContain('no Chat2Desk operator');
    // Mapped to the operator: that operator's dialogs, nobody else's.
    expect((await putSettings(stack, { operatorMap: { [String(operatorId)]: 2 } })).status).toBe(200);
    expect((await get(`/api/dialogs/${mine.dialog!.id}`, employee)).status).toBe(200);
    expect((await get(`/api/dialogs/${theirs.dialog!.id}`, employee)).status).toBe(404);
  });

  describe('in Open Channels mode', () => {
    const lastIdCalls = () => stack.b24.calls.filter((call) => call.method === 'imopenlines.crm.chat.getlastid');

    it('finds the latest Open Channel chat of a lead, deal, contact or company as the user, inside the batch that reads its phones', async () => {
      await configured({}, { integrationType: 'open_channels' });
      const contact = stack.b24.seedContact({ phones: ['+7 916 100-00-01'] });
      const records = {
        CRM_LEAD_DETAIL_TAB: { entityTypeId: 1, entityId: stack.b24.seedLead({ phones: ['+7 916 100-00-02'] }) },
        CRM_DEAL_DETAIL_TAB: { entityTypeId: 2, entityId: stack.b24.seedDeal({ contactIds: [contact] }) },
        CRM_CONTACT_DETAIL_TAB: { entityTypeId: 3, entityId: contact },
        CRM_COMPANY_DETAIL_TAB: { entityTypeId: 4, entityId: stack.b24.seedCompany({ phones: ['+7 495 100-00-03'] }) },
      };
      const chats = new Map<string, number>();
      for (const [placement, record] of Object.entries(records)) chats.set(placement, await openChannelChatOf(stack, record));
      expect(new Set(chats.values()).size).toBe(4);
      for (const [placement, record] of Object.entries(records)) {
        stack.b24.resetCalls();
        const tab = await openTab(placement, record.entityId, { userId: 2 });
        expect(tab.status, placement).toBe(200);
        expect(tab.openChannelChat, placement).toEqual({ state: 'found', chatId: chats.get(placement) });
        // One request, as the user: the chat is a command of the batch that reads the phones.
        expect(stack.b24.calls.filter((call) => call.method === 'batch').map((call) => call.accessToken)).toEqual([tab.authId]);
        expect(lastIdCalls().map((call) => [call.accessToken, call.params])).toEqual([
          [tab.authId, { CRM_ENTITY_TYPE: ['lead', 'deal', 'contact', 'company'][record.entityTypeId - 1], CRM_ENTITY: String(record.entityId) }],
        ]);
        expect(stack.b24.calls.filter((call) => call.accessToken !== tab.authId)).toEqual([]);
      }
    });

    it('says there is no chat yet when Bitrix24 knows none for the record, and Bitrix24’s words when it would not say', async () => {
      await configured({}, { integrationType: 'open_channels' });
      const contact = stack.b24.seedContact({ phones: ['+7 916 100-00-01'] });
      const tab = await openTab('CRM_CONTACT_DETAIL_TAB', contact);
      expect(tab.status).toBe(200);
      expect(tab.phones).toEqual(['79161000001']);
      expect(tab.openChannelChat).toEqual({ state: 'none' });
      // Any other refusal of that one command leaves the tab working and says what Bitrix24 said.
      stack.b24.failNext('imopenlines.crm.chat.getLastId', {
        status: 403,
        error: 'insufficient_scope',
        error_description: 'The request requires higher privileges than provided by the access token',
      });
      const refused = await openTab('CRM_CONTACT_DETAIL_TAB', contact);
      expect(refused.status).toBe(200);
      expect(refused.phones).toEqual(['79161000001']);
      expect(refused.openChannelChat).toEqual({ state: 'unknown', reason: 'insufficient_scope The request requires higher privileges than provided by the access token' });
    });

    it('a renewal looks for the chat again with the phones: one that appeared meanwhile is offered', async () => {
      await configured({}, { integrationType: 'open_channels' });
      const lead = stack.b24.seedLead({ phones: ['+7 916 100-00-01'] });
      const tab = await openTab('CRM_LEAD_DETAIL_TAB', lead);
      expect(tab.openChannelChat).toEqual({ state: 'none' });
      const chatId = await openChannelChatOf(stack, { entityTypeId: 1, entityId: lead });
      const renewed = await renew(tab.token!, stack.b24.issueAuth(1).access_token);
      expect(renewed.status).toBe(200);
      expect(await renewed.json()).toMatchObject({ phones: ['79161000001'], openChannelChat: { state: 'found', chatId } });
    });

    it('offers nothing of the kind in a smart-process card, nor in Chat2Desk mode, and asks Bitrix24 nothing for it', async () => {
      stack = await startStack();
      stack.b24.seedSmartProcess(183);
      await installAndConfigure(stack, { defaultCountry: 'RU', integrationType: 'open_channels' });
      const contact = stack.b24.seedContact({ phones: ['+7 916 100-00-01'] });
      await openChannelChatOf(stack, { entityTypeId: 3, entityId: contact });
      const item = stack.b24.seedSmartItem(183, { contactIds: [contact] });
      stack.b24.resetCalls();
      const smart = await openTab('CRM_DYNAMIC_183_DETAIL_TAB', item);
      expect(smart.status).toBe(200);
      expect(smart.phones).toEqual(['79161000001']);
      expect(smart.openChannelChat).toBeUndefined();
      expect(lastIdCalls()).toEqual([]);

      // Back in Chat2Desk mode the contact whose chat exists shows none either.
      expect((await putSettings(stack, { integrationType: 'chat2desk' })).status).toBe(200);
      stack.b24.resetCalls();
      const contactTab = await openTab('CRM_CONTACT_DETAIL_TAB', contact);
      expect(contactTab.status).toBe(200);
      expect(contactTab.openChannelChat).toBeUndefined();
      expect(contactTab.html).not.toContain('openChannelChat');
      expect(lastIdCalls()).toEqual([]);
    });
  });

  it('from a cold cache costs Chat2Desk at most 3 calls per phone for the first render, none when warm', async () => {
    await configured();
    // Seeded after the cache fill: nothing about these clients is cached.
    const first = stack.c2d.seedClient({ phone: '79161000001', name: 'First', withDialog: 'open' });
    stack.c2d.receiveMessage({ clientId: Number(first.client.id), text: 'hello' });
    const second = stack.c2d.seedClient({ phone: '79161000002', name: 'Second', withDialog: 'closed' });
    const contact = stack.b24.seedContact({ phones: ['+7 916 100-00-01', '+7 916 100-00-02'] });
    const tab = await openTab('CRM_CONTACT_DETAIL_TAB', contact);
    // Account-wide lists (operators, channels) are shared by every phone; warm them as any earlier page would.
    await get('/api/dialogs/by-phone?phone=79161000001', tab.token!);
    stack.c2d.resetCalls();
    stack.c2d.seedClient({ phone: '79161000009' });
    const perPhone = async (phone: string, dialogId: number) => {
      stack.c2d.resetCalls();
      const found = (await (await get(`/api/dialogs/by-phone?phone=${phone}`, tab.token!)).json()) as { latest: { id: number } };
      expect(found.latest.id).toBe(dialogId);
      expect((await get(`/api/dialogs/${dialogId}/messages?limit=20`, tab.token!)).status).toBe(200);
      return stack.c2d.calls.map((call) => `${call.method} ${call.path}`);
    };
    // The second phone is cold (the first was read once above).
    const cold = await perPhone('79161000002', Number(second.dialog!.id));
    expect(cold.length).toBeLessThanOrEqual(3);
    expect(cold).toEqual(['GET /clients', `GET /clients/${second.client.id}/dialogs`, 'GET /messages']);
    // Warm: the summary comes from the cache; only the history page is asked.
    const warm = await perPhone('79161000002', Number(second.dialog!.id));
    expect(warm).toEqual(['GET /messages']);
  });
});
