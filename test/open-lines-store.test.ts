import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase, type DatabaseHandle } from '../src/db/database.js';
import { OpenLineStore } from '../src/db/open-lines.js';
import { TestClock } from './support/clock.js';

/** The connected Open Channel lines (issue 10): routing order by connection, options replaced in place. */
describe('the Open Channel lines store', () => {
  let dir: string;
  let database: DatabaseHandle;
  const clock = new TestClock();

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'c2d-b24-lines-'));
    database = openDatabase(join(dir, 'app.db'));
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
});
