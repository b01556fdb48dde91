import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpRequest, MAX_ANSWER_BYTES, viaFetch } from '../src/http-request.js';

/** The protocol clients' transport against a loopback server: what they rely on of fetch holds here too. */
describe('httpRequest', () => {
  let server: Server;
  let base: string;
  const seen: Array<{ method?: string; url?: string; headers: IncomingMessage['headers']; body: string }> = [];
  const routes: Record<string, (response: ServerResponse) => void> = {
    '/json': (response) => response.writeHead(201, { 'content-type': 'application/json' }).end('{"status":"success","text":"привет"}'),
    '/gzip': (response) => response.writeHead(200, { 'content-encoding': 'gzip' }).end(gzipSync('{"compressed":true}')),
    '/huge': (response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(1024 * 1024, 0x20);
      let sent = 0;
      const more = () => {
        while (sent < MAX_ANSWER_BYTES / chunk.length + 2) {
          sent++;
          if (!response.write(chunk)) return void response.once('drain', more);
        }
        response.end();
      };
      more();
    },
    '/moved': (response) => response.writeHead(302, { location: 'https://example.invalid/rest/' }).end(),
    '/refused': (response) => response.writeHead(429).end('not json'),
    '/silent': () => undefined,
    '/stalled': (response) => {
      response.writeHead(200, { 'content-length': '100' });
      response.write('{"partial":');
    },
    // The status and half the body, then the connection drops.
    '/cut': (response) => {
      response.writeHead(200, { 'content-length': '100' });
      response.write('{"partial":');
      setTimeout(() => response.socket?.destroy(), 20);
    },
  };

  beforeAll(async () => {
    server = createServer((request, response) => {
      let body = '';
      request.setEncoding('utf8');
      request.on('data', (chunk: string) => {
        body += chunk;
      });
      request.on('end', () => {
        seen.push({ method: request.method, url: request.url, headers: request.headers, body });
        routes[new URL(request.url ?? '/', 'http://x').pathname]?.(response);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('sends the method, query, headers and body, and answers with status, headers and the decoded text', async () => {
    const url = new URL(`${base}/json`);
    url.searchParams.set('phone', '79261234567');
    const answer = await httpRequest(url, { method: 'POST', headers: { authorization: 'token', 'content-type': 'application/json' }, body: '{"text":"é"}' });
    expect(answer.status).toBe(201);
    expect(answer.ok).toBe(true);
    expect(answer.headers.get('Content-Type')).toBe('application/json');
    expect(answer.headers.get('x-missing')).toBeNull();
    expect(JSON.parse(await answer.text())).toEqual({ status: 'success', text: 'привет' });
    expect(seen.at(-1)).toMatchObject({ method: 'POST', url: '/json?phone=79261234567', body: '{"text":"é"}', headers: { authorization: 'token', 'content-length': '13' } });
  });

  it('sends the body of a DELETE too, with its length (Chat2Desk removes a tag that way)', async () => {
    const answer = await httpRequest(`${base}/json`, { method: 'DELETE', headers: { 'content-type': 'application/json' }, body: '{"client_id":7}' });
    expect(answer.status).toBe(201);
    expect(seen.at(-1)).toMatchObject({ method: 'DELETE', body: '{"client_id":7}', headers: { 'content-length': '15' } });
  });

  it('asks for no compression, so no decoder can be made to inflate an answer past the cap', async () => {
    const answer = await httpRequest(`${base}/gzip`, { method: 'GET', headers: {} });
    expect(seen.at(-1)?.headers['accept-encoding']).toBeUndefined();
    expect(Buffer.from(await answer.text(), 'latin1').subarray(0, 2)).not.toEqual(Buffer.from('{"'));
  });

  it('cuts off an answer longer than MAX_ANSWER_BYTES instead of reading it into memory', async () => {
    await expect(httpRequest(`${base}/huge`, { method: 'GET', headers: {} }).then((answer) => answer.text())).rejects.toBeInstanceOf(Error);
    const small = await httpRequest(`${base}/json`, { method: 'GET', headers: {} });
    expect(JSON.parse(await small.text())).toMatchObject({ status: 'success' });
  });

  it('does not follow a redirect, and says when a status is not a success', async () => {
    const moved = await httpRequest(`${base}/moved`, { method: 'POST', headers: {}, body: '{}', redirect: 'manual' });
    expect([moved.status, moved.ok, moved.headers.get('location')]).toEqual([302, false, 'https://example.invalid/rest/']);
    const refused = await httpRequest(`${base}/refused`, { method: 'GET', headers: {} });
    expect([refused.status, refused.ok, await refused.text()]).toEqual([429, false, 'not json']);
  });

  it('ends with a TimeoutError when the server does not answer in time, as fetch with a timeout signal does', async () => {
    await expect(httpRequest(`${base}/silent`, { method: 'GET', headers: {}, timeoutMs: 100 })).rejects.toMatchObject({ name: 'TimeoutError' });
    await expect(viaFetch(fetch)(`${base}/silent`, { method: 'GET', headers: {}, timeoutMs: 100 })).rejects.toMatchObject({ name: 'TimeoutError' });
  });

  it('ends with a TimeoutError when the answer stops half way', async () => {
    const answer = await httpRequest(`${base}/stalled`, { method: 'GET', headers: {}, timeoutMs: 200 });
    expect(answer.status).toBe(200);
    await expect(answer.text()).rejects.toMatchObject({ name: 'TimeoutError' });
  });

  it('fails the body, not the status, when the connection drops in the middle of the answer', async () => {
    const answer = await httpRequest(`${base}/cut`, { method: 'GET', headers: {} });
    expect(answer.status).toBe(200);
    // Node names it ("aborted", ECONNRESET); a partial body is never handed over as the answer.
    await expect(answer.text()).rejects.toBeInstanceOf(Error);
  });

  it('refuses a header value HTTP does not allow with a TypeError, sending nothing', async () => {
    const before = seen.length;
    await expect(httpRequest(`${base}/json`, { method: 'GET', headers: { authorization: 'tok\nen' } })).rejects.toBeInstanceOf(TypeError);
    expect(seen.length).toBe(before);
  });

  it('fails with the network error when nothing listens', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise((resolve) => closed.close(resolve));
    await expect(httpRequest(`http://127.0.0.1:${port}/`, { method: 'GET', headers: {} })).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});
