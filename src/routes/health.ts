import { Hono } from 'hono';
import type { JobStore } from '../db/jobs.js';

/** Which process answered (several may share a PostgreSQL database behind one address). */
export interface ProcessIdentity {
  host: string;
  pid: number;
  /** Random per server start: two servers in one OS process (tests) are told apart too. */
  instance: string;
}

/**
 * 200 while the database answers and the workers run. For monitoring: the database's kind, the
 * queue depth, which process answered, and its share of the runs finished in the last five minutes
 * (`work`: `finishedHere` of `finishedAll`, every process together; `share` null while none finished).
 */
export function createHealthRoute(deps: {
  databaseUp(): boolean | Promise<boolean>;
  databaseKind: 'sqlite' | 'postgres';
  workersRunning(): boolean;
  jobs: JobStore;
  process: ProcessIdentity;
}) {
  return new Hono().get('/healthz', async (c) => {
    const database = await deps.databaseUp();
    const workers = deps.workersRunning();
    const queue = database ? await deps.jobs.depth() : null;
    const share = database ? await deps.jobs.workShare() : null;
    const work = share && { ...share, share: share.finishedAll > 0 ? Math.min(1, share.finishedHere / share.finishedAll) : null };
    const ok = database && workers;
    return c.json({ status: ok ? 'ok' : 'unavailable', database, databaseKind: deps.databaseKind, workers, queue, process: deps.process, work }, ok ? 200 : 503);
  });
}
