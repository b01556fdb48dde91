import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase, type DatabaseHandle } from '../src/db/database.js';
import { insertJobs } from '../src/db/jobs.js';
import { OpenLineStore } from '../src/db/open-lines.js';
import { PortalStore } from '../src/db/portals.js';
import { SecretBox } from '../src/secrets.js';
import { TestClock } from './support/clock.js';
import { APP_SECRET } from './support/stack.js';

/** The connected Open Channel lines (issue 10): routing order by connection, options replaced in place. */
describe('the Open Channel lines store', () => {
  let dir: string;
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
    dir = mkdtempSync(join(tmpdir(), 'c2d-b24-lines-'));
    database = openDatabase(join(dir, 'app.db'));
    portals = new PortalStore(database.db, secrets, clock);
    await portalIn('portal-a', 'open_channels');
    await portalIn('portal-b', 'open_channels');
  });
  afterEach(() => {
    database.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps lines in the order they were connected, per portal; saving again changes options, not the order', async () => {
    const lines = new OpenLineStore(database.db, clock);
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
    const lines = new OpenLineStore(database.db, clock);
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
    const sql = database.db.$client;
    database.db.transaction((tx) =>
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
    insertJobs(
      database.db,
      [{ kind: 'ol_outbound', memberId: 'portal-a', input: {}, dedupKey: 'outbound', deadlineAt: clock.now() + 60_000, awaitsConfirmation: false }],
      clock.now(),
    );
    sql.prepare("update jobs set state = 'running' where dedup_key = 'running'").run();
    // The in-doubt one's send is claimed in the ledger: it may have reached Bitrix24.
    const publicId = (sql.prepare("select public_id as id from jobs where dedup_key = 'in-doubt'").get() as { id: string }).id;
    sql
      .prepare("insert into effects (member_id, effect_key, state, owner, attempt_at, created_at, updated_at) values ('portal-a', 'send', 'claimed', ?, 0, 0, 0)")
      .run(`${publicId}#1`);
    const saved = await portals.saveSettings('portal-a', { integrationType: 'chat2desk' }, undefined, {
      integrationType: 'open_channels',
      leaveOpenChannels: { kind: 'ol_inbound', reason: 'left the mode' },
    });
    expect(saved).toMatchObject({ settings: { integrationType: 'chat2desk' } });
    const states = Object.fromEntries(
      (sql.prepare('select dedup_key as name, state, return_values as result from jobs').all() as Array<{ name: string; state: string; result: string | null }>).map((row) => [
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
