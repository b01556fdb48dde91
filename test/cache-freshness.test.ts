import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CacheStore, type Invalidation } from '../src/db/cache.js';
import type { DatabaseHandle } from '../src/db/database.js';
import { WebhookStore } from '../src/db/webhooks.js';
import { SecretBox } from '../src/secrets.js';
import { TestClock } from './support/clock.js';
import { openTestDatabase, type TestDatabase, TEST_DATABASE } from './support/databases.js';
import { APP_SECRET } from './support/stack.js';

const accountKey = 'account-1';
const memberId = 'a'.repeat(32);
const nothing: Invalidation = { clientIds: [], dialogIds: [], phones: [], dialogListsOf: [], lists: [] };
const clientChanged = (id: number): Invalidation => ({ ...nothing, clientIds: [id] });

/**
 * The cache's freshness check (CacheStore.saveFetched replays the deliveries received since its
 * fetch began) relied on SQLite's one writer. On PostgreSQL two processes write at once: a delivery
 * whose transaction has already invalidated (nothing yet) but not committed is invisible to the
 * replay, and the fetched row, older than the change, would then be served (docs/multi-process.md).
 */
// The run's PostgreSQL is there in the postgres project only (vitest.config.ts).
describe.skipIf(TEST_DATABASE !== 'postgres')('the cache freshness check across two PostgreSQL connections', () => {
  let test: TestDatabase;
  let other: DatabaseHandle;
  let blocker: pg.Client;
  const clock = new TestClock();

  beforeEach(async () => {
    test = await openTestDatabase('postgres');
    other = await test.openAnother();
    const handle = test.handle;
    if (handle.kind !== 'postgres') throw new Error('postgres expected');
    blocker = new pg.Client({ connectionString: (handle.pool.options as { connectionString: string }).connectionString });
    await blocker.connect();
  });
  afterEach(async () => {
    await blocker.end().catch(() => undefined);
    await test.close();
  });

  it('a fetch saved while a delivery of the same account is being stored waits for it and replays it', async () => {
    const deliveries = new WebhookStore(test.handle, new SecretBox(APP_SECRET), clock);
    const cache = new CacheStore(other);
    const fetchedAt = clock.now() - 1_000;
    // Holds the delivery's transaction open after its invalidation: its last statement (waking
    // held jobs) waits for this lock on the jobs table.
    await blocker.query('begin');
    await blocker.query('lock table jobs in share mode');
    const delivery = deliveries.recordDelivery(
      { memberId, accountKey, dedupKey: 'message-1', hookType: 'inbox', body: JSON.stringify({ client_id: 5 }) },
      clientChanged(5),
      [],
      [{ memberId, kind: 'any' }],
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    let saved = false;
    // The fetch began before the delivery (it may predate the client's change) and is saved now.
    const save = cache
      .saveFetched(accountKey, fetchedAt, { clients: [{ id: 5, phone: '79990000005', clientPhone: null, name: 'Old name', assignedName: null, tags: [] }] }, (body) =>
        clientChanged((JSON.parse(body) as { client_id: number }).client_id),
      )
      .then(() => {
        saved = true;
      });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(saved).toBe(false);
    await blocker.query('commit');
    await Promise.all([delivery, save]);
    // The replay saw the delivery: the fetched row is not served as fresh.
    expect(await cache.client(accountKey, 5, fetchedAt)).toBeUndefined();
  });

  it('deliveries and fetches of different accounts do not wait for each other', async () => {
    const deliveries = new WebhookStore(test.handle, new SecretBox(APP_SECRET), clock);
    const cache = new CacheStore(other);
    await blocker.query('begin');
    await blocker.query('lock table jobs in share mode');
    const delivery = deliveries.recordDelivery({ memberId, accountKey, dedupKey: 'message-2', hookType: 'inbox', body: '{}' }, nothing, [], [{ memberId, kind: 'any' }]);
    await new Promise((resolve) => setTimeout(resolve, 200));
    await cache.saveFetched('account-2', clock.now(), { clients: [{ id: 6, phone: null, clientPhone: null, name: 'Other', assignedName: null, tags: [] }] }, () => nothing);
    expect(await cache.client('account-2', 6, 0)).toMatchObject({ name: 'Other' });
    await blocker.query('commit');
    await delivery;
  });
});
