import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { adminHeaders, install, putSettings, startStack, type Stack } from './support/stack.js';

describe('settings API', () => {
  let stack: Stack;
  beforeEach(async () => {
    stack = await startStack({ env: { CHAT2DESK_ALLOWED_API_URLS: 'https://api.chat2desk.com.mx/v1' } });
    await install(stack);
  });
  afterEach(() => stack.close());

  it('refuses requests without an admin token of the portal', async () => {
    const url = `${stack.server.url}/api/settings`;
    expect((await fetch(url)).status).toBe(401);
    expect((await fetch(url, { headers: { authorization: 'Bearer nope', 'x-bitrix24-member-id': stack.b24.memberId } })).status).toBe(401);
    const manager = await fetch(url, { headers: adminHeaders(stack, 2) });
    expect(manager.status).toBe(403);
    expect(await manager.json()).toEqual({ error: 'Only a Bitrix24 administrator may change the app settings' });
    const otherPortal = await fetch(url, { headers: { ...adminHeaders(stack), 'x-bitrix24-member-id': 'unknown-member' } });
    expect(otherPortal.status).toBe(401);
  });

  it("refuses a portal admin's token issued to another app: the portal accepts it, the authorization server names the other app", async () => {
    const url = `${stack.server.url}/api/settings`;
    const token = stack.b24.issueOtherAppToken(1);
    const headers = { authorization: `Bearer ${token}`, 'x-bitrix24-member-id': stack.b24.memberId, 'content-type': 'application/json' };
    const read = await fetch(url, { headers });
    expect(read.status).toBe(401);
    const write = await fetch(url, { method: 'PUT', headers, body: JSON.stringify({ chat2deskApiToken: 'attacker-token' }) });
    expect(write.status).toBe(401);
    expect((await fetch(`${stack.server.url}/api/event-log`, { headers })).status).toBe(401);
    expect(stack.c2d.calls.filter((call) => call.token === 'attacker-token')).toEqual([]);
    expect((await (await fetch(url, { headers: adminHeaders(stack) })).json()).chat2deskApiToken).toEqual({ set: false });
  });

  it('saves a token Chat2Desk accepts, shows only that it is set, and lists channels', async () => {
    const saved = await putSettings(stack, { chat2deskApiToken: stack.c2d.token, defaultCountry: 'ru', defaultChannelId: 17404, defaultTransport: 'whatsapp' });
    expect(saved.status).toBe(200);
    const view = await (await fetch(`${stack.server.url}/api/settings`, { headers: adminHeaders(stack) })).json();
    expect(view).toMatchObject({
      chat2deskApiToken: { set: true },
      chat2deskApiUrl: stack.c2d.url,
      defaultCountry: 'RU',
      defaultChannelId: 17404,
      defaultTransport: 'whatsapp',
      allowedChat2deskApiUrls: [stack.c2d.url, 'https://api.chat2desk.com.mx/v1'],
    });
    expect(JSON.stringify(view)).not.toContain(stack.c2d.token);
    expect(view.channels.map((channel: { id: number }) => channel.id)).toEqual([17404, 126]);
  });

  it('re-registers the robots with the account channels in their channel list', async () => {
    await putSettings(stack, { chat2deskApiToken: stack.c2d.token });
    const properties = stack.b24.robots.get('c2d_send_message')!.PROPERTIES as Record<string, Record<string, unknown>>;
    const channel = Object.entries(properties).find(([key]) => key.toLowerCase() === 'channel_id')![1];
    const options = Object.entries(channel).find(([key]) => key.toLowerCase() === 'options')![1];
    expect(options).toEqual({ 17404: 'Sales WhatsApp (79160000000)', 126: 'Site' });
  });

  it("answers 422 with Chat2Desk's reason for a token it rejects, and saves nothing", async () => {
    const response = await putSettings(stack, { chat2deskApiToken: 'wrong-token', defaultCountry: 'MX' });
    expect(response.status).toBe(422);
    expect(await response.json()).toEqual({ error: 'Chat2Desk rejected the API token: Token is not correct' });
    const view = await (await fetch(`${stack.server.url}/api/settings`, { headers: adminHeaders(stack) })).json();
    expect(view).toMatchObject({ chat2deskApiToken: { set: false }, defaultCountry: null });
  });

  it('refuses a Chat2Desk address outside the allow-list and unknown keys', async () => {
    const evil = await putSettings(stack, { chat2deskApiToken: stack.c2d.token, chat2deskApiUrl: 'http://169.254.169.254/latest' });
    expect(evil.status).toBe(400);
    expect(((await evil.json()) as { error: string }).error).toContain('chat2deskApiUrl must be one of');
    await stack.server.idle(); // nothing was set going in the background either
    expect(stack.c2d.calls).toHaveLength(0);
    const unknown = await putSettings(stack, { somethingElse: 1 });
    expect(unknown.status).toBe(400);
    const badCountry = await putSettings(stack, { defaultCountry: 'Narnia' });
    expect(badCountry.status).toBe(400);
    const notJson = await fetch(`${stack.server.url}/api/settings`, { method: 'PUT', headers: adminHeaders(stack), body: '{oops' });
    expect(notJson.status).toBe(400);
  });

  it('refuses a default channel the account does not have', async () => {
    const response = await putSettings(stack, { chat2deskApiToken: stack.c2d.token, defaultChannelId: 999 });
    expect(response.status).toBe(422);
    expect(await response.json()).toEqual({ error: 'defaultChannelId 999 is not a channel of this Chat2Desk account' });
  });

  it('asks the portal about the admin once and then trusts the answer for a while', async () => {
    stack.b24.resetCalls(); // the install asked about its installer already
    const headers = adminHeaders(stack);
    for (let i = 0; i < 3; i++) expect((await fetch(`${stack.server.url}/api/settings`, { headers })).status).toBe(200);
    expect(stack.b24.calls.filter((call) => call.method === 'profile')).toHaveLength(1);
    const guess = { ...headers, authorization: 'Bearer guessed-token' };
    for (let i = 0; i < 3; i++) expect((await fetch(`${stack.server.url}/api/settings`, { headers: guess })).status).toBe(401);
    expect(stack.b24.calls.filter((call) => call.method === 'profile')).toHaveLength(2);
  });

  it('refuses a token with control characters or non-ASCII at once, naming the field, without asking Chat2Desk', async () => {
    for (const token of ['abc\u0000def', '\ud800x', 'abc\r\nX: 1', 'abc def', 'токен']) {
      const response = await putSettings(stack, { chat2deskApiToken: token, defaultCountry: 'MX' });
      expect(response.status).toBe(400);
      const { error } = (await response.json()) as { error: string };
      expect(error).toContain('chat2deskApiToken must be the token from Chat2Desk');
    }
    expect(stack.c2d.calls).toHaveLength(0);
    const view = await (await fetch(`${stack.server.url}/api/settings`, { headers: adminHeaders(stack) })).json();
    expect(view).toMatchObject({ chat2deskApiToken: { set: false }, defaultCountry: null });
  });

  it('answers 400 at once for a stored token that cannot be sent: a request never built is not Chat2Desk being down', async () => {
    // A token saved before tokens were checked: fetch cannot put it in a header.
    const token = 'abc\r\nX: 1';
    await stack.server.portals.saveSettings(stack.b24.memberId, {}, token);
    // Naming a default channel makes the save check the account with Chat2Desk.
    const response = await putSettings(stack, { defaultChannelId: 17404 });
    expect(response.status).toBe(400);
    const { error } = (await response.json()) as { error: string };
    expect(error).toBe('chat2deskApiToken cannot be used: the request could not be built: a header value, such as the API token, has characters HTTP does not allow');
    expect(stack.c2d.calls).toHaveLength(0);
    expect(stack.logs.join('')).not.toContain('abc\\r\\nX');
  });

  it('refuses an operatorMap with __proto__ or other keys that are not operator ids, and keeps the saved map', async () => {
    expect((await putSettings(stack, { chat2deskApiToken: stack.c2d.token, operatorMap: { 311416: 5 } })).status).toBe(200);
    for (const body of ['{"operatorMap": {"__proto__": 5}}', '{"operatorMap": {"__proto__": {"311416": 7}}}', '{"operatorMap": {"constructor": 5}}', '{"operatorMap": [5]}']) {
      const response = await fetch(`${stack.server.url}/api/settings`, { method: 'PUT', headers: adminHeaders(stack), body });
      expect(response.status).toBe(400);
      expect(((await response.json()) as { error: string }).error).toMatch(/^operatorMap (keys must be Chat2Desk operator ids|must be an object of operator ids)$/);
    }
    const view = await (await fetch(`${stack.server.url}/api/settings`, { headers: adminHeaders(stack) })).json();
    expect(view.operatorMap).toEqual({ 311416: 5 });
  });
});
