import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../src/db/database.js';
import { OpenLineStore } from '../src/db/open-lines.js';
import { TestClock } from './support/clock.js';
import { DATABASE_KINDS, openTestDatabase, type TestDatabase } from './support/databases.js';

/** The connected Open Channel lines (issue 10): routing order by connection, options replaced in place. */
describe.each(DATABASE_KINDS)('the Open Channel lines store on %s', (kind) => {
  let test: TestDatabase;
  let database: DatabaseHandle;
  const clock = new TestClock();

  beforeEach(async () => {
    test = await openTestDatabase(kind);
    database = test.handle;
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
});
