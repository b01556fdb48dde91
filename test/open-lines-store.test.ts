import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../src/db/database.js';
import { eq, lt, ne } from 'drizzle-orm';
import { insertJobs } from '../src/db/jobs.js';
import { OpenLineStore } from '../src/db/open-lines.js';
import { PortalStore } from '../src/db/portals.js';
import { effects, jobs } from '../src/db/schema.js';
import { SecretBox } from '../src/secrets.js';
import { TestClock } from './support/clock.js';
import { DATABASE_KINDS, openTestDatabase, type TestDatabase } from './support/databases.js';
import { APP_SECRET } from './support/stack.js';

/** The connected Open Channel lines (issue 10): routing order by connection, options replaced in place. */
describe.each(DATABASE_KINDS)('the Open Channel lines store on %s', (kind) => {
  let test: TestDatabase;
  let database: DatabaseHandle;
  const clock = new TestClock();
  const secrets = new SecretBox(APP_SECRET);
  let portals: PortalStore;

  /** An installed portal in this mode (lines are saved only in Open Channels mode). */
  async function portalIn(memberId: string, integrationType: 'chat2desk' | 'open_channels') {
    await portals.saveInstall({
      memberId,
      domain: `${memberId}.example`,
      clientEndpoint: `https://${memberId}.example/rest/`,
      applicationToken: 'app-token',
      installerUserId: 1,
      accessToken: 'access',
      refreshToken: 'refresh',
      expiresAt: 2_000_000_000,
    });
    await portals.saveSettings(memberId, { integrationType });
  }

  beforeEach(async () => {
    test = await openTestDatabase(kind);
    database = test.handle;
    portals = new PortalStore(database, secrets, clock);
    await portalIn('portal-a', 'open_channels');
    await portalIn('portal-b', 'open_channels');
  });
  afterEach(() => test.close());

  it('keeps lines in the order they were connected, per portal; saving again changes options, not the order', async () => {
    const lines = new OpenLineStore(database, clock);
    await lines.save('portal-a', 7, { signature: true });
    await lines.save('portal-a', 3, { signature: false });
    await lines.save('portal-b', 3, { other: 1 });
    await lines.save('portal-a', 7, { signature: false });
    expect((await lines.list('portal-a')).map((line) => [line.lineId, line.position, line.options])).toEqual([
      [7, 1, { signature: false }],
      [3, 2, { signature: false }],
    ]);
    expect((await lines.list('portal-b')).map((line) => line.position)).toEqual([1]);
    expect(await lines.remove('portal-a', 7)).toBe(true);
    expect(await lines.remove('portal-a', 7)).toBe(false);
    await lines.save('portal-a', 9, {});
    expect((await lines.list('portal-a')).map((line) => line.lineId)).toEqual([3, 9]);
    await lines.removeAll('portal-a');
    expect(await lines.list('portal-a')).toEqual([]);
    expect(await lines.get('portal-b', 3)).toMatchObject({ lineId: 3, options: { other: 1 } });
  });

  it('saves a line only while the portal is in Open Channels mode, and a switch back is refused while a line row is left', async () => {
    const lines = new OpenLineStore(database, clock);
    const leave = { integrationType: 'open_channels', leaveOpenChannels: { kind: 'ol_inbound', reason: 'left' } };
    // A line saved after the switch back read the lines: the mode save is refused until it is gone…
    expect(await lines.save('portal-a', 1, {})).toBe(0);
    expect(await portals.saveSettings('portal-a', { integrationType: 'chat2desk' }, undefined, leave)).toEqual({ conflict: 'lines_connected' });
    expect((await portals.get('portal-a'))!.settings.integrationType).toBe('open_channels');
    await lines.remove('portal-a', 1);
    expect(await portals.saveSettings('portal-a', { integrationType: 'chat2desk' }, undefined, leave)).toMatchObject({ settings: { integrationType: 'chat2desk' } });
    // …and once the mode is saved, no line is saved any more.
    expect(await lines.save('portal-a', 1, {})).toBe('not_open_channels');
    expect(await lines.list('portal-a')).toEqual([]);
  });

  it("connecting a line wakes the portal's held jobs it names: tried once and due later, of that kind (and conversation)", async () => {
    const { db, dialect } = database;
    const now = clock.now();
    const job = (dedupKey: string, memberId = 'portal-a', kind = 'ol_inbound', orderingKey = 'chat-1') => ({
      kind,
      memberId,
      input: {},
      dedupKey,
      orderingKey,
      deadlineAt: now + 600_000,
      awaitsConfirmation: false,
    });
    await dialect.transaction((tx) =>
      insertJobs(
        tx,
        [job('held'), job('untried'), job('other-chat', 'portal-a', 'ol_inbound', 'chat-2'), job('other-kind', 'portal-a', 'ol_outbound'), job('other-portal', 'portal-b')],
        now,
      ),
    );
    // Every job but `untried` ran once and waits for its next look in a minute.
    await db
      .update(jobs)
      .set({ attempts: 1, runAt: now + 60_000 })
      .where(ne(jobs.dedupKey, 'untried'));
    await db
      .update(jobs)
      .set({ runAt: now + 60_000 })
      .where(eq(jobs.dedupKey, 'untried'));
    const lines = new OpenLineStore(database, clock);
    expect(await lines.save('portal-a', 1, {}, [{ kind: 'ol_inbound', orderingKey: 'chat-1' }])).toBe(1);
    const due = async () =>
      (
        await db
          .select({ name: jobs.dedupKey })
          .from(jobs)
          .where(lt(jobs.runAt, now + 60_000))
      )
        .map((row) => row.name)
        .sort();
    expect(await due()).toEqual(['held']);
    // Without a conversation: every held job of the kind on the portal.
    expect(await lines.save('portal-a', 2, {}, [{ kind: 'ol_inbound' }])).toBe(1);
    expect(await due()).toEqual(['held', 'other-chat']);
  });

  it('a settings save merges only its changes, and a switch from a mode another save left is refused', async () => {
    await portals.saveSettings('portal-a', { defaultCountry: 'RU', tags: [1] });
    // Another tab switched back meanwhile…
    await portals.saveSettings('portal-a', { integrationType: 'chat2desk' });
    // …a save begun before it, of another field, keeps the switch…
    await portals.saveSettings('portal-a', { defaultCountry: 'MX' });
    expect((await portals.get('portal-a'))!.settings).toEqual({ integrationType: 'chat2desk', defaultCountry: 'MX', tags: [1] });
    // …and a switch back begun from the mode it saw (Open Channels) is refused, changing nothing.
    expect(await portals.saveSettings('portal-a', { integrationType: 'chat2desk', defaultCountry: 'ES' }, undefined, { integrationType: 'open_channels' })).toEqual({
      conflict: 'mode_changed',
    });
    expect((await portals.get('portal-a'))!.settings).toEqual({ integrationType: 'chat2desk', defaultCountry: 'MX', tags: [1] });
  });

  it('the switch back finishes waiting inbound jobs as not sent, in its transaction; running, in-doubt and other kinds are left as they are', async () => {
    const { db, dialect } = database;
    await dialect.transaction((tx) =>
      insertJobs(
        tx,
        ['waiting', 'running', 'in-doubt', 'other-portal'].map((name) => ({
          kind: 'ol_inbound',
          memberId: name === 'other-portal' ? 'portal-b' : 'portal-a',
          input: {},
          dedupKey: name,
          deadlineAt: clock.now() + 60_000,
          awaitsConfirmation: false,
        })),
        clock.now(),
      ),
    );
    await dialect.transaction((tx) =>
      insertJobs(tx, [{ kind: 'ol_outbound', memberId: 'portal-a', input: {}, dedupKey: 'outbound', deadlineAt: clock.now() + 60_000, awaitsConfirmation: false }], clock.now()),
    );
    await db.update(jobs).set({ state: 'running' }).where(eq(jobs.dedupKey, 'running'));
    // The in-doubt one's send is claimed in the ledger: it may have reached Bitrix24.
    const [{ publicId }] = (await db.select({ publicId: jobs.publicId }).from(jobs).where(eq(jobs.dedupKey, 'in-doubt'))) as [{ publicId: string }];
    await db
      .insert(effects)
      .values({ memberId: 'portal-a', effectKey: 'send', state: 'claimed', owner: `${publicId}#1`, leaseUntil: 0, attemptAt: 0, intent: '{}', createdAt: 0, updatedAt: 0 });
    const saved = await portals.saveSettings('portal-a', { integrationType: 'chat2desk' }, undefined, {
      integrationType: 'open_channels',
      leaveOpenChannels: { kind: 'ol_inbound', reason: 'left the mode' },
    });
    expect(saved).toMatchObject({ settings: { integrationType: 'chat2desk' } });
    const states = Object.fromEntries(
      (await db.select({ name: jobs.dedupKey, state: jobs.state, result: jobs.returnValues }).from(jobs)).map((row) => [
        row.name,
        [row.state, row.result && JSON.parse(row.result)],
      ]),
    );
    expect(states).toEqual({
      waiting: ['done', { status: 'failed', error: 'left the mode' }],
      running: ['running', null],
      'in-doubt': ['queued', null],
      'other-portal': ['queued', null],
      outbound: ['queued', null],
    });
  });
});
