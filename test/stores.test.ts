import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../src/db/database.js';
import { EpisodeRecordStore } from '../src/db/episode-records.js';
import { OpenChannelChatStore } from '../src/db/open-channel-chats.js';
import { PortalStore } from '../src/db/portals.js';
import { WebhookStore } from '../src/db/webhooks.js';
import { SecretBox } from '../src/secrets.js';
import { TestClock } from './support/clock.js';
import { DATABASE_KINDS, openTestDatabase, type TestDatabase } from './support/databases.js';
import { APP_SECRET } from './support/stack.js';

/**
 * The stores decide races by a conditional statement, not by SQLite having one writer: two stores
 * stand for two server processes, on one SQLite connection or on two connections to PostgreSQL.
 */
describe.each(DATABASE_KINDS)('stores shared by two server processes, on %s', (kind) => {
  let test: TestDatabase;
  let database: DatabaseHandle;
  /** The second process's connection: its own on PostgreSQL, the same handle on SQLite (one process per file). */
  let other: DatabaseHandle;
  const clock = new TestClock();
  const secrets = new SecretBox(APP_SECRET);
  const memberId = 'a'.repeat(32);
  const pair = (name: string) => ({ accessToken: `${name}-access`, refreshToken: `${name}-refresh`, expiresAt: 2_000_000_000, clientEndpoint: 'https://portal.example/rest/' });

  beforeEach(async () => {
    test = await openTestDatabase(kind);
    database = test.handle;
    other = kind === 'postgres' ? await test.openAnother() : database;
  });
  afterEach(() => test.close());

  async function installed(store: PortalStore) {
    await store.saveInstall({ memberId, domain: 'portal.example', applicationToken: 'app-token', installerUserId: 1, ...pair('installed') });
    return (await store.tokens(memberId))!.generation;
  }

  it("forgets a client's record only while it is still the one remembered: a record another job just saved stays", async () => {
    const first = new EpisodeRecordStore(database, clock);
    const second = new EpisodeRecordStore(other, clock);
    await first.remember(memberId, 7, { entityType: 'lead', entityId: 1 });
    const seen = await second.get(memberId, 7);
    // Meanwhile a closed episode found lead 1 converted and saved the lead it created.
    await first.remember(memberId, 7, { entityType: 'lead', entityId: 2 });
    await second.forget(memberId, 7, seen!);
    expect(await first.get(memberId, 7)).toEqual({ entityType: 'lead', entityId: 2 });
    await second.forget(memberId, 7, { entityType: 'lead', entityId: 2 });
    expect(await first.get(memberId, 7)).toBeUndefined();
  });

  it("keeps each client's Open Channel chat of the latest message: one finishing late for an earlier message does not replace it", async () => {
    const first = new OpenChannelChatStore(database);
    const second = new OpenChannelChatStore(other);
    expect(await first.latest(memberId, 7)).toBeUndefined();
    await first.remember(memberId, 7, { lineId: 1, chatId: 'r200', imChatId: 31, sentAt: 2_000 });
    // The retry of an earlier message (another request's chat) finishes on the other process afterwards.
    await second.remember(memberId, 7, { lineId: 1, chatId: 'r100', imChatId: 30, sentAt: 1_000 });
    expect(await first.latest(memberId, 7)).toEqual({ lineId: 1, chatId: 'r200', imChatId: 31, sentAt: 2_000 });
    // The client's next message went to another line's chat: it is the latest now.
    await second.remember(memberId, 7, { lineId: 2, chatId: 'c7', imChatId: 45, sentAt: 3_000 });
    expect(await first.latest(memberId, 7)).toEqual({ lineId: 2, chatId: 'c7', imChatId: 45, sentAt: 3_000 });
    expect(await first.latest(memberId, 8)).toBeUndefined();
    expect(await first.latest('b'.repeat(32), 7)).toBeUndefined();
  });

  it('keeps the pair of the refresh that stored first, and a refusal of the replaced pair does not ask for reauthorisation', async () => {
    const first = new PortalStore(database, secrets, clock);
    const second = new PortalStore(other, secrets, clock);
    const generation = await installed(first);

    expect(await first.saveRefreshedTokens(memberId, pair('first'), generation)).toBe(generation + 1);
    // The other process refreshed the same pair: its answer is not stored over the newer one…
    expect(await second.saveRefreshedTokens(memberId, pair('second'), generation)).toBeUndefined();
    // …and when the authorization server refused its refresh token instead, the portal stays usable.
    expect(await second.markReauthRequired(memberId, generation)).toBe(false);
    expect(await second.get(memberId)).toMatchObject({ status: 'active' });
    expect(await second.tokens(memberId)).toMatchObject({ accessToken: 'first-access', generation: generation + 1 });

    expect(await second.markReauthRequired(memberId, generation + 1)).toBe(true);
    expect(await first.get(memberId)).toMatchObject({ status: 'reauth_required' });
  });

  it('gives every caller claiming a webhook secret for one account the same secret, and a new account a new one', async () => {
    const first = new WebhookStore(database, secrets, clock);
    const second = new WebhookStore(other, secrets, clock);
    const claims = await Promise.all([first.claimSecret(memberId, 'account-1', 'secret-1'), second.claimSecret(memberId, 'account-1', 'secret-2')]);
    expect(new Set(claims).size).toBe(1);
    expect(await second.claimSecret(memberId, 'account-1', 'secret-3')).toBe(claims[0]);
    expect(await first.claimSecret(memberId, 'account-2', 'secret-4')).toBe('secret-4');
  });

  it('never lowers a pending uninstall\'s "delete data": a later request without it (forged or not) keeps the admin\'s choice', async () => {
    const portals = new PortalStore(database, secrets, clock);
    await installed(portals);
    // SQLite stores the flag as 0/1, PostgreSQL as a boolean.
    const clean = async () => Boolean((await test.rows<{ clean: unknown }>('select uninstall_clean as clean from portals where member_id = ?', memberId))[0]?.clean);
    await portals.requestUninstall(memberId, true);
    await portals.requestUninstall(memberId, false);
    expect(await clean()).toBe(true);
    await portals.deferUninstallRequest(memberId, clock.now() + 60_000, false);
    expect(await clean()).toBe(true);
    const requestedAt = (await portals.uninstallRequestedAt(memberId))!;
    expect(await portals.uninstall(memberId, requestedAt)).toMatchObject({ dataDeleted: true });
  });

  it('forgets the webhook registration with the secrets, and keeps both when the uninstall request is no longer the pending one', async () => {
    const portals = new PortalStore(database, secrets, clock);
    const webhooks = new WebhookStore(database, secrets, clock);
    await installed(portals);
    await webhooks.save({ memberId, accountKey: 'account-1', webhookId: 77, secret: 'secret-1', status: 'enable' });
    await portals.requestUninstall(memberId, false);
    const requestedAt = (await portals.uninstallRequestedAt(memberId))!;

    expect(await portals.uninstall(memberId, requestedAt - 1)).toBeUndefined();
    expect(await webhooks.get(memberId)).toMatchObject({ webhookId: 77 });

    expect(await portals.uninstall(memberId, requestedAt)).toEqual({ webhookId: 77, dataDeleted: false });
    expect(await webhooks.get(memberId)).toBeUndefined();
    expect(await portals.get(memberId)).toMatchObject({ status: 'uninstalled', hasChat2deskToken: false });
  });
});
