import { afterEach, describe, expect, it } from 'vitest';
import { PortalStore, PORTAL_LOOKUP_TTL_MS } from '../src/db/portals.js';
import { systemClock } from '../src/clock.js';
import { CLOSE_EPISODE_KIND } from '../src/jobs/kinds/close-episode.js';
import { PageTokens } from '../src/pages/page-token.js';
import { SecretBox } from '../src/secrets.js';
import { startProcesses, type Processes } from './support/processes.js';
import { SIGNATURE_HEADER, TIMESTAMP_HEADER, signWebhook } from './fakes/chat2desk.js';
import { APP_SECRET, eventually, install, installAndConfigure, postForm, putSettings } from './support/stack.js';
import { TEST_DATABASE } from './support/databases.js';

/** Several server processes on one PostgreSQL database (docs/multi-process.md). */
// The run's PostgreSQL is there in the postgres project only (vitest.config.ts).
describe.skipIf(TEST_DATABASE !== 'postgres')('two server processes on one PostgreSQL database', () => {
  let processes: Processes;
  afterEach(() => processes.close());

  it('settings saved through one process are seen by the other at once (the lookup it keeps is dropped)', async () => {
    processes = await startProcesses(2);
    const [a, b] = processes.servers as [(typeof processes.servers)[0], (typeof processes.servers)[0]];
    const { b24 } = processes;
    await installAndConfigure(processes.via(0));
    // Process B looks the portal up (and keeps it) before A changes it.
    expect((await b.portals.authenticate(b24.memberId, b24.applicationToken))?.settings.episodesEnabled).toBeUndefined();

    const started = Date.now();
    expect((await putSettings(processes.via(0), { episodesEnabled: true })).status).toBe(200);
    await eventually(async () => (await b.portals.authenticate(b24.memberId, b24.applicationToken))?.settings.episodesEnabled === true, 2_000, 'B to see the new setting');
    // The notification did it, not the entry's expiry.
    expect(Date.now() - started).toBeLessThan(PORTAL_LOOKUP_TTL_MS);
    expect((await a.portals.authenticate(b24.memberId, b24.applicationToken))?.settings.episodesEnabled).toBe(true);
  });

  it('a change no notification announced is seen once the entry expires', async () => {
    processes = await startProcesses(2);
    const [a, b] = processes.servers as [(typeof processes.servers)[0], (typeof processes.servers)[0]];
    const { b24 } = processes;
    await installAndConfigure(processes.via(0));
    expect(await b.portals.authenticate(b24.memberId, b24.applicationToken)).toBeDefined();
    // A writer that broadcasts nothing (as if B's listening connection had been down meanwhile).
    const silent = new PortalStore(a.database, new SecretBox(APP_SECRET), { now: () => Date.now() });
    await silent.saveSettings(b24.memberId, { episodesEnabled: true });
    expect((await b.portals.authenticate(b24.memberId, b24.applicationToken))?.settings.episodesEnabled).toBeUndefined();
    await eventually(
      async () => (await b.portals.authenticate(b24.memberId, b24.applicationToken))?.settings.episodesEnabled === true,
      PORTAL_LOOKUP_TTL_MS + 2_000,
      'the entry to expire',
    );
  });

  it('/healthz names the process that answers and its share of the runs all processes finished', async () => {
    processes = await startProcesses(2);
    const { b24, c2d, servers } = processes;
    await installAndConfigure(processes.via(0));
    c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    // Robot calls reach either process (a load balancer), and either process's worker may run them.
    const calls = Array.from({ length: 12 }, (_, i) => b24.robotCallBody({ code: 'c2d_send_message', properties: { phone: '79161234567', text: `call ${i}` } }));
    const handler = new URL(String(b24.robots.get('c2d_send_message')!.HANDLER));
    for (const [i, call] of calls.entries()) expect((await postForm(`${servers[i % 2]!.url}${handler.pathname}${handler.search}`, call.body)).status).toBe(200);
    await eventually(() => calls.every((call) => b24.sentEvents.some((event) => event.eventToken === call.eventToken)), 20_000, 'every result sent');
    const health = await Promise.all(servers.map(async (server) => (await fetch(`${server.url}/healthz`)).json()));
    const [a, b] = health as Array<{ databaseKind: string; process: { instance: string; pid: number }; work: { finishedHere: number; finishedAll: number; share: number } }>;
    expect(a!.databaseKind).toBe('postgres');
    expect(a!.process.instance).not.toBe(b!.process.instance);
    expect(a!.process.pid).toBe(process.pid);
    // Every finished run was finished by exactly one of the two, and both count the same total.
    expect(a!.work.finishedAll).toBe(b!.work.finishedAll);
    expect(a!.work.finishedAll).toBeGreaterThanOrEqual(calls.length);
    expect(a!.work.finishedHere + b!.work.finishedHere).toBe(a!.work.finishedAll);
    expect(a!.work.share + b!.work.share).toBeCloseTo(1);
  });

  it('a page whose stream is on one process sees a message the other process received, with a ticket issued by that other process', async () => {
    processes = await startProcesses(2);
    const { b24, c2d, servers } = processes;
    const [a, b] = servers as [(typeof servers)[0], (typeof servers)[0]];
    const { client } = c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    await installAndConfigure(processes.via(0));
    const generation = (await a.portals.get(b24.memberId))!.installedAt;
    const token = new PageTokens(APP_SECRET, systemClock).issue({ memberId: b24.memberId, userId: 1, generation, admin: true, checkedAt: Date.now() }).token;
    // The ticket from A, the stream on B: a load balancer may send the two requests anywhere.
    const issued = await fetch(`${a.url}/api/live/ticket`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(issued.status).toBe(200);
    const { ticket } = (await issued.json()) as { ticket: string };
    const aborter = new AbortController();
    const stream = await fetch(`${b.url}/api/live?ticket=${ticket}`, { signal: aborter.signal });
    expect(stream.status).toBe(200);
    // Single use across processes: neither process opens a second stream with it.
    expect((await fetch(`${a.url}/api/live?ticket=${ticket}`)).status).toBe(401);
    expect((await fetch(`${b.url}/api/live?ticket=${ticket}`)).status).toBe(401);
    const reader = stream.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    const until = async (needle: string) => {
      while (!text.includes(needle)) {
        const read = await reader.read();
        if (read.done) throw new Error(`the stream ended before ${needle}`);
        text += read.value;
      }
    };
    try {
      await until(': connected');
      // Chat2Desk delivers to the public address: process A.
      const webhook = c2d.receiveMessage({ clientId: client.id as number, text: 'Where is my order?' }).webhook;
      expect(await c2d.deliverWebhook(webhook)).toEqual([200]);
      await until('event: dialog');
      expect(text).toContain(`"clientId":${client.id}`);
      expect(text).toContain('"what":"message"');
    } finally {
      aborter.abort();
    }
  });

  it('both processes registering the webhook at once leave one webhook at Chat2Desk', async () => {
    processes = await startProcesses(2);
    const { c2d, servers } = processes;
    await install(processes.via(0));
    // Two admins save the Chat2Desk token at once, each through another process.
    const saves = await Promise.all(servers.map((_, i) => putSettings(processes.via(i), { chat2deskApiToken: c2d.token })));
    expect(saves.map((save) => save.status)).toEqual([200, 200]);
    await Promise.all(servers.map((server) => server.idle()));
    const portal = (await servers[0]!.portals.get(processes.b24.memberId))!;
    // And both make sure of it again at once (the webhook monitor of each process does so).
    await Promise.all(servers.map((server) => server.chat2deskWebhooks.ensure(portal)));
    expect(c2d.account().webhooks).toHaveLength(1);
  });

  it('one delivery reaching both processes at once is handled once', async () => {
    processes = await startProcesses(2);
    const { b24, c2d, servers } = processes;
    const { dialog } = c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    await installAndConfigure(processes.via(0), { episodesEnabled: true });
    const path = new URL(String(c2d.account().webhooks[0]!.url)).pathname;
    const raw = JSON.stringify(c2d.closeDialog(dialog!.id as number).closeDialog);
    const timestamp = String(Math.floor(Date.now() / 1000));
    const headers = { 'content-type': 'application/json', [SIGNATURE_HEADER]: signWebhook(c2d.token, raw, timestamp), [TIMESTAMP_HEADER]: timestamp };
    // A retry that overtook the first try, each at another process behind the load balancer.
    const answers = await Promise.all([...servers, ...servers].map((server) => fetch(`${server.url}${path}`, { method: 'POST', headers, body: raw })));
    expect(answers.map((answer) => answer.status)).toEqual([200, 200, 200, 200]);
    const database = servers[0]!.database;
    if (database.kind !== 'postgres') throw new Error('postgres expected');
    const episodes = await database.pool.query('select count(*)::int as n from jobs where member_id = $1 and kind = $2', [b24.memberId, CLOSE_EPISODE_KIND]);
    expect(episodes.rows[0].n).toBe(1);
    const deliveries = await database.pool.query('select count(*)::int as n from webhook_deliveries where member_id = $1', [b24.memberId]);
    expect(deliveries.rows[0].n).toBe(1);
  });
});
