import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TestClock } from './support/clock.js';
import { eventually, installAndConfigure, startStack, type Stack } from './support/stack.js';
import { bearer, tabToken } from './support/viewer-tokens.js';

const PHONE = '79161234567';
/** The smallest valid PNG: signature, IHDR, IDAT, IEND. */
const PNG = Buffer.from('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082', 'hex');
const HTML = Buffer.from('<!doctype html><html><body><script>parent.postMessage(document.cookie, "*")</script></body></html>');
const SVG = Buffer.from('<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>');

interface Uploaded {
  id: string;
  name: string;
  size: number;
  type: string;
  expiresAt: string;
}

describe('Files for dialog actions', () => {
  let stack: Stack;
  let clock: TestClock;
  let token: string;

  beforeEach(async () => {
    clock = new TestClock();
    // Uploads may be larger than any other request body, on their route only.
    stack = await startStack({ clock, env: { MAX_BODY_BYTES: '2048', UPLOAD_MAX_BYTES: '4096', FILE_LINK_HOURS: '2' } });
    await installAndConfigure(stack, { defaultCountry: 'RU' });
    // Bitrix24 user 1 has the e-mail of Chat2Desk operator 617: mapped.
    token = await tabToken(stack, { userId: 1, phones: [PHONE], clock });
  });
  afterEach(() => stack.close());

  const upload = (bytes: Buffer, name: string, headers: Record<string, string> = bearer(token)) => {
    const form = new FormData();
    form.append('file', new Blob([new Uint8Array(bytes)]), name);
    return fetch(`${stack.server.url}/api/files`, { method: 'POST', headers, body: form });
  };
  const uploaded = async (bytes: Buffer, name: string): Promise<Uploaded> => {
    const response = await upload(bytes, name);
    expect(response.status).toBe(201);
    return (await response.json()) as Uploaded;
  };
  const linkOf = async (file: Uploaded): Promise<string> => {
    const row = (await stack.db.row('select secret from uploaded_files where id = ?', file.id)) as { secret: string };
    return `${stack.server.url}/files/${row.secret}/${encodeURIComponent(file.name)}`;
  };

  it('stores an image, sniffed from its bytes, and serves it as a download at an unguessable link', async () => {
    const file = await uploaded(PNG, 'photo.png');
    expect(file).toMatchObject({ name: 'photo.png', size: PNG.length, type: 'image/png' });
    expect(Date.parse(file.expiresAt) - clock.now()).toBeGreaterThan(2 * 3600_000 - 60_000);
    const link = await linkOf(file);
    expect(link).toMatch(/\/files\/[A-Za-z0-9_-]{43}\/photo\.png$/);
    const response = await fetch(link);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('image/png');
    expect(response.headers.get('content-disposition')).toBe("attachment; filename*=UTF-8''photo.png");
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(response.headers.get('content-security-policy')).toBe("sandbox; default-src 'none'");
    expect(Buffer.from(await response.arrayBuffer()).equals(PNG)).toBe(true);
    // A fetcher that asks HEAD first gets the same headers.
    const head = await fetch(link, { method: 'HEAD' });
    expect([head.status, head.headers.get('content-type'), head.headers.get('x-content-type-options')]).toEqual([200, 'image/png', 'nosniff']);
    // Another secret of the same shape, or the right secret with another name, is nothing.
    expect((await fetch(link.replace(/\/files\/[^/]+\//, `/files/${'A'.repeat(43)}/`))).status).toBe(404);
    expect((await fetch(link.replace(/photo\.png$/, 'other.png'))).status).toBe(404);
  });

  it('serves uploaded HTML and SVG as plain-text downloads that can never render, and sniffs an .html renamed .png', async () => {
    for (const [bytes, name] of [
      [HTML, 'page.html'],
      [SVG, 'logo.svg'],
      [HTML, 'innocent.png'],
    ] as const) {
      const file = await uploaded(bytes, name);
      expect(file.type, name).toBe('text/plain');
      const response = await fetch(await linkOf(file));
      expect(response.headers.get('content-type'), name).toBe('text/plain; charset=utf-8');
      expect(response.headers.get('content-disposition'), name).toMatch(/^attachment; /);
      expect(response.headers.get('x-content-type-options'), name).toBe('nosniff');
      expect(response.headers.get('content-security-policy'), name).toBe("sandbox; default-src 'none'");
    }
  });

  it('refuses what is not on the allow-list: a program is not sent to clients', async () => {
    const exe = Buffer.concat([Buffer.from('MZ'), Buffer.alloc(62), Buffer.from('PE\0\0')]);
    exe.writeUInt32LE(64, 60);
    const response = await upload(exe, 'invoice.pdf');
    expect(response.status).toBe(415);
    expect(((await response.json()) as { error: string }).error).toMatch(/cannot be sent: images, audio, video, PDF/);
    // Bytes no magic number knows and that are not text (a NUL).
    const binary = Buffer.from([0x13, 0x37, 0x00, 0x42, 0x00, 0x99]);
    expect((await upload(binary, 'data.bin')).status).toBe(415);
    expect(await stack.db.row('select count(*) as n from uploaded_files')).toEqual({ n: 0 });
  });

  it('keeps a unicode name but no path separators or control characters', async () => {
    const file = await uploaded(PNG, '../../etc/отчёт\u202Egnp.exe\n.png');
    expect(file.name).toBe('_.._etc_отчётgnp.exe.png');
    const response = await fetch(await linkOf(file));
    expect(response.status).toBe(200);
    expect(response.headers.get('content-disposition')).toBe(`attachment; filename*=UTF-8''${encodeURIComponent('_.._etc_отчётgnp.exe.png')}`);
  });

  it('refuses a file over UPLOAD_MAX_BYTES with 413 naming the limit, on this route only with the larger limit', async () => {
    // Over MAX_BODY_BYTES (2 KB), under UPLOAD_MAX_BYTES (4 KB): taken here, refused on any other route.
    const between = Buffer.concat([PNG, Buffer.alloc(3000)]);
    expect((await upload(between, 'between.png')).status).toBe(201);
    const elsewhere = await fetch(`${stack.server.url}/api/dialog-actions`, {
      method: 'POST',
      headers: bearer(token, { 'content-type': 'application/json' }),
      body: JSON.stringify({ key: 'k'.repeat(10), action: 'send', dialogId: 1, text: 'x'.repeat(3000) }),
    });
    expect(elsewhere.status).toBe(413);
    const justOver = await upload(Buffer.concat([PNG, Buffer.alloc(4096)]), 'big.png');
    expect(justOver.status).toBe(413);
    expect(((await justOver.json()) as { error: string }).error).toBe('The file is larger than 4 KB, the most this server takes (UPLOAD_MAX_BYTES)');
    const farOver = await upload(Buffer.alloc(200 * 1024, 1), 'huge.png');
    expect(farOver.status).toBe(413);
    expect(((await farOver.json()) as { error: string }).error).toContain('4 KB');
    // Refused from its length before it is read: the rest of the body would poison the connection.
    expect(farOver.headers.get('connection')).toBe('close');
    expect(await stack.db.row('select count(*) as n from uploaded_files')).toEqual({ n: 1 });
  });

  it('bounds what one user keeps stored until the links expire, at ten times UPLOAD_MAX_BYTES', async () => {
    const photo = Buffer.concat([PNG, Buffer.alloc(3000)]);
    for (let n = 0; n < 13; n++) await uploaded(photo, `photo-${n}.png`);
    const refused = await upload(photo, 'one-more.png');
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { error: string }).error).toMatch(/^You have 38\.9 KB of files whose links have not expired yet, and 40 KB is the most one user keeps/);
    expect(await stack.db.row('select count(*) as n from uploaded_files')).toEqual({ n: 13 });
    // Once the links expire there is room again.
    clock.advance(2 * 3600_000 + 1);
    expect((await upload(photo, 'one-more.png', bearer(await tabToken(stack, { userId: 1, phones: [PHONE], clock })))).status).toBe(201);
  });

  it('answers 410 once the link expired, and the maintenance deletes the file', async () => {
    // connection: close throughout, so the request after the restart does not reuse the old server's sockets.
    const response = await upload(PNG, 'photo.png', bearer(token, { connection: 'close' }));
    const file = (await response.json()) as Uploaded;
    const link = await linkOf(file);
    clock.advance(2 * 3600_000 + 1);
    const expired = await fetch(link, { headers: { connection: 'close' } });
    expect(expired.status).toBe(410);
    // The maintenance runs at start (in the background), then hourly.
    await stack.restart();
    await eventually(async () => (await stack.db.row<{ n: number }>('select count(*) as n from uploaded_files'))!.n === 0, 5_000, 'the maintenance at start');
    expect((await fetch(link)).status).toBe(404);
  });

  it('refuses an upload by a user without a Chat2Desk operator, a cross-site one, and one without a valid token', async () => {
    const unmapped = await upload(PNG, 'a.png', bearer(await tabToken(stack, { userId: 7, phones: [PHONE], clock })));
    expect(unmapped.status).toBe(403);
    expect(await unmapped.json()).toMatchObject({ code: 'not_mapped' });
    const crossSite = await upload(PNG, 'a.png', bearer(token, { origin: 'https://evil.example' }));
    expect(crossSite.status).toBe(403);
    expect((await upload(PNG, 'a.png', {})).status).toBe(401);
    clock.advance(16 * 60_000);
    const expiredToken = await upload(PNG, 'a.png');
    expect(expiredToken.status).toBe(401);
    expect(await expiredToken.json()).toMatchObject({ renew: true });
    expect(await stack.db.row('select count(*) as n from uploaded_files')).toEqual({ n: 0 });
  });
});
