import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase, type DatabaseHandle } from '../src/db/database.js';
import { CacheStore } from '../src/db/cache.js';
import { JobStore } from '../src/db/jobs.js';

describe('the job queue', () => {
  let dir: string;
  let database: DatabaseHandle;
  let jobs: JobStore;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'c2d-b24-queue-'));
    database = openDatabase(join(dir, 'app.db'));
    jobs = new JobStore(database.db);
  });
  afterEach(() => {
    database.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const enqueue = (memberId: string, eventToken: string) =>
    jobs.enqueue({
      memberId,
      eventToken,
      robotCode: 'c2d_send_message',
      documentId: ['crm', 'CCrmDocumentDeal', 'DEAL_1'],
      properties: {},
      deadlineAt: Date.now() + 60_000,
      awaitsConfirmation: false, // the queue itself is under test here; confirmation is covered in forgery.test.ts
    });

  it("does not let one portal's backlog hide another portal's jobs", () => {
    for (let i = 0; i < 600; i++) enqueue('busy-portal', `busy-${i}`);
    enqueue('quiet-portal', 'quiet-1');
    expect(jobs.due('queued', 500).some((job) => job.memberId === 'quiet-portal')).toBe(false);
    const visible = jobs.due('queued', 500, ['busy-portal']);
    expect(visible.map((job) => job.eventToken)).toEqual(['quiet-1']);
  });

  it('keeps a cancelled job cancelled when its run ends', () => {
    const { job } = enqueue('portal', 'token-1');
    expect(jobs.claim(job.id, 60_000)?.state).toBe('running');
    expect(jobs.cancelPortal('portal')).toBe(1);
    jobs.finish(job.id, { status: 'sent' }, 'done');
    jobs.retryLater(job.id, Date.now(), 'x');
    expect(jobs.countByState()).toEqual({ cancelled: 1 });
  });

  it('stores a repeated event token once', () => {
    expect(enqueue('portal', 'same').duplicate).toBe(false);
    expect(enqueue('portal', 'same').duplicate).toBe(true);
    expect(enqueue('other-portal', 'same').duplicate).toBe(false);
    expect(jobs.depth()).toEqual({ queued: 2, running: 0, reporting: 0 });
  });

  it('prunes finished jobs past their retention and nothing still in flight', () => {
    const done = enqueue('portal', 'done').job;
    const queued = enqueue('portal', 'queued').job;
    jobs.claim(done.id, 60_000);
    jobs.finish(done.id, { status: 'sent' }, 'ok');
    jobs.markReported([done.id]);
    expect(jobs.pruneFinished(Date.now() - 60_000)).toBe(0);
    expect(jobs.pruneFinished(Date.now() + 1)).toBe(1);
    expect(jobs.countByState()).toEqual({ queued: 1 });
    expect(database.sqlite.prepare('select id from jobs').all()).toEqual([{ id: queued.id }]);
  });

  it('prunes cache rows nobody could be served any more', async () => {
    const cache = new CacheStore(database.db);
    const client = { id: 1, phone: '79161234567', clientPhone: null, name: null, assignedName: null, tags: [] };
    const nothingToReplay = () => ({ clientIds: [], dialogIds: [], phones: [], dialogListsOf: [], lists: [] });
    const now = 1_800_000_000_000;
    await cache.saveFetched('account', now - 3 * 24 * 3600_000, { clients: [client] }, nothingToReplay);
    await cache.saveFetched('account', now, { clients: [{ ...client, id: 2 }] }, nothingToReplay);
    expect(await cache.pruneOlderThan(now - 2 * 24 * 3600_000)).toBe(1);
    expect(await cache.client('account', 1, 0)).toBeUndefined();
    expect((await cache.client('account', 2, 0))?.id).toBe(2);
  });
});
