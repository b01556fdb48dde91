import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { healthy, killHard, startChild, startChildStack } from './support/child-server.js';
import { emptyDatabase, TEST_DATABASE } from './support/databases.js';
import { APP_SECRET, eventually, freePort, installAndConfigure } from './support/stack.js';

describe('a real server process', () => {
  const cleanup: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step();
  });

  /** Fakes in this process, the server as a child process, installed and connected to Chat2Desk. */
  async function startInstalledChild(extraEnv: Record<string, string>) {
    const server = await startChildStack({ env: extraEnv });
    cleanup.push(() => server.close());
    await installAndConfigure(server);
    server.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    return server;
  }

  // The default is SQLite whatever the run's database: once, in the sqlite run.
  it.skipIf(TEST_DATABASE !== 'sqlite')('comes up with no environment at all on the SQLite default and says what production lacks', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'c2d-b24-bare-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const port = await freePort();
    const child = startChild({ PORT: String(port) }, dir);
    cleanup.push(() => killHard(child));
    await eventually(() => healthy(`http://127.0.0.1:${port}`), 20_000, 'server up');
    const health = await (await fetch(`http://127.0.0.1:${port}/healthz`)).json();
    expect(health).toEqual({
      status: 'ok',
      database: true,
      databaseKind: 'sqlite',
      workers: true,
      queue: { queued: 0, running: 0, reporting: 0 },
      process: { host: expect.any(String), pid: child.process.pid, instance: expect.any(String) },
      work: { windowMs: 300_000, finishedHere: 0, finishedAll: 0, share: null },
    });
    const printed = child.output.join('');
    expect(printed).toContain('B24_CLIENT_ID / B24_CLIENT_SECRET are not set');
    expect(printed).toContain('PUBLIC_URL is not set');
  });

  it.skipIf(TEST_DATABASE !== 'postgres')('on PostgreSQL, says at start that it is the only process on the database, and when several will come', async () => {
    const database = await emptyDatabase();
    cleanup.push(database.drop);
    const port = await freePort();
    const child = startChild({ PORT: String(port), DATABASE_URL: database.url, APP_SECRET });
    cleanup.push(() => killHard(child));
    await eventually(() => healthy(`http://127.0.0.1:${port}`), 20_000, 'server up');
    expect(await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()).toMatchObject({ status: 'ok', databaseKind: 'postgres' });
    const printed = child.output.join('');
    expect(printed).toContain('PostgreSQL: other server processes may share this database');
  });

  it('refuses to start on a bad variable and names it', async () => {
    const child = startChild({ PORT: 'eighty', DATABASE_URL: 'mysql://nope' });
    const code = await new Promise<number | null>((resolve) => child.process.once('exit', resolve));
    expect(code).toBe(2);
    const printed = child.output.join('');
    expect(printed).toContain('PORT: must be an integer');
    expect(printed).toContain('DATABASE_URL: must be a SQLite URL');
  });

  it('reports a message sent before a crash as sent, even when the restart comes after the deadline', async () => {
    // The shortest deadline the server allows is 5 s.
    const server = await startInstalledChild({ ROBOT_DEADLINE_SECONDS: '1' });
    const { b24, c2d } = server;
    // Chat2Desk stores the message, but its answer is held until the server is dead.
    const answer = c2d.holdNext({ method: 'POST', path: '/messages' });
    cleanup.push(() => answer.release());
    const call = await b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'sent before the crash' } });
    await answer.arrived;
    expect(c2d.account().messages).toHaveLength(1);
    await killHard(server.child);
    // Past the deadline while the server is down: moved in the database rather than waited out.
    const job = (await server.db.row<{ created_at: number; deadline_at: number }>('select created_at, deadline_at from jobs where event_token = ?', call.eventToken))!;
    expect(Math.round((job.deadline_at - job.created_at) / 1000)).toBe(5);
    await server.db.run('update jobs set deadline_at = ? where event_token = ?', Date.now() - 1, call.eventToken);
    await server.restart();
    const event = await eventually(() => b24.sentEvents.find((item) => item.eventToken === call.eventToken), 20_000, 'result');
    expect(event.returnValues.status).toBe('sent');
    expect(String(event.returnValues.message_id)).toBe(String(c2d.account().messages[0]!.id));
    expect(c2d.account().messages).toHaveLength(1);
  });

  // The SQLite file's exclusive lock; several processes share a PostgreSQL database (postgres.test.ts).
  it.skipIf(TEST_DATABASE !== 'sqlite')('refuses to start a second server on the same database file, saying why', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'c2d-b24-lock-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const env = { DATABASE_URL: `file:${join(dir, 'app.db')}`, APP_SECRET: 'lock-test-secret-0123456789' };
    const port = await freePort();
    const first = startChild({ ...env, PORT: String(port) });
    cleanup.push(() => killHard(first));
    await eventually(() => healthy(`http://127.0.0.1:${port}`), 20_000, 'first server up');
    const second = startChild({ ...env, PORT: String(await freePort()) });
    const code = await new Promise<number | null>((resolve) => second.process.once('exit', resolve));
    expect(code).toBe(1);
    expect(second.output.join('')).toContain('is in use by another server process; run one server per database file');
    expect(await healthy(`http://127.0.0.1:${port}`)).toBe(true);
  });

  it('finishes every job exactly once after kill -9 with jobs queued and sends in flight', async () => {
    const server = await startInstalledChild({ CHAT2DESK_CONCURRENCY: '3' });
    const { b24, c2d } = server;

    // Chat2Desk accepts the first sends but holds its answers until the server is dead.
    const answers = [1, 2, 3].map(() => c2d.holdNext({ method: 'POST', path: '/messages' }));
    cleanup.push(() => {
      for (const answer of answers) answer.release();
    });
    const calls = await Promise.all(Array.from({ length: 12 }, (_, i) => b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: `crash ${i}` } })));
    for (const call of calls) expect(call.status).toBe(200);
    await Promise.all(answers.map((answer) => answer.arrived));
    await killHard(server.child);
    expect(c2d.account().messages.length).toBeGreaterThanOrEqual(3);
    expect(b24.sentEvents.length).toBeLessThan(12);

    await server.restart();
    await eventually(() => calls.every((call) => b24.sentEvents.some((event) => event.eventToken === call.eventToken)), 30_000, 'all results');

    const messages = c2d.account().messages.filter((message) => String(message.text).startsWith('crash '));
    expect(messages).toHaveLength(12);
    expect(new Set(messages.map((message) => message.external_id)).size).toBe(12);
    expect(new Set(messages.map((message) => message.text)).size).toBe(12);
    for (const call of calls) {
      const events = b24.sentEvents.filter((event) => event.eventToken === call.eventToken);
      expect(events).toHaveLength(1);
      expect(events[0]!.returnValues.status).toBe('sent');
    }
    expect(server.child.output.join('')).toContain('jobs interrupted by a previous stop are queued again');
  });

  it('sends nothing twice after kill -9 with sends in doubt behind a backlog to the same client', async () => {
    // Issue 7's reproduction: sends in doubt must be settled although more than 50 newer
    // messages to the same client exist by the time they are looked for.
    const server = await startInstalledChild({ CHAT2DESK_CONCURRENCY: '4' });
    const { b24, c2d } = server;
    const answers = [1, 2, 3, 4].map(() => c2d.holdNext({ method: 'POST', path: '/messages' }));
    cleanup.push(() => {
      for (const answer of answers) answer.release();
    });
    const total = 80;
    const calls = await Promise.all(
      Array.from({ length: total }, (_, i) => b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: `backlog ${i}` } })),
    );
    for (const call of calls) expect(call.status).toBe(200);
    await Promise.all(answers.map((answer) => answer.arrived));
    expect(c2d.account().messages).toHaveLength(4);
    // The backlog is confirmed and queued behind them, as in production where the answers come 6 s late.
    await eventually(() => calls.every((call) => b24.activityLog.some((entry) => entry.eventToken === call.eventToken)), 20_000, 'backlog confirmed');
    await killHard(server.child);

    await server.restart();
    await eventually(() => calls.every((call) => b24.sentEvents.some((event) => event.eventToken === call.eventToken)), 60_000, 'all results');

    const messages = c2d.account().messages.filter((message) => String(message.text).startsWith('backlog '));
    expect(messages).toHaveLength(total);
    expect(new Set(messages.map((message) => message.external_id)).size).toBe(total);
    expect(new Set(messages.map((message) => message.text)).size).toBe(total);
    for (const call of calls) {
      const events = b24.sentEvents.filter((event) => event.eventToken === call.eventToken);
      expect(events).toHaveLength(1);
      expect(events[0]!.returnValues.status).toBe('sent');
    }
    // Each call was reported with a message of its own: no settle took another call's message.
    expect(new Set(b24.sentEvents.map((event) => String(event.returnValues.message_id))).size).toBe(total);
    // Up to 60 s for the results, as waited for above: 80 sends and settles after a restart, slower on PostgreSQL.
  }, 90_000);
});
