import { afterEach, describe, expect, it } from 'vitest';
import { type Broadcast, localBroadcast, postgresBroadcast } from '../src/db/broadcast.js';
import { openPostgres, type PostgresHandle } from '../src/db/database.js';
import { dialogChangeOf } from '../src/live/changes.js';
import { createLogger } from '../src/log.js';
import { emptyDatabase, TEST_DATABASE } from './support/databases.js';
import { eventually } from './support/stack.js';

const log = createLogger('silent');

describe('broadcast between processes sharing a database', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  // The run's PostgreSQL is there in the postgres project only (vitest.config.ts).
  it.skipIf(TEST_DATABASE !== 'postgres')('on PostgreSQL reaches every process once, the sender through its own handlers only', async () => {
    const database = await emptyDatabase();
    cleanups.push(() => database.drop());
    const processes: Array<{ handle: PostgresHandle; broadcast: Broadcast; seen: string[] }> = [];
    for (let i = 0; i < 2; i++) {
      const handle = await openPostgres(database.url, { maxConnections: 2 });
      const broadcast = await postgresBroadcast(database.url, handle.pool, log);
      const seen: string[] = [];
      broadcast.subscribe('portal', (payload) => seen.push(payload));
      broadcast.subscribe('other', (payload) => seen.push(`other:${payload}`));
      processes.push({ handle, broadcast, seen });
      cleanups.push(async () => {
        await broadcast.close();
        await handle.close();
      });
    }
    const [a, b] = processes as [(typeof processes)[0], (typeof processes)[0]];
    await a.broadcast.publish('portal', 'member|with|bars');
    await b.broadcast.publish('other', 'x');
    await eventually(() => b.seen.length === 2 && a.seen.length === 2, 5_000, 'both processes to hear both messages');
    expect([...b.seen].sort()).toEqual(['member|with|bars', 'other:x']);
    expect([...a.seen].sort()).toEqual(['member|with|bars', 'other:x']);
    // Nothing arrives twice (the sender skips its own notification).
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(a.seen).toHaveLength(2);
    expect(b.seen).toHaveLength(2);
  });

  it.skipIf(TEST_DATABASE !== 'postgres')('carries a live change whose client phone field is huge to the other process (no phone: not a payload over 8000 bytes)', async () => {
    const database = await emptyDatabase();
    cleanups.push(() => database.drop());
    const seen: string[] = [];
    const broadcasts: Broadcast[] = [];
    for (let i = 0; i < 2; i++) {
      const handle = await openPostgres(database.url, { maxConnections: 2 });
      const broadcast = await postgresBroadcast(database.url, handle.pool, log);
      broadcasts.push(broadcast);
      cleanups.push(async () => {
        await broadcast.close();
        await handle.close();
      });
    }
    broadcasts[1]!.subscribe('live', (payload) => seen.push(payload));
    const change = dialogChangeOf({ hook_type: 'inbox', dialog_id: 1, client: { id: 5, phone: '7'.repeat(9_000), client_phone: '+7 916 123-45-67' } });
    expect(change?.client).toEqual({ phone: null, clientPhone: '+7 916 123-45-67' });
    await broadcasts[0]!.publish('live', JSON.stringify({ memberId: 'm', change }));
    await eventually(() => seen.length === 1, 5_000, 'the other process to hear the change');
  });

  it('on SQLite reaches this process, and an unsubscribed handler no more', async () => {
    const broadcast = localBroadcast(log);
    const seen: string[] = [];
    const stop = broadcast.subscribe('live', (payload) => seen.push(payload));
    await broadcast.publish('live', 'one');
    stop();
    await broadcast.publish('live', 'two');
    expect(seen).toEqual(['one']);
  });
});
