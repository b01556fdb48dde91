/**
 * The CRM tab's first render, server side (README "The CRM tab"): what a manager opening a card costs
 * our server. One open is the three requests the tab page makes before it shows anything: Bitrix24's
 * POST /tab (the user and the record's phones, asked of the portal in one batch with the user's token),
 * GET /api/dialogs/by-phone (the preview and the other dialogs) and GET /api/dialogs/:id/messages (the
 * newest page of the history). Warm: the same card opened again and again (the Chat2Desk cache holds
 * the client and its dialogs); baseline: three GET /healthz through the same server in the same run.
 * The upstream part (the portal's batch, the OAuth server's app.info, Chat2Desk's messages page) is measured apart, the
 * bench process asking the fakes the same questions directly. Cold: every open a card whose phone the
 * cache has never seen, counting Chat2Desk requests per phone (target ≤ 3). Weight: our own scripts and
 * styles as the tab page loads them, gzip-compressed (target ≤ 50 KB; the official SDK aside).
 */
import { performance } from 'node:perf_hooks';
import { gzipSync } from 'node:zlib';
import { postForm } from '../test/support/stack.js';
import { startChildStack } from './child.js';
import { fmt, type Section } from './table.js';

const WARM_UP = 30;
const ROUNDS = 300;
const COLD_PHONES = 60;
const MESSAGES_PER_DIALOG = 30;

export async function tabBenchmark(): Promise<Section> {
  const stack = await startChildStack({
    label: 'tab',
    // No rate limit on either side: the figure is the render, not the portal's budget (as bench/app-page.ts).
    b24: { rateLimit: false },
    env: { LOG_LEVEL: 'silent', B24_RATE_PER_SECOND: '10000', B24_RATE_BURST: '100000', CHAT2DESK_REQUESTS_PER_MINUTE: '600000' },
  });
  const { b24, c2d, server } = stack;
  const manager = 1;
  let phoneSeq = 0;
  const seedCard = () => {
    phoneSeq += 1;
    const digits = `7916${String(3_000_000 + phoneSeq).padStart(7, '0')}`;
    const contact = b24.seedContact({ name: `Client ${phoneSeq}`, phones: [`+${digits}`] });
    const { client } = c2d.seedClient({ phone: digits, name: `Client ${phoneSeq}`, withDialog: 'open' });
    for (let i = 0; i < MESSAGES_PER_DIALOG; i++) c2d.receiveMessage({ clientId: Number(client.id), text: `message ${i + 1} of client ${phoneSeq}` });
    return contact;
  };

  const openCard = async (contact: number) => {
    const request = b24.placementPageRequest('CRM_CONTACT_DETAIL_TAB', { ID: String(contact) }, { accessToken: b24.issueAuth(manager).access_token });
    const t0 = performance.now();
    const page = await postForm(`${server.url}/tab`, request.body, request.query);
    const html = await page.text();
    if (page.status !== 200) throw new Error(`tab: POST /tab answered ${page.status}`);
    const data = JSON.parse(/<script type="application\/json" id="page-data">([\s\S]*?)<\/script>/.exec(html)?.[1] ?? '{}') as { token?: string; phones?: string[] };
    const headers = { authorization: `Bearer ${data.token ?? ''}` };
    const preview = await fetch(`${server.url}/api/dialogs/by-phone?phone=${data.phones?.[0] ?? ''}`, { headers });
    const found = (await preview.json()) as { latest?: { id: number } | null };
    if (preview.status !== 200 || !found.latest) throw new Error(`tab: by-phone answered ${preview.status} without a dialog`);
    const history = await fetch(`${server.url}/api/dialogs/${found.latest.id}/messages?limit=20`, { headers });
    await history.arrayBuffer();
    if (history.status !== 200) throw new Error(`tab: messages answered ${history.status}`);
    return { ms: performance.now() - t0, html, dialogId: found.latest.id };
  };
  const health = async (): Promise<number> => {
    const t0 = performance.now();
    for (let i = 0; i < 3; i++) {
      const response = await fetch(`${server.url}/healthz`);
      await response.arrayBuffer();
      if (response.status !== 200) throw new Error(`tab: /healthz answered ${response.status}`);
    }
    return performance.now() - t0;
  };

  // Warm: one card, opened again and again.
  const card = seedCard();
  let first = await openCard(card);
  for (let i = 0; i < WARM_UP; i++) first = await openCard(card);
  c2d.resetCalls();
  b24.resetCalls();
  await server.command('measure');
  const warm: number[] = [];
  const baseline: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    warm.push((await openCard(card)).ms);
    baseline.push(await health());
  }
  const { cpuMicros } = await server.report();
  const warmChat2Desk = c2d.calls.length / ROUNDS;
  const warmBitrix24 = b24.calls.filter((call) => call.method === 'batch').length / ROUNDS;

  // Upstream: the same questions asked of the fakes directly.
  const upstream: number[] = [];
  const contactPhoneBatch = () =>
    fetch(`${b24.clientEndpoint}batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ auth: b24.issueAuth(manager).access_token, halt: 0, cmd: { profile: 'profile', record: `crm.contact.get?id=${card}` } }),
    });
  const token = c2d.token;
  for (let i = 0; i < ROUNDS; i++) {
    const t0 = performance.now();
    await (await contactPhoneBatch()).arrayBuffer();
    // The opening user's token is also shown to the authorization server (src/dialogs/record-phones.ts).
    await (await fetch(`${b24.oauthUrl}/rest/app.info?${new URLSearchParams({ auth: b24.issueAuth(manager).access_token })}`)).arrayBuffer();
    await (await fetch(`${c2d.url}/v1/messages?dialog_id=${first.dialogId}&order=desc&limit=20&offset=0`, { headers: { authorization: token } })).arrayBuffer();
    upstream.push(performance.now() - t0);
  }

  // Cold: each open a card whose phone the cache has never seen. The account's operators and channels
  // are cached per account, not per phone, and were read by the warm opens.
  const coldCards = Array.from({ length: COLD_PHONES }, seedCard);
  c2d.resetCalls();
  const cold: number[] = [];
  for (const coldCard of coldCards) cold.push((await openCard(coldCard)).ms);
  const coldCalls = c2d.calls.length / COLD_PHONES;
  const coldByPath = new Map<string, number>();
  for (const call of c2d.calls) {
    const path = `${call.method} ${call.path.split('?')[0]!.replace(/\d+/g, ':id')}`;
    coldByPath.set(path, (coldByPath.get(path) ?? 0) + 1);
  }

  // Weight: the page's own scripts and styles, and the modules they import.
  const weight = await pageWeight(server.url, first.html);
  await stack.close();

  const p95 = (values: number[]) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(0.95 * values.length))] ?? 0;
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;
  const [warmP95, baselineP95, upstreamP95] = [p95(warm), p95(baseline), p95(upstream)];
  return {
    rows: [
      {
        figure: `CRM tab first render, warm (POST /tab + preview + history page) p95, ${ROUNDS} opens`,
        ours: `${fmt(warmP95)} ms (of which upstream: the portal's batch, the OAuth server's app.info and Chat2Desk's messages page asked directly, p95 ${fmt(upstreamP95)} ms)`,
        baseline: `3× GET /healthz through the same server: ${fmt(baselineP95)} ms`,
        ratio: `${fmt(warmP95 / baselineP95)}×`,
        target: '≤ 50 ms',
      },
      {
        figure: `CRM tab first render, cold cache: Chat2Desk requests per phone (${COLD_PHONES} phones)`,
        ours: `${fmt(coldCalls, 2)} (p95 ${fmt(p95(cold))} ms per open)`,
        baseline: `warm: ${fmt(warmChat2Desk, 2)} per open`,
        ratio: `${fmt(coldCalls / Math.max(warmChat2Desk, 0.01), 2)}×`,
        target: '≤ 3',
      },
      {
        figure: 'CRM tab page weight: our own scripts and styles, gzip (the official SDK aside)',
        ours: `${fmt(weight.own / 1024, 1)} KB (+ ${fmt(weight.vendor / 1024, 1)} KB of vendored Air design tokens)`,
        baseline: `the official SDK, gzip: ${fmt(weight.sdk / 1024, 1)} KB`,
        ratio: `${fmt((weight.own + weight.vendor) / weight.sdk, 2)}×`,
        target: '≤ 50 KB',
      },
    ],
    notes: [
      `CRM tab: our server in its own process, fakes without rate limits, a contact with one phone whose dialog has ${MESSAGES_PER_DIALOG} messages. Medians: warm open ${fmt(median(warm))} ms, 3× /healthz ${fmt(median(baseline))} ms, upstream asked directly ${fmt(median(upstream))} ms. ` +
        `Per warm open: ${fmt(warmBitrix24, 2)} Bitrix24 batch, ${fmt(warmChat2Desk, 2)} Chat2Desk requests (the history page is always read fresh); ${fmt(cpuMicros / 1000 / ROUNDS, 2)} ms of server CPU per open (and its /healthz). ` +
        `Cold Chat2Desk requests: ${[...coldByPath].map(([path, n]) => `${path} ${fmt(n / COLD_PHONES, 2)}`).join(', ')}. Weighed: ${weight.files.join(', ')}.`,
    ],
  };
}

/** gzip sizes of what the page loads from /public (scripts, styles, and the ES modules they import). */
async function pageWeight(serverUrl: string, html: string): Promise<{ own: number; vendor: number; sdk: number; files: string[] }> {
  const pending = [...html.matchAll(/(?:href|src)="(\/public\/[^"?]+)/g)].map((match) => match[1]!);
  const seen = new Set<string>();
  const sizes = { own: 0, vendor: 0, sdk: 0, files: [] as string[] };
  while (pending.length > 0) {
    const path = pending.shift()!;
    if (seen.has(path)) continue;
    seen.add(path);
    const response = await fetch(`${serverUrl}${path}`);
    if (response.status !== 200) throw new Error(`tab: ${path} answered ${response.status}`);
    const body = Buffer.from(await response.arrayBuffer());
    const gz = gzipSync(body).length;
    if (path.includes('b24jssdk')) sizes.sdk += gz;
    else if (path.includes('/vendor/')) sizes.vendor += gz;
    else sizes.own += gz;
    sizes.files.push(path.slice('/public/'.length));
    if (path.endsWith('.js') && !path.includes('/vendor/')) {
      for (const match of body.toString('utf8').matchAll(/(?:^|\n)\s*import\s[^'"]*['"]\.\/([^'"]+)['"]/g)) pending.push(`/public/${match[1]!}`);
    }
  }
  return sizes;
}
