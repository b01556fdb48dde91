import { afterEach, describe, expect, it } from 'vitest';
import { localBroadcast } from '../src/db/broadcast.js';
import { PORTAL_CHANGED, PortalStore } from '../src/db/portals.js';
import { SecretBox } from '../src/secrets.js';
import { TestClock } from './support/clock.js';
import { DATABASE_KINDS, openTestDatabase, type TestDatabase } from './support/databases.js';
import { APP_SECRET } from './support/stack.js';

describe.each(DATABASE_KINDS)('portal lookups on %s', (kind) => {
  let database: TestDatabase;
  afterEach(() => database?.close());
  const memberId = 'c'.repeat(32);

  it('keeps nothing from a lookup that was reading when the portal was said to change (the read may predate the write)', async () => {
    database = await openTestDatabase(kind);
    const broadcast = localBroadcast();
    const store = new PortalStore(database.handle, new SecretBox(APP_SECRET), new TestClock(), broadcast);
    await store.saveInstall({
      memberId,
      domain: 'portal.example',
      applicationToken: 'app-token',
      installerUserId: 1,
      accessToken: 'access',
      refreshToken: 'refresh',
      expiresAt: 2e9,
      clientEndpoint: 'https://portal.example/rest/',
    });
    // Another process changes the row and says so while this lookup is reading it.
    const reading = store.authenticate(memberId, 'app-token');
    await broadcast.publish(PORTAL_CHANGED, memberId);
    expect(await reading).toBeDefined();
    // The other process's write (here by hand, with its notification already heard above).
    await database.rows("update portals set status = 'uninstalled' where member_id = ?", memberId);
    expect(await store.authenticate(memberId, 'app-token')).toBeUndefined();
  });
});
