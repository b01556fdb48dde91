import { afterEach, describe, expect, it } from 'vitest';
import { TestClock } from './support/clock.js';
import { eventually, install, installAndConfigure, postForm, startStack, type Stack } from './support/stack.js';

/**
 * Page tokens over plain HTTP (docs/protocols.md B13): what a replayed, expired, forged or
 * outdated token gets. The browser side is in app-page.browser.test.ts.
 */
describe('app page tokens', () => {
  let stack: Stack;
  afterEach(() => stack.close());

  async function openApp(userId = 1, overrides: Record<string, string> = {}): Promise<{ status: number; token?: string; html: string; authId: string }> {
    const auth = stack.b24.issueAuth(userId);
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
      ...overrides,
    });
    const response = await postForm(`${stack.server.url}/app`, body.toString(), `DOMAIN=${stack.b24.domain}&PROTOCOL=1&LANG=en&APP_SID=abc`);
    const html = await response.text();
    const data = /<script type="application\/json" id="page-data">(.*?)<\/script>/s.exec(html)?.[1];
    return { status: response.status, token: data ? (JSON.parse(data) as { token?: string }).token : undefined, html, authId: auth.access_token };
  }

  const readSettings = (token: string) => fetch(`${stack.server.url}/api/settings`, { headers: { authorization: `Bearer ${token}` } });
  const renew = (token: string, authId: string) =>
    fetch(`${stack.server.url}/api/page/renew`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ authId }),
    });

  it('works for 15 minutes, then is refused; a fresh AUTH_ID of the same user renews it', async () => {
    const clock = new TestClock();
    stack = await startStack({ clock });
    await install(stack);
    const { token } = await openApp();
    expect((await readSettings(token!)).status).toBe(200);
    clock.advance(15 * 60_000 + 1);
    const expired = await readSettings(token!);
    expect(expired.status).toBe(401);
    expect(await expired.json()).toMatchObject({ renew: true });

    const renewed = await renew(token!, stack.b24.issueAuth(1).access_token);
    expect(renewed.status).toBe(200);
    const { token: fresh } = (await renewed.json()) as { token: string };
    expect((await readSettings(fresh)).status).toBe(200);
    // Another user's AUTH_ID cannot take over the token.
    expect((await renew(fresh, stack.b24.issueAuth(2).access_token)).status).toBe(401);
  });

  it("bounds one user's renewals, so random AUTH_IDs from an employee's page cannot use up the portal's share of caller checks", async () => {
    stack = await startStack();
    await install(stack);
    const { token } = await openApp(2);
    stack.b24.resetCalls();
    const answers: number[] = [];
    for (let attempt = 0; attempt < 10; attempt++) answers.push((await renew(token!, `forged-${attempt}`)).status);
    expect(answers.slice(0, 6)).toEqual([401, 401, 401, 401, 401, 401]);
    expect(answers.slice(6)).toEqual([429, 429, 429, 429]);
    expect(stack.b24.calls.filter((call) => call.method === 'profile')).toHaveLength(6);
    // The admin is not affected by the employee's renewals.
    const admin = await openApp(1);
    expect((await renew(admin.token!, stack.b24.issueAuth(1).access_token)).status).toBe(200);
  });

  it('answers a renewal whose body is JSON but not an object with a clear 400', async () => {
    stack = await startStack();
    await install(stack);
    const { token } = await openApp();
    for (const body of ['null', '[]', '"x"']) {
      const response = await fetch(`${stack.server.url}/api/page/renew`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body,
      });
      expect(response.status, body).toBe(400);
      expect(await response.json()).toEqual({ error: 'The body must be a JSON object with authId' });
    }
  });

  it('lets a write through only while the portal’s word on the admin is under a minute old, a remembered word included', async () => {
    const clock = new TestClock();
    stack = await startStack({ clock });
    await install(stack);
    const write = (token: string) =>
      fetch(`${stack.server.url}/api/settings`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ defaultCountry: 'MX' }),
      });
    const { token, authId } = await openApp();
    clock.advance(40_000);
    // The same AUTH_ID again: the portal's answer of 40 s ago is remembered, not asked again.
    const profiles = stack.b24.calls.filter((call) => call.method === 'profile').length;
    const renewed = (await (await renew(token!, authId)).json()) as { token: string };
    expect(stack.b24.calls.filter((call) => call.method === 'profile')).toHaveLength(profiles);
    clock.advance(25_000);
    const stale = await write(renewed.token);
    expect(stale.status).toBe(401);
    expect(await stale.json()).toMatchObject({ renew: true });
    const fresh = (await (await renew(renewed.token, stack.b24.issueAuth(1).access_token)).json()) as { token: string };
    expect((await write(fresh.token)).status).toBe(200);
  });

  it('is refused after the app is uninstalled, and a reinstall does not bring old tokens back', async () => {
    const clock = new TestClock();
    stack = await startStack({ clock });
    await install(stack);
    const { token } = await openApp();
    expect((await readSettings(token!)).status).toBe(200);
    const answer = await postForm(`${stack.server.url}/bitrix24/events`, stack.b24.uninstallEventBody());
    expect(answer.status).toBe(200);
    await eventually(async () => (await stack.server.portals.get(stack.b24.memberId))?.status === 'uninstalled', 15_000, 'the uninstall');
    expect((await readSettings(token!)).status).toBe(401);

    clock.advance(1000);
    await install(stack);
    expect((await readSettings(token!)).status).toBe(401);
    expect((await renew(token!, stack.b24.issueAuth(1).access_token)).status).toBe(401);
    const { token: after } = await openApp();
    expect((await readSettings(after!)).status).toBe(200);
  });

  it('opens only with the stored application token, and a tampered token is not ours', async () => {
    stack = await startStack();
    await install(stack);
    const forged = await openApp(1, { APPLICATION_TOKEN: 'a'.repeat(32) });
    expect(forged.status).toBe(401);
    expect(forged.token).toBeUndefined();
    expect(forged.html).toContain('id="page-error"');
    const { token } = await openApp(2);
    // The claims say admin: 0; flipping them breaks the signature.
    const [prefix, body, signature] = token!.split('.');
    const claims = JSON.parse(Buffer.from(body!, 'base64url').toString()) as Record<string, unknown>;
    const tampered = `${prefix}.${Buffer.from(JSON.stringify({ ...claims, a: 1 })).toString('base64url')}.${signature}`;
    expect((await readSettings(tampered)).status).toBe(401);
    expect((await readSettings(token!)).status).toBe(403);
  });

  it("shows everyone robot results Bitrix24 did not take, and Chat2Desk's request count", async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    const { token } = await openApp(2);
    stack.b24.failNext('bizproc.event.send', { status: 500, error: 'INTERNAL_SERVER_ERROR', error_description: 'Internal error' }, 100);
    await stack.b24.callRobot({ code: 'c2d_find_dialogs', properties: { phone: '+79990000000' } });
    const status = await eventually(
      async () => {
        const body = (await (await fetch(`${stack.server.url}/api/page/status`, { headers: { authorization: `Bearer ${token}` } })).json()) as {
          bitrix24: { resultsRetrying: number; lastResultError: string | null };
          chat2desk: { connected: boolean; requestsThisMonth?: number };
        };
        return body.bitrix24.resultsRetrying > 0 && body;
      },
      15_000,
      'a result waiting for a retry',
    );
    expect(status.bitrix24).toMatchObject({ resultsRetrying: 1, lastResultError: expect.stringContaining('Bitrix24 refused some results') });
    expect(status.chat2desk).toMatchObject({ connected: true, requestsThisMonth: expect.any(Number) });
    const { html } = await openApp(2);
    expect(html).toContain('id="results-retrying"');
  });

  it("asks Chat2Desk for the account's request count at most once a minute per portal, however many users look", async () => {
    const clock = new TestClock();
    stack = await startStack({ clock });
    await installAndConfigure(stack);
    const apiInfoCalls = () => stack.c2d.calls.filter((call) => call.path === '/companies/api_info').length;
    const { token } = await openApp(2);
    const before = apiInfoCalls();
    const statuses = await Promise.all(
      Array.from({ length: 5 }, async () => (await fetch(`${stack.server.url}/api/page/status`, { headers: { authorization: `Bearer ${token}` } })).json()),
    );
    await openApp(1);
    for (const status of statuses) expect(status).toMatchObject({ chat2desk: { connected: true, requestsThisMonth: expect.any(Number) } });
    expect(apiInfoCalls() - before).toBeLessThanOrEqual(1);
    clock.advance(61_000);
    await fetch(`${stack.server.url}/api/page/status`, { headers: { authorization: `Bearer ${token}` } });
    expect(apiInfoCalls() - before).toBeLessThanOrEqual(2);
    expect(apiInfoCalls()).toBeGreaterThan(before);
  });

  it('repairs the webhook and registers the robots again for an admin, not for others', async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    const post = (path: string, token: string) => fetch(`${stack.server.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    const { token: employee } = await openApp(2);
    const { token: admin } = await openApp(1);
    stack.c2d.account().webhooks.length = 0;
    stack.b24.robots.clear();
    expect((await post('/api/page/webhook/repair', employee!)).status).toBe(403);
    expect((await post('/api/page/robots/register', employee!)).status).toBe(403);
    expect(stack.c2d.account().webhooks).toHaveLength(0);

    const repaired = await post('/api/page/webhook/repair', admin!);
    expect(repaired.status).toBe(200);
    expect(await repaired.json()).toMatchObject({ webhook: { registered: true } });
    expect(stack.c2d.account().webhooks).toHaveLength(1);
    expect((await post('/api/page/robots/register', admin!)).status).toBe(200);
    expect(stack.b24.robots.size).toBe(5);
  });

  it('keeps the Bitrix24-token bearer of the settings API for scripts', async () => {
    stack = await startStack();
    await install(stack);
    const response = await fetch(`${stack.server.url}/api/settings`, {
      headers: { authorization: `Bearer ${stack.b24.issueAuth(1).access_token}`, 'x-bitrix24-member-id': stack.b24.memberId },
    });
    expect(response.status).toBe(200);
  });
});
