import { rmSync } from 'node:fs';
import { systemClock } from '../src/clock.js';
import { openDatabase } from '../src/db/database.js';
import { JobStore } from '../src/db/jobs.js';
for (const backlog of [0, 500, 1999]) {
  for (const bounded of [false, true]) {
    rmSync('/tmp/r2b.db', { force: true }); rmSync('/tmp/r2b.db-wal', { force: true }); rmSync('/tmp/r2b.db-shm', { force: true });
    const h = openDatabase('/tmp/r2b.db');
    const jobs = new JobStore(h.db, systemClock);
    const job = (t: string) => ({ kind: 'robot', memberId: 'p', input: { a: 1 }, dedupKey: t, robot: { eventToken: t, robotCode: 'x', documentId: ['a'] }, deadlineAt: Date.now() + 1e6, awaitsConfirmation: true });
    for (let i = 0; i < backlog; i++) await jobs.enqueue(job(`b${i}`));
    // other portal's calls so we measure the confirming count of a portal with `backlog` waiting
    const other = (t: string) => ({ ...job(t), memberId: 'q' });
    const n = 5000;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await jobs.enqueue(other(`m${i}`), bounded ? { maxConfirming: 1e9 } : {});
    const mid = performance.now();
    for (let i = 0; i < n; i++) await jobs.enqueue(job(`n${i}`), bounded ? { maxConfirming: 1e9 } : {});
    const t1 = performance.now();
    console.log({ backlog, bounded, otherPortalUs: Math.round(((mid - t0) / n) * 1000), growingPortalUs: Math.round(((t1 - mid) / n) * 1000) });
    h.close();
  }
}
