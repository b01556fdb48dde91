/**
 * Tests of the fake Bitrix24 itself, over real HTTP, replaying the wire examples in
 * test/fixtures/protocol-examples/bitrix24/. If the fake drifts from those examples, tests of the app
 * written against it prove nothing — so these compare bodies, statuses and key sets literally.
 */
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import qs from 'qs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parsePhpQuery, phpHttpBuildQuery, startFakeBitrix24, type FakeBitrix24 } from './bitrix24.js';

// Response bodies are checked field by field against the examples; a precise type per reply adds nothing.
type Json = any;

const EXAMPLES = new URL('../fixtures/protocol-examples/bitrix24/', import.meta.url);

/** An example file without its leading `# source/note` lines (examples/README.md). */
function example(name: string): string {
  const lines = readFileSync(new URL(name, EXAMPLES), 'utf8').split('\n');
  while (lines[0]?.startsWith('# ')) lines.shift();
  return lines.join('\n');
}

function exampleJson(name: string): Json {
  return JSON.parse(example(name));
}

/** A `*.form.txt` example: the raw body line and the decoded key=value lines after the blank line. */
function exampleForm(name: string): { raw: string; keys: string[] } {
  const [raw = '', , ...decoded] = example(name).split('\n');
  return { raw, keys: decoded.filter((line) => line.includes('=')).map((line) => line.slice(0, line.indexOf('='))) };
}

/** Keys of a form body in wire order, decoded (`auth[access_token]`, ...). */
/** A `*.request.txt` sketch: the query string of its request line and its body (last line). */
function exampleRequest(name: string): { query: string; body: string } {
  const lines = example(name)
    .split('\n')
    .filter((line) => line.trim() !== '');
  const requestLine = lines[0] ?? '';
  return { query: requestLine.slice(requestLine.indexOf('?') + 1), body: lines.at(-1) ?? '' };
}

function formKeys(body: string): string[] {
  return [...new URLSearchParams(body).keys()];
}

function sortedKeys(value: object): string[] {
  return Object.keys(value).sort();
}

let fake: FakeBitrix24;

beforeEach(async () => {
  fake = await startFakeBitrix24();
});

afterEach(async () => {
  await fake.close();
});

function adminToken(): string {
  return fake.issueAuth(1).access_token;
}

/** A JSON REST call; `token: null` sends no auth at all. */
async function call(
  method: string,
  params: Record<string, unknown> = {},
  token: string | null = adminToken(),
  portal: FakeBitrix24 = fake,
): Promise<{ status: number; body: Json }> {
  const response = await fetch(`${portal.clientEndpoint}${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(token === null ? params : { ...params, auth: token }),
  });
  return { status: response.status, body: await response.json() };
}

async function callForm(method: string, body: string): Promise<{ status: number; body: Json }> {
  const response = await fetch(`${fake.clientEndpoint}${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body,
  });
  return { status: response.status, body: await response.json() };
}

/** A stand-in for the app server: records what the fake POSTs to it. */
async function startReceiver(): Promise<{
  url: string;
  requests: Array<{ contentType: string; body: string }>;
  close(): Promise<void>;
}> {
  const requests: Array<{ contentType: string; body: string }> = [];
  const app = new Hono();
  app.post('*', async (c) => {
    requests.push({ contentType: c.req.header('content-type') ?? '', body: await c.req.text() });
    return c.json({ status: 'success' });
  });
  let server: Server | undefined;
  const url = await new Promise<string>((resolve) => {
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) => resolve(`http://127.0.0.1:${info.port}`)) as Server;
  });
  return {
    url,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server?.close(() => resolve());
        server?.closeAllConnections();
      }),
  };
}

const DOCS_TIME_KEYS = sortedKeys(exampleJson('bizproc-robot-add.response.json').time);

describe('REST envelope and authentication (§2, §3)', () => {
  it('answers with the documented envelope, with or without the .json suffix', async () => {
    for (const method of ['user.current', 'user.current.json']) {
      const { status, body } = await call(method);
      expect(status).toBe(200);
      expect(sortedKeys(body)).toEqual(['result', 'time']);
      expect(sortedKeys(body.time)).toEqual(DOCS_TIME_KEYS);
      const docsUser = exampleJson('rest-success-user-current.json').result;
      expect(sortedKeys(body.result)).toEqual(expect.arrayContaining(sortedKeys(docsUser)));
      expect(body.result).toMatchObject({ ID: '1', ACTIVE: true });
    }
  });

  it('takes auth from the query string, a form body or a JSON body', async () => {
    const token = adminToken();
    const byQuery = await fetch(`${fake.clientEndpoint}profile?auth=${token}`);
    const byForm = await callForm('profile', phpHttpBuildQuery({ auth: token }));
    const byJson = await call('profile', {}, token);
    expect([byQuery.status, byForm.status, byJson.status]).toEqual([200, 200, 200]);
    expect(byJson.body.result).toMatchObject({ ID: '1', ADMIN: true });
  });

  it('refuses a missing or unknown token with 401 NO_AUTH_FOUND', async () => {
    for (const token of [null, 'not-a-token']) {
      const { status, body } = await call('profile', {}, token);
      expect(status).toBe(401);
      expect(body).toEqual({ error: 'NO_AUTH_FOUND', error_description: 'Wrong authorization data' });
    }
  });

  it('answers an expired token with the documented 401 expired_token', async () => {
    const token = adminToken();
    fake.expireAccessTokens();
    const { status, body } = await call('profile', {}, token);
    expect(status).toBe(401);
    expect(body).toEqual(exampleJson('rest-error-expired-token.json'));
  });

  it('answers an unknown method with 404 ERROR_METHOD_NOT_FOUND', async () => {
    const { status, body } = await call('no.such.method');
    expect(status).toBe(404);
    expect(body.error).toBe('ERROR_METHOD_NOT_FOUND');
  });

  it('tells admins from other users in profile', async () => {
    expect((await call('profile', {}, fake.issueAuth(2).access_token)).body.result).toMatchObject({ ID: '2', ADMIN: false });
    const users = await call('user.get', { FILTER: { EMAIL: 'manager@example.com' } });
    expect(users.body.result).toEqual([expect.objectContaining({ ID: '2', EMAIL: 'manager@example.com' })]);
    expect(users.body.total).toBe(1);
  });

  it('records every call with its token but without auth in the params', async () => {
    const token = adminToken();
    await call('user.current', { extra: 'x' }, token);
    expect(fake.calls).toEqual([expect.objectContaining({ method: 'user.current', params: { extra: 'x' }, status: 200, accessToken: token })]);
    await call('nope.nope', {}, token);
    expect(fake.calls[1]).toMatchObject({ status: 404, error: 'ERROR_METHOD_NOT_FOUND' });
  });
});

describe('limits and fault injection (§4)', () => {
  it('answers 503 QUERY_LIMIT_EXCEEDED with the documented body once the bucket is full', async () => {
    const portal = await startFakeBitrix24({ rateLimit: { drainPerSecond: 0.001, burst: 3 } });
    try {
      const token = portal.issueAuth().access_token;
      for (let i = 0; i < 3; i++) expect((await call('profile', {}, token, portal)).status).toBe(200);
      const { status, body } = await call('profile', {}, token, portal);
      expect(status).toBe(503);
      expect(body).toEqual(exampleJson('rest-error-query-limit-exceeded.json'));
      expect(portal.calls.at(-1)).toMatchObject({ method: 'profile', status: 503, error: 'QUERY_LIMIT_EXCEEDED' });
    } finally {
      await portal.close();
    }
  });

  it('counts a batch as one request however many commands it carries', async () => {
    const portal = await startFakeBitrix24({ rateLimit: { drainPerSecond: 0.001, burst: 2 } });
    try {
      const token = portal.issueAuth().access_token;
      const cmd = { a: 'profile', b: 'profile', c: 'profile', d: 'user.current' };
      const batch = await call('batch', { cmd }, token, portal);
      expect(batch.status).toBe(200);
      expect(sortedKeys(batch.body.result.result)).toEqual(['a', 'b', 'c', 'd']);
      expect((await call('profile', {}, token, portal)).status).toBe(200);
      expect((await call('profile', {}, token, portal)).status).toBe(503);
    } finally {
      await portal.close();
    }
  });

  it('blocks one method with 429 OPERATION_TIME_LIMIT until the given time', async () => {
    fake.setOperatingLimit('crm.lead.add', Math.floor(Date.now() / 1000) + 60);
    const blocked = await call('crm.lead.add', { fields: { TITLE: 'x' } });
    expect(blocked.status).toBe(429);
    expect(blocked.body).toEqual(exampleJson('rest-error-operation-time-limit.json'));
    expect((await call('profile')).status).toBe(200);
    fake.setOperatingLimit('crm.lead.add', Math.floor(Date.now() / 1000) - 1);
    expect((await call('crm.lead.add', { fields: { TITLE: 'x' } })).status).toBe(200);
  });

  it('replays an injected failure the given number of times, then behaves normally', async () => {
    fake.failNext('profile', { status: 500, error: 'INTERNAL_SERVER_ERROR', error_description: 'boom' }, 2);
    for (let i = 0; i < 2; i++) {
      expect(await call('profile')).toEqual({
        status: 500,
        body: { error: 'INTERNAL_SERVER_ERROR', error_description: 'boom' },
      });
    }
    expect((await call('profile')).status).toBe(200);
  });
});

describe('the OAuth server (§1, §2)', () => {
  const docsRefreshKeys = sortedKeys(exampleJson('oauth-refresh.response.json'));

  function tokenUrl(refreshToken: string, clientSecret = fake.clientSecret): string {
    const query = new URLSearchParams({
      grant_type: 'refresh_token',
      client_id: fake.clientId,
      client_secret: clientSecret,
      refresh_token: refreshToken,
    });
    return `${fake.oauthUrl}/oauth/token/?${query}`;
  }

  it('refreshes by GET, rotates the refresh token and keeps the old access token alive', async () => {
    const first = fake.issueAuth();
    const response = await fetch(tokenUrl(first.refresh_token));
    expect(response.status).toBe(200);
    const body: Json = await response.json();
    expect(sortedKeys(body)).toEqual(docsRefreshKeys);
    expect(body).toMatchObject({
      domain: 'oauth.bitrix.info',
      client_endpoint: fake.clientEndpoint,
      server_endpoint: `${fake.oauthUrl}/rest/`,
      member_id: fake.memberId,
      expires_in: 3600,
      user_id: 1,
      status: 'L',
    });
    expect(typeof body.expires).toBe('number');
    expect((await call('profile', {}, body.access_token)).status).toBe(200);
    expect((await call('profile', {}, first.access_token)).status).toBe(200);

    const reused = await fetch(tokenUrl(first.refresh_token));
    expect(reused.status).toBe(400);
    expect(await reused.json()).toEqual(exampleJson('oauth-error-invalid-grant.json'));
    expect((await fetch(tokenUrl(body.refresh_token))).status).toBe(200);
  });

  it('refreshes by form POST the way b24jssdk does', async () => {
    const response = await fetch(`${fake.oauthUrl}/oauth/token/`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'refresh_token',
        client_id: fake.clientId,
        client_secret: fake.clientSecret,
        refresh_token: fake.issueAuth(2).refresh_token,
      }),
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ user_id: 2 });
  });

  it('answers a wrong client with 401 invalid_client and never records the secret', async () => {
    const response = await fetch(tokenUrl(fake.issueAuth().refresh_token, 'wrong'));
    expect(response.status).toBe(401);
    expect(((await response.json()) as Json).error).toBe('invalid_client');
    expect(fake.oauthCalls).toEqual([expect.objectContaining({ method: 'oauth.token', status: 401, error: 'invalid_client' })]);
    expect(JSON.stringify(fake.oauthCalls)).not.toContain(fake.clientSecret);
  });

  it('lets the app recover from expired_token by refreshing', async () => {
    const auth = fake.issueAuth();
    fake.expireAccessTokens();
    expect((await call('profile', {}, auth.access_token)).status).toBe(401);
    const refreshed: Json = await (await fetch(tokenUrl(auth.refresh_token))).json();
    expect((await call('profile', {}, refreshed.access_token)).status).toBe(200);
  });

  it('reports the install on app.info and refuses unknown tokens with 401 invalid_token', async () => {
    const token = adminToken();
    const before: Json = await (await fetch(`${fake.oauthUrl}/rest/app.info?auth=${token}`)).json();
    expect(before.result).toMatchObject({
      client_id: fake.clientId,
      user_id: '1',
      install: {
        installed: false,
        domain: fake.domain,
        client_endpoint: fake.clientEndpoint,
        member_id: fake.memberId,
        member_type: 'user',
      },
    });
    fake.installFinish();
    const after = await fetch(`${fake.oauthUrl}/rest/app.info`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `auth=${token}`,
    });
    expect(((await after.json()) as Json).result.install.installed).toBe(true);
    const unknown = await fetch(`${fake.oauthUrl}/rest/app.info?auth=nope`);
    expect(unknown.status).toBe(401);
    expect(((await unknown.json()) as Json).error).toBe('invalid_token');
  });
});

describe('form bodies Bitrix24 sends (§0, §1, §7, §9)', () => {
  it('encodes PHP-style exactly like the docs-derived form examples', () => {
    for (const name of ['install-event-onappinstall', 'uninstall-event-onappuninstall', 'event-oncrmdealadd']) {
      expect(phpHttpBuildQuery(exampleJson(`${name}.json`))).toBe(exampleForm(`${name}.form.txt`).raw);
    }
    const batch = { ...exampleJson('batch.request-linked.json'), auth: 'ACCESS_TOKEN' };
    expect(phpHttpBuildQuery(batch)).toBe(exampleForm('batch.request-linked.form.txt').raw);
  });

  it('builds ONAPPINSTALL with the real-capture key set and counts it as the install', async () => {
    expect(fake.installed).toBe(false);
    const parsed: Json = qs.parse(fake.installEventBody());
    const capture = exampleJson('install-event-onappinstall.real-capture.json');
    expect(sortedKeys(parsed)).toEqual(sortedKeys({ ...capture, event_handler_id: '' }));
    expect(sortedKeys(parsed.data)).toEqual(sortedKeys(capture.data));
    expect(sortedKeys(parsed.auth)).toEqual(sortedKeys(capture.auth));
    expect(parsed).toMatchObject({
      event: 'ONAPPINSTALL',
      auth: {
        member_id: fake.memberId,
        domain: fake.domain,
        client_endpoint: fake.clientEndpoint,
        application_token: fake.applicationToken,
      },
    });
    expect(fake.installed).toBe(true);
    expect((await call('profile', {}, parsed.auth.access_token)).status).toBe(200);
    const forged: Json = qs.parse(fake.installEventBody({ applicationToken: 'forged', memberId: 'other' }));
    expect(parsed.auth.application_token).not.toBe(forged.auth.application_token);
    expect(forged.auth.member_id).toBe('other');
  });

  it('splits the UI install page into query and body like the docs, and waits for installFinish', () => {
    const { query, body } = fake.installPageRequest();
    const docs = exampleRequest('app-open-default.request.txt');
    expect(formKeys(query)).toEqual(formKeys(docs.query));
    expect(formKeys(body)).toEqual(formKeys(docs.body));
    expect(parsePhpQuery(body)).toMatchObject({
      APPLICATION_TOKEN: fake.applicationToken,
      member_id: fake.memberId,
      PLACEMENT: 'DEFAULT',
    });
    expect(fake.installed).toBe(false);
    fake.installFinish();
    expect(fake.installed).toBe(true);
  });

  it('opens a CRM tab with PLACEMENT_OPTIONS as a JSON string, slashes escaped like PHP', () => {
    const { body } = fake.placementPageRequest('CRM_DEAL_DETAIL_TAB', { ID: '8061', URI: '/crm/deal/details/8061/' });
    expect(formKeys(body)).toEqual(formKeys(exampleRequest('placement-crm-deal-detail-tab.request.txt').body));
    const options = new URLSearchParams(body).get('PLACEMENT_OPTIONS') ?? '';
    expect(options).toContain('\\/crm\\/deal');
    expect(JSON.parse(options)).toEqual({ ID: '8061', URI: '/crm/deal/details/8061/' });
  });

  it('builds ONAPPUNINSTALL without tokens and revokes API access', async () => {
    const token = adminToken();
    await call('event.bind', { event: 'ONCRMDEALADD', handler: 'https://app.example.com/events' }, token);
    const parsed: Json = qs.parse(fake.uninstallEventBody());
    const docs = exampleJson('uninstall-event-onappuninstall.json');
    expect(sortedKeys(parsed)).toEqual(sortedKeys(docs));
    expect(sortedKeys(parsed.auth)).toEqual(sortedKeys(docs.auth));
    expect(fake.eventBindings).toEqual([]);
    expect((await call('profile', {}, token)).status).toBe(401);
  });

  it('builds the robot handler POST with the documented keys in the documented order', () => {
    const docs = exampleJson('robot-handler-call.docs.json');
    const { body, eventToken } = fake.robotCallBody({
      code: 'test_robot',
      properties: { text: docs.properties.text },
      documentId: docs.document_id,
    });
    expect(formKeys(body)).toEqual(exampleForm('robot-handler-call.form.txt').keys);
    const parsed: Json = parsePhpQuery(body);
    expect(sortedKeys(parsed)).toEqual(sortedKeys(docs));
    expect(parsed).toMatchObject({
      code: 'test_robot',
      document_id: docs.document_id,
      document_type: docs.document_type,
      properties: docs.properties,
      use_subscription: 'Y',
      timeout_duration: '0',
      event_token: eventToken,
      auth: { domain: fake.domain, client_endpoint: fake.clientEndpoint, application_token: fake.applicationToken },
    });
    expect(eventToken).toMatch(/^[0-9a-f]{14}\.\d{8}\|A\d{5}(_\d{5}){3}\|[A-Za-z0-9]{32}\.[0-9a-f]{64}$/);
    expect(eventToken.startsWith(`${parsed.workflow_id}|`)).toBe(true);
  });

  it('sends list properties as properties[key][0].. and runs on a fresh deal by default', () => {
    const { body } = fake.robotCallBody({ code: 'sms', properties: { phones: ['+1', '+2'] } });
    expect(formKeys(body)).toEqual(expect.arrayContaining(['properties[phones][0]', 'properties[phones][1]']));
    const parsed: Json = parsePhpQuery(body);
    expect(parsed.properties.phones).toEqual(['+1', '+2']);
    const dealId = Number(String(parsed.document_id[2]).replace('DEAL_', ''));
    expect(fake.crm.deals.has(dealId)).toBe(true);
    expect(parsed.document_type).toEqual(['crm', 'CCrmDocumentDeal', 'DEAL']);
  });
});

describe('robots and activities (§5, §6, §8)', () => {
  // The docs' placeholder host `your_domain` has no dot, which Bitrix24's handler check refuses
  // (ERROR_WRONG_HANDLER_URL); everything else is replayed as printed.
  const docsRobot = (): Record<string, unknown> => {
    const { auth: _placeholder, ...robot } = exampleJson('bizproc-robot-add.request.json');
    return { ...robot, HANDLER: 'https://your-domain.example.com/robot.php' };
  };

  it('registers the docs robot, stores it with UPPER_CASE keys and lists it', async () => {
    const added = await call('bizproc.robot.add', docsRobot());
    expect(added.status).toBe(200);
    expect(added.body.result).toBe(exampleJson('bizproc-robot-add.response.json').result);
    expect(sortedKeys(added.body.time)).toEqual(DOCS_TIME_KEYS);
    const list = await call('bizproc.robot.list');
    expect(list.body.result).toEqual(['test_robot']);
    expect(fake.robots.get('test_robot')).toMatchObject({
      HANDLER: 'https://your-domain.example.com/robot.php',
      USE_SUBSCRIPTION: 'Y',
      PROPERTIES: { datetime: { NAME: 'When', TYPE: 'datetime' }, user: { DEFAULT: 'Author;' } },
    });
  });

  it('reads the same robot from a PHP form body', async () => {
    await callForm('bizproc.robot.add', phpHttpBuildQuery({ ...docsRobot(), auth: adminToken() }));
    const fromForm = fake.robots.get('test_robot');
    await call('bizproc.robot.delete', { CODE: 'test_robot' });
    await call('bizproc.robot.add', docsRobot());
    const fromJson = fake.robots.get('test_robot');
    expect(fromForm?.PROPERTIES).toEqual(fromJson?.PROPERTIES);
    expect(fromForm?.FILTER).toEqual(fromJson?.FILTER);
  });

  it('shares one CODE namespace between robots and activities', async () => {
    await call('bizproc.robot.add', docsRobot());
    const again = await call('bizproc.robot.add', docsRobot());
    expect(again).toEqual({ status: 400, body: exampleJson('bizproc-robot-add.error-already-installed.json') });
    const asActivity = await call('bizproc.activity.add', docsRobot());
    expect(asActivity.status).toBe(400);
    expect(asActivity.body).toEqual({
      error: 'ERROR_ACTIVITY_ALREADY_INSTALLED',
      error_description: 'Activity or Robot already installed!',
    });
  });

  it('answers the documented validation errors', async () => {
    const cases: Array<[Record<string, unknown>, string, string]> = [
      [{ CODE: '' }, 'ERROR_ACTIVITY_VALIDATION_FAILURE', 'Empty activity code!'],
      [{ CODE: 'bad code!' }, 'ERROR_ACTIVITY_VALIDATION_FAILURE', 'Wrong activity code!'],
      [{ HANDLER: 'ftp://your-domain.example.com/robot' }, 'ERROR_UNSUPPORTED_PROTOCOL', 'Unsupported handler protocol'],
      [{ HANDLER: 'http://localhost/robot' }, 'ERROR_WRONG_HANDLER_URL', 'Wrong handler URL'],
      [{ NAME: '' }, 'ERROR_ACTIVITY_VALIDATION_FAILURE', 'Empty activity NAME!'],
      [{ PROPERTIES: 'x' }, 'ERROR_ACTIVITY_VALIDATION_FAILURE', 'Wrong properties array!'],
      [{ PROPERTIES: { '1x': { Name: 'n' } } }, 'ERROR_ACTIVITY_VALIDATION_FAILURE', 'Wrong property key (1x)!'],
      [{ RETURN_PROPERTIES: { out: { Type: 'string' } } }, 'ERROR_ACTIVITY_VALIDATION_FAILURE', 'Empty property NAME (out)!'],
    ];
    for (const [override, error, description] of cases) {
      const { status, body } = await call('bizproc.robot.add', { ...docsRobot(), ...override });
      expect({ status, body }).toEqual({ status: 400, body: { error, error_description: description } });
    }
    expect((await call('bizproc.robot.add', { ...docsRobot(), CODE: '' })).body).toEqual(exampleJson('bizproc-robot-add.error-validation.json'));
    expect(fake.robots.size).toBe(0);
  });

  it('lets only admins add, update, delete or list robots', async () => {
    const manager = fake.issueAuth(2).access_token;
    for (const method of ['bizproc.robot.add', 'bizproc.robot.update', 'bizproc.robot.delete', 'bizproc.robot.list']) {
      expect(await call(method, docsRobot(), manager)).toEqual({
        status: 403,
        body: { error: 'ACCESS_DENIED', error_description: 'Access denied!' },
      });
    }
  });

  it('updates with CODE + FIELDS and deletes, with the documented not-found reply', async () => {
    await call('bizproc.robot.add', docsRobot());
    expect((await call('bizproc.robot.update', { CODE: 'test_robot' })).body.error_description).toBe('No fields to update');
    const updated = await call('bizproc.robot.update', { CODE: 'test_robot', FIELDS: { USE_SUBSCRIPTION: 'N' } });
    expect(updated.body.result).toBe(true);
    expect(fake.robots.get('test_robot')?.USE_SUBSCRIPTION).toBe('N');
    const unknown = await call('bizproc.robot.update', { CODE: 'other', FIELDS: { NAME: 'x' } });
    expect(unknown.body.error).toBe('ERROR_ACTIVITY_NOT_FOUND');
    expect((await call('bizproc.robot.delete', { CODE: 'test_robot' })).body.result).toBe(true);
    expect(await call('bizproc.robot.delete', { CODE: 'test_robot' })).toEqual({
      status: 400,
      body: exampleJson('bizproc-robot-delete.error-not-found.json'),
    });
  });

  it('calls the HANDLER with a form POST and accepts bizproc.event.send once per token', async () => {
    const receiver = await startReceiver();
    try {
      await call('bizproc.robot.add', {
        ...docsRobot(),
        HANDLER: `${receiver.url}/robots/test_robot`,
        RETURN_PROPERTIES: { outputString: { Name: 'Order', Type: 'string' } },
      });
      const { status, eventToken } = await fake.callRobot({ code: 'test_robot', properties: { text: 'Hi there' } });
      expect(status).toBe(200);
      expect(receiver.requests).toHaveLength(1);
      expect(receiver.requests[0]?.contentType).toBe('application/x-www-form-urlencoded');
      const delivered: Json = parsePhpQuery(receiver.requests[0]?.body ?? '');
      expect(delivered).toMatchObject({ code: 'test_robot', event_token: eventToken, properties: { text: 'Hi there' } });

      const docsSend = exampleJson('event-send.request.json');
      const send = {
        ...docsSend,
        EVENT_TOKEN: eventToken,
        RETURN_VALUES: { ...docsSend.RETURN_VALUES, notDeclared: 'dropped' },
      };
      const sent = await call('bizproc.event.send', send, delivered.auth.access_token);
      expect(sent.body.result).toBe(exampleJson('event-send.response.json').result);
      expect(fake.sentEvents).toEqual([{ eventToken, returnValues: docsSend.RETURN_VALUES, logMessage: docsSend.LOG_MESSAGE }]);

      const lowercase = await call('bizproc.event.send', {
        event_token: eventToken,
        return_values: { outputString: 'again' },
      });
      expect(lowercase).toMatchObject({ status: 200, body: { result: true } });
      expect(fake.sentEvents).toHaveLength(1);

      expect(await call('bizproc.event.send', { EVENT_TOKEN: 'made|up|token' })).toEqual({
        status: 403,
        body: exampleJson('event-send-error.json'),
      });
    } finally {
      await receiver.close();
    }
  });

  it('accepts but ignores a send for a robot that does not wait', async () => {
    const { eventToken } = fake.robotCallBody({ code: 'fire_and_forget', properties: {}, useSubscription: 'N' });
    expect((await call('bizproc.event.send', { EVENT_TOKEN: eventToken })).body.result).toBe(true);
    expect(fake.sentEvents).toEqual([]);
  });

  it('writes bizproc.activity.log and refuses an empty message with the documented body', async () => {
    const { eventToken } = fake.robotCallBody({ code: 'test_robot', properties: {} });
    expect(await call('bizproc.activity.log', { EVENT_TOKEN: eventToken, LOG_MESSAGE: '' })).toEqual({
      status: 400,
      body: exampleJson('bizproc-activity-log.error-empty.json'),
    });
    expect((await call('bizproc.activity.log', { EVENT_TOKEN: eventToken, LOG_MESSAGE: 'Sent' })).body.result).toBe(true);
    expect(fake.activityLog).toEqual([{ eventToken, message: 'Sent' }]);
  });
});

describe('batch (§3)', () => {
  it('replays the docs batch with a $result reference, as JSON and as a PHP form', async () => {
    const docs = exampleJson('batch.response.json');
    const token = adminToken();
    const viaJson = await call('batch', exampleJson('batch.request-linked.json'), token);
    const viaForm = await callForm('batch', exampleForm('batch.request-linked.form.txt').raw.replace('ACCESS_TOKEN', token));
    for (const { status, body } of [viaJson, viaForm]) {
      expect(status).toBe(200);
      expect(sortedKeys(body)).toEqual(sortedKeys(docs));
      expect(sortedKeys(body.result)).toEqual(sortedKeys(docs.result));
      expect(sortedKeys(body.result.result)).toEqual(sortedKeys(docs.result.result));
      expect(body.result.result.get_department).toEqual([expect.objectContaining({ ID: '1' })]);
      expect(body.result.result_error).toEqual(docs.result.result_error);
      expect(body.result.result_total).toEqual(docs.result.result_total);
      expect(body.result.result_next).toEqual(docs.result.result_next);
      expect(sortedKeys(body.result.result_time)).toEqual(sortedKeys(docs.result.result_time));
    }
    const oneBatch = ['batch', 'user.current', 'department.get'];
    expect(fake.calls.map((c) => c.method)).toEqual([...oneBatch, ...oneBatch]);
    expect(fake.calls[2]?.params).toEqual({ ID: 1 });
  });

  it('runs every command with halt=0 and stops at the first error with halt=1, always with HTTP 200', async () => {
    // The docs' failing batches: both commands lack scope (insufficient_scope, §2).
    const scopeError = { status: 403, error: 'insufficient_scope', error_description: '' };
    fake.failNext('user.current', scopeError);
    fake.failNext('department.get', scopeError);
    const halt0 = await call('batch', { ...exampleJson('batch.request-linked.json'), halt: 0 });
    expect(halt0.status).toBe(200);
    expect(halt0.body.result).toEqual(exampleJson('batch.response-error-halt0.json').result);

    fake.failNext('user.current', scopeError);
    const halt1 = await call('batch', { ...exampleJson('batch.request-linked.json'), halt: 1 });
    expect(halt1.status).toBe(200);
    expect(halt1.body.result).toEqual(exampleJson('batch.response-error-halt1.json').result);
    expect(fake.calls.map((c) => c.method).at(-1)).toBe('user.current');
  });

  it('numbers results when cmd is a list, refuses more than 50 commands and nested batches', async () => {
    const listed = await call('batch', { cmd: ['profile', 'user.current'] });
    expect(Array.isArray(listed.body.result.result)).toBe(true);
    expect(listed.body.result.result).toHaveLength(2);

    const tooMany = await call('batch', { cmd: Array.from({ length: 51 }, () => 'profile') });
    expect(tooMany).toEqual({
      status: 400,
      body: { error: 'ERROR_BATCH_LENGTH_EXCEEDED', error_description: 'Max batch length exceeded' },
    });

    const nested = await call('batch', { cmd: { inner: 'batch?cmd[a]=profile', ok: 'profile' } });
    expect(nested.status).toBe(200);
    expect(nested.body.result.result_error.inner.error).toBe('ERROR_BATCH_METHOD_NOT_ALLOWED');
    expect(sortedKeys(nested.body.result.result)).toEqual(['ok']);
  });
});

describe('events and placements (§9, §11)', () => {
  const handler = 'https://app.example.com/bitrix24/events';

  it('binds, lists and unbinds events with the documented replies', async () => {
    const bound = await call('event.bind', { event: 'OnCrmDealAdd', handler });
    expect(bound.body.result).toBe(exampleJson('event-bind.response.json').result);
    expect(await call('event.bind', { event: 'ONCRMDEALADD', handler })).toEqual({
      status: 400,
      body: exampleJson('event-bind.error-already-bound.json'),
    });
    const list = await call('event.get');
    const docsItem = exampleJson('event-get.response.json').result[0];
    expect(list.body.result).toEqual([{ event: 'ONCRMDEALADD', handler, auth_type: '0', offline: 0 }]);
    expect(sortedKeys(list.body.result[0])).toEqual(sortedKeys(docsItem));
    const unbound = await call('event.unbind', { event: 'ONCRMDEALADD', handler });
    expect(unbound.body.result).toEqual(exampleJson('event-unbind.response.json').result);
    expect(fake.eventBindings).toEqual([]);
    expect(await call('event.bind', { event: 'ONNOSUCHTHING', handler })).toEqual({
      status: 400,
      body: exampleJson('event-bind.error-not-found.json'),
    });
  });

  it('binds a non-admin handler to that user’s own tokens', async () => {
    await call('event.bind', { event: 'OnImConnectorMessageAdd', handler }, fake.issueAuth(2).access_token);
    expect(fake.eventBindings).toEqual([expect.objectContaining({ event: 'ONIMCONNECTORMESSAGEADD', authType: 2 })]);
  });

  it('delivers bound events as PHP form POSTs, but only once the app is installed', async () => {
    const receiver = await startReceiver();
    try {
      await call('event.bind', { event: 'ONCRMDEALADD', handler: `${receiver.url}/events` });
      expect(await fake.deliverEvent('ONCRMDEALADD', { FIELDS: { ID: 7405 } })).toEqual([]);
      fake.installFinish();
      const replies = await fake.deliverEvent('ONCRMDEALADD', { FIELDS: { ID: 7405 } });
      expect(replies).toEqual([expect.objectContaining({ status: 200 })]);
      const parsed: Json = parsePhpQuery(receiver.requests[0]?.body ?? '');
      const docs = exampleJson('event-oncrmdealadd.json');
      expect(sortedKeys(parsed)).toEqual(sortedKeys(docs));
      expect(parsed.data).toEqual(docs.data);
      expect(parsed.auth).not.toHaveProperty('refresh_token');
    } finally {
      await receiver.close();
    }
  });

  it('binds, lists and unbinds placements with the documented replies', async () => {
    const request = exampleJson('placement-bind.request.json');
    expect((await call('placement.bind', request)).body.result).toBe(exampleJson('placement-bind.response.json').result);
    expect((await call('placement.bind', request)).body).toEqual(exampleJson('event-bind.error-already-bound.json'));
    const list = await call('placement.get');
    expect(list.body.result).toHaveLength(1);
    expect(sortedKeys(list.body.result[0])).toEqual(sortedKeys(exampleJson('placement-get.response.json').result[0]));
    expect(list.body.result[0]).toMatchObject({ placement: 'CRM_DEAL_DETAIL_TAB', handler: request.HANDLER, options: [] });
    expect(await call('placement.bind', { HANDLER: request.HANDLER })).toEqual({
      status: 400,
      body: exampleJson('placement-bind.error-argument.json'),
    });
    expect((await call('placement.unbind', { PLACEMENT: 'CRM_DEAL_DETAIL_TAB' })).body.result).toEqual({ count: 1 });
  });
});

describe('CRM (§10)', () => {
  it('adds a lead from the docs request and reads it back with multifield items', async () => {
    const { auth: _placeholder, ...request } = exampleJson('crm-lead-add.request.json');
    const added = await call('crm.lead.add', request);
    expect(typeof added.body.result).toBe('number');
    const lead = await call('crm.lead.get', { id: added.body.result });
    expect(lead.body.result).toMatchObject({
      ID: String(added.body.result),
      TITLE: 'IP Titov',
      OPPORTUNITY: '12500',
      HAS_PHONE: 'Y',
    });
    const docsPhone = exampleJson('crm-contact-get.response.json').result.PHONE[0];
    expect(sortedKeys(lead.body.result.PHONE[0])).toEqual(sortedKeys(docsPhone));
    expect(lead.body.result.PHONE[0]).toMatchObject({ VALUE: '555888', VALUE_TYPE: 'WORK', TYPE_ID: 'PHONE' });
    expect(await call('crm.lead.get', { id: 999_999 })).toEqual({
      status: 400,
      body: exampleJson('rest-error-crm-not-found.json'),
    });
  });

  it('finds duplicates by phone, answers [] when there are none and the docs error without a type', async () => {
    const contactId = fake.seedContact({ name: 'Ann', phones: ['+7 (999) 123-45-67'] });
    const found = await call('crm.duplicate.findbycomm', { type: 'PHONE', values: ['79991234567'], entity_type: 'CONTACT' });
    expect(found.body.result).toEqual({ CONTACT: [contactId] });
    expect(sortedKeys(found.body.time)).toEqual(DOCS_TIME_KEYS);
    expect((await call('crm.duplicate.findbycomm', { type: 'PHONE', values: ['000'] })).body.result).toEqual([]);
    expect(await call('crm.duplicate.findbycomm', { values: ['000'] })).toEqual({
      status: 400,
      body: exampleJson('crm-duplicate-findbycomm.error.json'),
    });
  });

  it('adds timeline comments with lowercase fields only and refuses an empty comment', async () => {
    const dealId = fake.seedDeal({ title: 'Order 1024' });
    const request = exampleJson('crm-timeline-comment-add.request.json');
    const added = await call('crm.timeline.comment.add', { fields: { ...request.fields, ENTITY_ID: dealId } });
    expect(typeof added.body.result).toBe('number');
    expect(fake.timelineComments).toEqual([
      expect.objectContaining({
        id: added.body.result,
        entityType: 'deal',
        entityId: dealId,
        comment: 'New comment was added',
      }),
    ]);
    const empty = await call('crm.timeline.comment.add', { fields: { ...request.fields, ENTITY_ID: dealId, COMMENT: ' ' } });
    expect(empty).toMatchObject({ status: 400, body: { error: 'INVALID_ARG_VALUE' } });
    const uppercase = await call('crm.timeline.comment.add', { FIELDS: { ...request.fields, ENTITY_ID: dealId } });
    expect(uppercase.status).toBe(400);
    const noOwner = await call('crm.timeline.comment.add', { fields: { ...request.fields, ENTITY_ID: 1 } });
    expect(noOwner).toMatchObject({ status: 400, body: { error: 'OWNER_NOT_FOUND' } });
  });

  it("lists an owner's timeline comments in pages of 50, newest first when asked, and needs both filter fields", async () => {
    const dealId = fake.seedDeal({ title: 'Order 2048' });
    const otherDeal = fake.seedDeal({ title: 'Other' });
    // In batches: 60 single calls would overrun the bucket (§4).
    for (const from of [0, 30]) {
      const cmd = Object.fromEntries(
        Array.from({ length: 30 }, (_, j) => [`c${from + j}`, `crm.timeline.comment.add?fields[ENTITY_ID]=${dealId}&fields[ENTITY_TYPE]=deal&fields[COMMENT]=note%20${from + j}`]),
      );
      expect((await call('batch', { halt: 1, cmd })).status).toBe(200);
    }
    await call('crm.timeline.comment.add', { fields: { ENTITY_ID: otherDeal, ENTITY_TYPE: 'deal', COMMENT: 'elsewhere' } });
    const filter = { ENTITY_ID: dealId, ENTITY_TYPE: 'deal' };
    const first = await call('crm.timeline.comment.list', { filter, order: { ID: 'DESC' } });
    expect(first.body).toMatchObject({ total: 60, next: 50 });
    expect(first.body.result).toHaveLength(50);
    expect(first.body.result[0]).toEqual({
      ID: expect.any(String),
      ENTITY_ID: String(dealId),
      ENTITY_TYPE: 'deal',
      CREATED: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$/),
      COMMENT: 'note 59',
      AUTHOR_ID: expect.any(String),
      FILES: {},
    });
    const second = await call('crm.timeline.comment.list', { filter, order: { ID: 'DESC' }, start: 50 });
    expect(second.body.result.map((item: { COMMENT: string }) => item.COMMENT)).toEqual(Array.from({ length: 10 }, (_, i) => `note ${9 - i}`));
    expect(second.body.next).toBeUndefined();
    const missing = await call('crm.timeline.comment.list', { filter: { ENTITY_ID: dealId } });
    expect(missing.status).toBe(400);
  });

  it('lists records by field equality (an array is any of), derives lead and deal progress, orders and selects', async () => {
    const contact = fake.seedContact({ name: 'Ann' });
    const open = fake.seedDeal({ contactId: contact, fields: { DATE_MODIFY: '2026-02-01T10:00:00+03:00' } });
    const newer = fake.seedDeal({ contactId: contact, fields: { DATE_MODIFY: '2026-03-01T10:00:00+03:00' } });
    fake.seedDeal({ contactId: contact, fields: { STAGE_ID: 'C3:WON' } });
    const deals = await call('crm.deal.list', { filter: { CONTACT_ID: [contact], CLOSED: 'N' }, select: ['ID', 'DATE_MODIFY'], order: { DATE_MODIFY: 'DESC' } });
    expect(deals.body.result).toEqual([
      { ID: String(newer), DATE_MODIFY: '2026-03-01T10:00:00+03:00' },
      { ID: String(open), DATE_MODIFY: '2026-02-01T10:00:00+03:00' },
    ]);
    const inProgress = fake.seedLead({ fields: { STATUS_ID: 'IN_PROCESS' } });
    const converted = fake.seedLead({ fields: { STATUS_ID: 'CONVERTED' } });
    const leads = await call('crm.lead.list', { filter: { ID: [inProgress, converted], STATUS_SEMANTIC_ID: 'P' }, select: ['ID'] });
    expect(leads.body).toMatchObject({ result: [{ ID: String(inProgress) }], total: 1 });
    const origin = await call('crm.lead.add', { fields: { TITLE: 'ours', ORIGINATOR_ID: 'chat2desk', ORIGIN_ID: '77' } });
    const byOrigin = await call('crm.lead.list', { filter: { ORIGINATOR_ID: 'chat2desk', ORIGIN_ID: '77' }, select: ['ID'] });
    expect(byOrigin.body.result).toEqual([{ ID: String(origin.body.result) }]);
  });

  it('refuses a record without a field the portal requires, naming it, until the requirement is lifted', async () => {
    fake.requireFields('lead', ['UF_CRM_REGION']);
    const refused = await call('crm.lead.add', { fields: { TITLE: 'no region' } });
    expect(refused).toMatchObject({ status: 400, body: { error: '', error_description: 'Required field "UF_CRM_REGION" is not filled.' } });
    expect((await call('crm.lead.add', { fields: { TITLE: 'with region', UF_CRM_REGION: 'North' } })).status).toBe(200);
    fake.requireFields('lead', []);
    expect((await call('crm.lead.add', { fields: { TITLE: 'no region' } })).status).toBe(200);
    expect(fake.crm.leads.size).toBe(2);
  });
});

/** A `*.printr.txt` example: `[KEY] => value` lines in order. */
function examplePrintr(name: string): Array<[string, string]> {
  return [...example(name).matchAll(/^\s+\[([^\]]+)\] => (.*)$/gm)].map((m) => [m[1] ?? '', m[2] ?? '']);
}

/** Serves files by GET the way a connector's file host would, and counts the downloads. */
async function startFileHost(files: Record<string, { body: string; type: string }>): Promise<{ url: string; gets: string[]; close(): Promise<void> }> {
  const gets: string[] = [];
  const app = new Hono();
  app.get('*', (c) => {
    gets.push(c.req.path);
    const file = files[c.req.path];
    return file === undefined ? c.text('gone', 404) : c.body(file.body, 200, { 'content-type': file.type });
  });
  let server: Server | undefined;
  const url = await new Promise<string>((resolve) => {
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) => resolve(`http://127.0.0.1:${info.port}`)) as Server;
  });
  return {
    url,
    gets,
    close: () =>
      new Promise<void>((resolve) => {
        server?.close(() => resolve());
        server?.closeAllConnections();
      }),
  };
}

describe('Open Channels connector (§12; pages-and-modes §2.1, §6)', () => {
  const placementHandler = 'https://app.example.com/bitrix24/connector';
  const register = (id = 'myconnector', extra: Record<string, unknown> = {}) =>
    call('imconnector.register', {
      ID: id,
      NAME: 'Chat2Desk',
      ICON: { DATA_IMAGE: 'data:image/svg+xml;charset=US-ASCII,%3Csvg%3E' },
      PLACEMENT_HANDLER: placementHandler,
      ...extra,
    });

  /** The docs' send.messages request, on the fake's line 1 with a connector registered and activated there. */
  async function connectedLine(): Promise<Json> {
    await register();
    await call('imconnector.activate', { CONNECTOR: 'myconnector', LINE: 1, ACTIVE: 1 });
    const request = exampleJson('imconnector-send-messages.request.json');
    delete request.auth;
    request.LINE = 1;
    return request;
  }

  it('registers a connector like the docs: nested result, 200 errors, lower-cased ID, no point, re-register replaces (§12.1)', async () => {
    const registered = await register('MyConnector');
    expect(registered.status).toBe(200);
    expect(registered.body.result).toEqual(exampleJson('imconnector-register.response.json').result);
    expect(sortedKeys(registered.body.time)).toEqual(DOCS_TIME_KEYS);
    expect([...fake.connectors.keys()]).toEqual(['myconnector']);
    // §12.1 "errors come as HTTP 200 with result.result=false, error, error_description".
    const noId = await call('imconnector.register', { NAME: 'x' });
    expect(noId.status).toBe(200);
    expect(noId.body.result).toEqual({ ...exampleJson('imconnector-register.error-200.json').result, error_description: expect.any(String) });
    const point = await register('my.connector');
    expect(point.status).toBe(200);
    expect(point.body.result).toMatchObject({ result: false, error: 'APPLICATION_REGISTRATION_ERROR_POINT' });
    // §12.1 "Re-register same ID to change handler".
    await register('myconnector', { PLACEMENT_HANDLER: 'https://app.example.com/v2/connector' });
    expect(fake.connectors.get('myconnector')).toMatchObject({ PLACEMENT_HANDLER: 'https://app.example.com/v2/connector' });
    // ru:imconnector-list.md: every connector of the portal, with its name, Bitrix24's own too.
    expect((await call('imconnector.list')).body.result).toMatchObject({ livechat: expect.any(String), myconnector: 'Chat2Desk' });
    expect((await call('imconnector.unregister', { ID: 'myconnector' })).body.result).toEqual({ result: true });
    expect(fake.connectors.size).toBe(0);
  });

  it('activates on a line, sets data and errors, and shows them as status flags (§12.3, §12.4)', async () => {
    await register();
    const activated = await call('imconnector.activate', { CONNECTOR: 'myconnector', LINE: 1, ACTIVE: 1 });
    expect(activated.body.result).toBe(exampleJson('imconnector-activate.response.json').result);
    expect(await call('imconnector.activate', { CONNECTOR: 'myconnector', LINE: 1 })).toEqual({
      status: 400,
      body: { ...exampleJson('imconnector-activate.error.json'), argument: 'ACTIVE' },
    });
    expect((await call('imconnector.activate', { CONNECTOR: 'nosuch', LINE: 1, ACTIVE: 1 })).body.error).toBe('IMCONNECTOR_NO_CORRECT_PROVIDER');
    expect((await call('imconnector.status', { CONNECTOR: 'myconnector', LINE: 1 })).body.result).toMatchObject({ STATUS: false, CONFIGURED: false, ERROR: false });
    const data = { ID: 'c2d-1', URL: 'https://web.chat2desk.com', URL_IM: 'https://web.chat2desk.com', NAME: 'Chat2Desk' };
    expect((await call('imconnector.connector.data.set', { CONNECTOR: 'myconnector', LINE: 1, DATA: data })).body.result).toBe(true);
    expect((await call('imconnector.status', { CONNECTOR: 'myconnector', LINE: 1 })).body.result).toMatchObject({ STATUS: true, CONFIGURED: true });
    expect((await call('imconnector.status', { CONNECTOR: 'myconnector', LINE: 0 })).body.result).toMatchObject({ STATUS: false, CONFIGURED: false });
    expect((await call('imconnector.set.error', { CONNECTOR: 'myconnector', LINE: 1 })).body.result).toBe(true);
    // ru:imconnector-status.md: STATUS = "configured and without an error".
    expect((await call('imconnector.status', { CONNECTOR: 'myconnector', LINE: 1 })).body.result).toEqual({
      LINE: '1',
      CONNECTOR: 'myconnector',
      ERROR: true,
      CONFIGURED: true,
      STATUS: false,
    });
    expect(fake.connectorLines.get('myconnector 1')).toMatchObject({ active: true, connected: true, error: true, data });
    // ACTIVE=0 is a value, not "empty".
    expect((await call('imconnector.activate', { CONNECTOR: 'myconnector', LINE: 1, ACTIVE: 0 })).body.result).toBe(true);
    expect(fake.connectorLines.get('myconnector 1')?.active).toBe(false);
  });

  it('lists, reads and adds open lines, starting with one (§12.4)', async () => {
    expect((await call('imopenlines.config.list.get')).body.result).toEqual([{ ID: '1', LINE_NAME: 'Open Channel', ACTIVE: 'Y' }]);
    const added = await call('imopenlines.config.add', { PARAMS: { LINE_NAME: 'WhatsApp' } });
    expect(added.body.result).toBe(2);
    expect((await call('imopenlines.config.get', { CONFIG_ID: 2 })).body.result).toEqual({ ID: '2', LINE_NAME: 'WhatsApp', ACTIVE: 'Y' });
    expect((await call('imopenlines.config.list.get')).body.result).toHaveLength(2);
  });

  it('takes the docs send.messages request, downloads its file, and answers in the docs shape (§12.5)', async () => {
    const host = await startFileHost({ '/files/spec.pdf': { body: '%PDF-1.4 spec', type: 'application/pdf' } });
    try {
      const request = await connectedLine();
      request.MESSAGES[0].message.files[0].url = `${host.url}/files/spec.pdf`;
      const sent = await call('imconnector.send.messages', request);
      expect(sent.status).toBe(200);
      const docs = exampleJson('imconnector-send-messages.response.json');
      expect(sortedKeys(sent.body.result)).toEqual(sortedKeys(docs.result));
      const [item] = sent.body.result.DATA.RESULT;
      const docsItem = docs.result.DATA.RESULT[0];
      expect(sortedKeys(item)).toEqual(sortedKeys(docsItem));
      expect(item.message).toEqual(docsItem.message);
      expect(item.chat).toEqual(docsItem.chat);
      expect(item.extra).toEqual(docsItem.extra);
      expect(item.session).toEqual({ ID: expect.stringMatching(/^\d+$/), CHAT_ID: expect.stringMatching(/^\d+$/) });
      expect(item.user).toMatch(/^\d+$/);

      // §12.5 "File url must be reachable by Bitrix24 (it downloads)": fetched before the answer.
      expect(host.gets).toEqual(['/files/spec.pdf']);
      const [chat] = fake.openLineChats(1);
      expect(chat).toMatchObject({ connector: 'myconnector', externalChatId: 'channel-123', externalUserId: 'ext-user-42', name: 'Ivan', lastName: 'Ivanov' });
      expect(String(chat?.chatId)).toBe(item.session.CHAT_ID);
      const [message] = fake.openLineMessages(1, 'channel-123');
      expect(message).toMatchObject({ from: 'client', externalIds: ['ext-msg-1001'], text: 'Good afternoon', date: 1773265993 });
      expect(message?.files[0]?.download).toMatchObject({ status: 200, contentType: 'application/pdf' });
      const download: Json = message?.files[0]?.download;
      expect(String(download.body)).toBe('%PDF-1.4 spec');

      // The same chat.id stays in the same chat and session; messages keep their order; a dead url is recorded as such.
      request.MESSAGES[0].message = { id: 'ext-msg-1002', date: 1773266000, text: 'And a photo', files: [{ url: `${host.url}/files/none.jpg`, name: 'none.jpg' }] };
      const second = await call('imconnector.send.messages', request);
      expect(second.body.result.DATA.RESULT[0].session).toEqual(item.session);
      expect(fake.openLineChats(1)).toHaveLength(1);
      expect(fake.openLineMessages(1, 'channel-123').map((m) => m.text)).toEqual(['Good afternoon', 'And a photo']);
      expect(fake.openLineMessages(1, 'channel-123')[1]?.files[0]?.download).toMatchObject({ status: 404 });
    } finally {
      await host.close();
    }
  });

  it('refuses an unknown connector, an inactive line, empty MESSAGES and names with digits (§12.5)', async () => {
    const request = await connectedLine();
    delete request.MESSAGES[0].message.files;
    expect((await call('imconnector.send.messages', { ...request, CONNECTOR: 'other' })).body.error).toBe('IMCONNECTOR_NO_CORRECT_PROVIDER');
    expect(await call('imconnector.send.messages', { ...request, LINE: 9 })).toEqual({
      status: 400,
      body: { error: 'NOT_ACTIVE_LINE', error_description: 'Line with this ID is inactive or does not exist' },
    });
    expect(await call('imconnector.send.messages', { CONNECTOR: 'myconnector', LINE: 1 })).toEqual({
      status: 400,
      body: { ...exampleJson('imconnector-send-messages.error.json'), argument: 'MESSAGES' },
    });
    // §12.5 "letters, spaces, hyphens, apostrophes only, ≤25 chars (digits rejected!)".
    for (const user of [{ name: 'Ivan2' }, { last_name: 'x'.repeat(26) }, { name: 'Ivan!' }, { id: '' }]) {
      const refused = await call('imconnector.send.messages', { ...request, MESSAGES: [{ ...request.MESSAGES[0], user: { ...request.MESSAGES[0].user, ...user } }] });
      expect(refused.status).toBe(200);
      expect(refused.body.result).toMatchObject({ SUCCESS: false, DATA: { RESULT: [{ SUCCESS: false, ERRORS: [{ code: 'IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA' }] }] } });
    }
    expect(fake.openLineChats(1)).toEqual([]);
    // "Язык и регистр могут быть любыми" (ru:imconnector-send-messages.md).
    const accepted = { ...request.MESSAGES[0], user: { ...request.MESSAGES[0].user, name: "Jean-Luc O'Neil", last_name: 'Müller Ñandú' } };
    expect((await call('imconnector.send.messages', { ...request, MESSAGES: [accepted] })).body.result.SUCCESS).toBe(true);
    // "on behalf of the manager, by user_id in message": recorded for the app's tests to see.
    const asManager = { ...request.MESSAGES[0], message: { id: 'c2d-out-1', date: 1773266001, text: 'Sent from Chat2Desk', user_id: 0 } };
    await call('imconnector.send.messages', { ...request, MESSAGES: [asManager] });
    expect(fake.openLineMessages(1, 'channel-123').at(-1)).toMatchObject({ from: 'client', sentAsUserId: 0, text: 'Sent from Chat2Desk' });
    await call('imconnector.activate', { CONNECTOR: 'myconnector', LINE: 1, ACTIVE: 0 });
    expect((await call('imconnector.send.messages', request)).body.error).toBe('NOT_ACTIVE_LINE');
  });

  it("updates and deletes a client's message by its external id (§12.5)", async () => {
    const request = await connectedLine();
    delete request.MESSAGES[0].message.files;
    await call('imconnector.send.messages', request);
    const target = { user: { id: 'ext-user-42' }, message: { id: 'ext-msg-1001', text: 'Good evening' }, chat: { id: 'channel-123' } };
    expect((await call('imconnector.update.messages', { CONNECTOR: 'myconnector', LINE: 1, MESSAGES: [target] })).body.result.SUCCESS).toBe(true);
    expect(fake.openLineMessages(1, 'channel-123')[0]?.text).toBe('Good evening');
    expect((await call('imconnector.delete.messages', { CONNECTOR: 'myconnector', LINE: 1, MESSAGES: [target] })).body.result.SUCCESS).toBe(true);
    expect(fake.openLineMessages(1, 'channel-123')[0]?.deleted).toBe(true);
  });

  it('answers a record’s latest Open Channel chat by type name in any case, CRM_CHAT_EMPTY_CRM_DATA when there is none or the user may not see it (pages-and-modes §6)', async () => {
    const request = await connectedLine();
    delete request.MESSAGES[0].message.files;
    await call('imconnector.send.messages', request);
    const second = { ...request.MESSAGES[0], message: { id: 'ext-msg-2001', date: 1773266002, text: 'Hi again' }, chat: { id: 'channel-456' } };
    await call('imconnector.send.messages', { ...request, MESSAGES: [second] });
    const deal = fake.seedDeal();
    const lastId = (params: Record<string, unknown>, token?: string) => call('imopenlines.crm.chat.getLastId', params, token);
    // ru:imopenlines-crm-chat-get-last-id.md error table, word for word.
    const notFound = { status: 400, body: { error: 'CRM_CHAT_EMPTY_CRM_DATA', error_description: 'Could not find CRM entity' } };
    expect(await lastId({ CRM_ENTITY_TYPE: 'deal', CRM_ENTITY: deal })).toEqual(notFound);
    const first = fake.linkOpenLineChatToCrm({ line: 1, externalChatId: 'channel-123', entityTypeId: 2, entityId: deal });
    expect(await lastId({ CRM_ENTITY_TYPE: 'deal', CRM_ENTITY: deal })).toMatchObject({ status: 200, body: { result: first } });
    // The record's latest chat wins; the portal upper-cases the type (Crm\Common::getCrmEntityIdByTypeCode).
    const latest = fake.linkOpenLineChatToCrm({ line: 1, externalChatId: 'channel-456', entityTypeId: 2, entityId: deal });
    expect(latest).not.toBe(first);
    expect((await lastId({ CRM_ENTITY_TYPE: 'DEAL', CRM_ENTITY: String(deal) })).body.result).toBe(latest);
    expect(await lastId({ CRM_ENTITY_TYPE: 'lead', CRM_ENTITY: deal })).toEqual(notFound);
    expect(await lastId({ CRM_ENTITY_TYPE: 'dynamic_183', CRM_ENTITY: deal })).toEqual(notFound);
    expect(await lastId({ CRM_ENTITY_TYPE: 'deal' })).toEqual({ status: 400, body: { error: 'CRM_CHAT_EMPTY_CRM_DATA', error_description: 'Empty CRM data' } });
    expect((await lastId({ CRM_ENTITY_TYPE: 'deal', CRM_ENTITY: 'x1' })).body.error).toBe('ERROR_ARGUMENT');
    // A user outside the record's CRM rights hears what "no chat" sounds like.
    fake.denyRead(2, 2, deal);
    expect(await lastId({ CRM_ENTITY_TYPE: 'deal', CRM_ENTITY: deal }, fake.issueAuth(2).access_token)).toEqual(notFound);
  });

  it('delivers an operator message as the docs ONIMCONNECTORMESSAGEADD, undelivered until confirmed with message.id as an array (§12.6, §12.7, pages-and-modes §6)', async () => {
    const receiver = await startReceiver();
    try {
      const request = await connectedLine();
      delete request.MESSAGES[0].message.files;
      await call('imconnector.send.messages', request);
      await call('event.bind', { event: 'OnImConnectorMessageAdd', handler: `${receiver.url}/connector` });
      fake.installFinish();
      const written = await fake.operatorWrites({ line: 1, externalChatId: 'channel-123', userId: 2, text: 'Guten Tag!' });
      expect(written.replies).toEqual([expect.objectContaining({ status: 200 })]);
      const body = receiver.requests[0]?.body ?? '';
      expect(receiver.requests[0]?.contentType).toBe('application/x-www-form-urlencoded');
      // Same keys in the same order as the docs-derived form, values of this portal.
      expect(formKeys(body)).toEqual(exampleForm('onimconnectormessageadd.form.txt').keys);
      const parsed: Json = parsePhpQuery(body);
      const chat = fake.openLineChats(1)[0];
      expect(parsed.data).toEqual({
        CONNECTOR: 'myconnector',
        LINE: '1',
        MESSAGES: [
          {
            im: { chat_id: String(chat?.chatId), message_id: String(written.imMessageId) },
            message: { user_id: '2', text: '[b]Max Manager:[/b] [br]Guten Tag!' },
            chat: { id: 'channel-123' },
          },
        ],
      });
      expect(parsed.auth).toMatchObject({ user_id: '2', application_token: fake.applicationToken, member_id: fake.memberId });
      expect(fake.openLineMessages(1, 'channel-123')[1]).toMatchObject({ from: 'operator', delivery: 'undelivered' });

      // A scalar message.id is what the docs once showed; Bitrix24 ignores it (pages-and-modes §6).
      const status = exampleJson('imconnector-send-status-delivery.request.json');
      delete status.auth;
      const confirm = (id: unknown) => ({
        ...status,
        CONNECTOR: 'myconnector',
        LINE: 1,
        MESSAGES: [{ im: parsed.data.MESSAGES[0].im, message: { id, date: 1738065600 }, chat: { id: 'channel-123' } }],
      });
      const scalar = await call('imconnector.send.status.delivery', confirm('c2d-77'));
      expect(scalar.body.result).toEqual(exampleJson('imconnector-send-status-delivery.response.json').result);
      expect(fake.openLineMessages(1, 'channel-123')[1]?.delivery).toBe('undelivered');
      expect(fake.connectorStatusReports[0]?.messages).toEqual([{ imMessageId: written.imMessageId, externalChatId: 'channel-123', ids: 'c2d-77', accepted: false }]);
      // As a PHP form (MESSAGES[0][message][id][0]=…), the array survives.
      const form = phpHttpBuildQuery({ ...confirm(['c2d-77']), auth: adminToken() });
      expect(form).toContain('%5Bid%5D%5B0%5D=c2d-77');
      expect((await callForm('imconnector.send.status.delivery', form)).body.result.SUCCESS).toBe(true);
      expect(fake.openLineMessages(1, 'channel-123')[1]).toMatchObject({ delivery: 'delivered', externalIds: ['c2d-77'] });
      await call('imconnector.send.status.reading', confirm(['c2d-77']));
      expect(fake.openLineMessages(1, 'channel-123')[1]?.read).toBe(true);
    } finally {
      await receiver.close();
    }
  });

  it("sends an operator's file as the file example's keys, downloadable only with an access token (§12.6, UNVERIFIED example)", async () => {
    const receiver = await startReceiver();
    try {
      const request = await connectedLine();
      delete request.MESSAGES[0].message.files;
      await call('imconnector.send.messages', request);
      await call('event.bind', { event: 'OnImConnectorMessageAdd', handler: `${receiver.url}/connector` });
      fake.installFinish();
      await fake.operatorWrites({ line: 1, externalChatId: 'channel-123', text: '', files: [{ name: 'photo.jpg', content: 'JPEGDATA', mime: 'image/jpeg' }] });
      const body = receiver.requests[0]?.body ?? '';
      expect(formKeys(body)).toEqual(exampleForm('onimconnectormessageadd-with-file.form.txt').keys);
      const file = (parsePhpQuery(body) as Json).data.MESSAGES[0].message.files[0];
      expect(file).toMatchObject({ name: 'photo.jpg', mime: 'image/jpeg', size: '8', type: 'image' });
      expect(file.downloadLink).toMatch(/^\/rest\/download\.json\?token=disk%7C/);
      const withAuth = `${fake.portalUrl}${file.downloadLink}&auth=${adminToken()}`;
      const downloaded = await fetch(withAuth);
      expect(downloaded.status).toBe(200);
      expect(downloaded.headers.get('content-type')).toBe('image/jpeg');
      expect(await downloaded.text()).toBe('JPEGDATA');
      expect((await fetch(`${fake.portalUrl}${file.downloadLink}`)).status).toBe(401);
      fake.expireAccessTokens();
      expect((await fetch(withAuth)).status).toBe(401);
    } finally {
      await receiver.close();
    }
  });

  it('delivers Update, Delete, LineDelete and StatusDelete in the docs forms (§12.8)', async () => {
    const receiver = await startReceiver();
    try {
      const request = await connectedLine();
      delete request.MESSAGES[0].message.files;
      await call('imconnector.send.messages', request);
      const handler = `${receiver.url}/connector`;
      for (const event of ['OnImConnectorMessageUpdate', 'OnImConnectorMessageDelete', 'OnImConnectorLineDelete', 'OnImConnectorStatusDelete']) {
        await call('event.bind', { event, handler });
      }
      fake.installFinish();
      const { imMessageId } = await fake.operatorWrites({ line: 1, externalChatId: 'channel-123', text: 'Hi' });
      await call('imconnector.send.status.delivery', {
        CONNECTOR: 'myconnector',
        LINE: 1,
        MESSAGES: [{ im: { chat_id: fake.openLineChats(1)[0]?.chatId, message_id: imMessageId }, message: { id: ['ext-msg-005'] }, chat: { id: 'channel-123' } }],
      });
      await fake.operatorEdits({ line: 1, externalChatId: 'channel-123', imMessageId, text: 'What questions do you have?' });
      await fake.operatorDeletes({ line: 1, externalChatId: 'channel-123', imMessageId });
      await fake.disconnectConnector({ connector: 'myconnector', line: 1 });
      await fake.deleteOpenLine(1);
      const [update, remove, statusDelete, lineDelete] = receiver.requests.map((r) => r.body);
      expect(formKeys(update ?? '')).toEqual(exampleForm('onimconnectormessageupdate.form.txt').keys);
      expect((parsePhpQuery(update ?? '') as Json).data.MESSAGES[0].message).toEqual({ id: ['ext-msg-005'], text: '[b]Anna Admin:[/b][br] What questions do you have?' });
      expect(formKeys(remove ?? '')).toEqual(exampleForm('onimconnectormessagedelete.form.txt').keys);
      expect((parsePhpQuery(remove ?? '') as Json).data.MESSAGES[0].message).toEqual({ id: 'ext-msg-005' });
      expect(formKeys(statusDelete ?? '')).toEqual(exampleForm('onimconnectorstatusdelete.form.txt').keys);
      expect((parsePhpQuery(statusDelete ?? '') as Json).data).toEqual({ connector: 'myconnector', line: '1' });
      expect(formKeys(lineDelete ?? '')).toEqual(exampleForm('onimconnectorlinedelete.form.txt').keys);
      expect((parsePhpQuery(lineDelete ?? '') as Json).data).toBe('1');
      expect(fake.openLineChats(1)).toEqual([]);
      expect((await call('imopenlines.config.list.get')).body.result).toEqual([]);
    } finally {
      await receiver.close();
    }
  });

  it('opens the connector settings page like the docs SETTING_CONNECTOR POST (pages-and-modes §2.1)', async () => {
    await register();
    await call('imconnector.activate', { CONNECTOR: 'myconnector', LINE: 1, ACTIVE: 1 });
    const { query, body } = fake.settingConnectorPageRequest({ line: 1, connector: 'MyConnector' });
    const docs = examplePrintr('placement-setting-connector.printr.txt');
    expect([...formKeys(query), ...formKeys(body)]).toEqual(docs.map(([key]) => key));
    const options = new URLSearchParams(body).get('PLACEMENT_OPTIONS') ?? '';
    const docsOptions = JSON.parse(docs.find(([key]) => key === 'PLACEMENT_OPTIONS')?.[1] ?? '{}');
    expect(Object.keys(JSON.parse(options))).toEqual(Object.keys(docsOptions));
    expect(options).toContain('"URI":"\\/contact_center\\/connector\\/?ID=myconnector&IFRAME=Y&IFRAME_TYPE=SIDE_SLIDER"');
    expect(JSON.parse(options)).toMatchObject({ CONNECTOR: 'myconnector', LINE: '1', STATUS: false, ACTIVE_STATUS: true, CONNECTION_STATUS: false });
    expect(parsePhpQuery(body)).toMatchObject({ PLACEMENT: 'SETTING_CONNECTOR', APPLICATION_TOKEN: fake.applicationToken });
    const forced = fake.settingConnectorPageRequest({ line: 1, connector: 'myconnector', connectionStatus: true, status: true });
    expect(JSON.parse(new URLSearchParams(forced.body).get('PLACEMENT_OPTIONS') ?? '')).toMatchObject({ STATUS: true, CONNECTION_STATUS: true });
  });
});
