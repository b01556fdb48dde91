import { Hono } from 'hono';
import type { JobStore } from '../db/jobs.js';

/** 200 while the database answers and the workers run; the database's kind and the queue depth are there for monitoring. */
export function createHealthRoute(deps: { databaseUp(): boolean | Promise<boolean>; databaseKind: 'sqlite' | 'postgres'; workersRunning(): boolean; jobs: JobStore }) {
  return new Hono().get('/healthz', async (c) => {
    const database = await deps.databaseUp();
    const workers = deps.workersRunning();
    const queue = database ? await deps.jobs.depth() : null;
    return c.json({ status: database && workers ? 'ok' : 'unavailable', database, databaseKind: deps.databaseKind, workers, queue }, database && workers ? 200 : 503);
  });
}
