import { afterEach, describe, expect, it } from 'vitest';
import { TEST_DATABASE } from './support/databases.js';
import { type Processes, startProcesses } from './support/processes.js';
import { eventually, installAndConfigure } from './support/stack.js';

/**
 * A process stopped with SIGTERM hands back (JobStore.handBack) the runs it could not finish in its
 * grace, and another process takes them up at once (docs/multi-process.md). A run handed back is
 * stopped (src/run-scope.ts): one that claimed its message in the ledger and still waits for its
 * turn at Chat2Desk (the account's concurrency) must not send it once the other process, finding no
 * message, has sent it (found by the review of issue 11, test/review11-handback.test.ts on its branch).
 */
describe.skipIf(TEST_DATABASE !== 'postgres')('a process stopping on PostgreSQL', () => {
  let processes: Processes | undefined;
  afterEach(async () => {
    await processes?.close();
    processes = undefined;
  });

  /** A's two runs: the first's send reaches Chat2Desk and its answer is held; the second waits for the account's one slot. */
  async function twoRunsWaitingOnA(): Promise<{ p: Processes; release: () => void }> {
    processes = await startProcesses(2, { env: { CHAT2DESK_CONCURRENCY: '1', PORTAL_CONCURRENCY: '4', JOB_LEASE_SECONDS: '30' } });
    const p = processes;
    const [a, b] = p.servers as [(typeof p.servers)[0], (typeof p.servers)[0]];
    await installAndConfigure(p.via(0));
    p.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    // Only A runs jobs for now, so that both runs are A's.
    await b.worker.stop(0);
    const held = p.c2d.holdNext({ method: 'POST', path: '/messages' });
    const calls = await Promise.all(['first', 'second'].map((text) => p.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text }, via: a.url })));
    for (const call of calls) expect(call.status).toBe(200);
    await held.arrived;
    // The second run has claimed its message in the ledger and waits for the slot.
    await eventually(
      async () => {
        if (a.database.kind !== 'postgres') throw new Error('PostgreSQL only');
        const { rows } = await a.database.pool.query<{ n: number }>('select count(*)::int as n from effects');
        return rows[0]!.n >= 2;
      },
      10_000,
      'both runs to claim their message',
    );
    await b.worker.start();
    return { p, release: () => held.release() };
  }

  const sent = (p: Processes, text: string) => p.c2d.account().messages.filter((m) => String(m.text) === text).length;

  it('a message waiting for its Chat2Desk turn in a stopping process is sent once, not by both processes', { timeout: 60_000 }, async () => {
    const { p, release } = await twoRunsWaitingOnA();
    // A deploy stops A: after its grace it hands back both runs, and B takes them up.
    await p.servers[0]!.pipeline.stop();
    await eventually(() => sent(p, 'second') === 1, 15_000, 'B to send the second message');
    // A's held answer comes: its second run gets the slot, and must not use it.
    release();
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(sent(p, 'second')).toBe(1);
    expect(sent(p, 'first')).toBe(1);
    expect(p.logs[0]!.join('')).toContain('run stopped here: its job went to another process');
  });

  it('closes its database while runs handed back still wait, and they end quietly when their turn comes', { timeout: 60_000 }, async () => {
    const { p, release } = await twoRunsWaitingOnA();
    await p.servers[0]!.close();
    await eventually(() => sent(p, 'second') === 1 && sent(p, 'first') === 1, 15_000, 'B to finish both jobs');
    // A's runs wake to a closed pool: the first to record its answer, the second to its slot.
    release();
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(sent(p, 'second')).toBe(1);
    expect(sent(p, 'first')).toBe(1);
    const errors = p.logs[0]!.filter((line) => (JSON.parse(line) as { level: number }).level >= 50);
    expect(errors).toEqual([]);
    expect(p.logs[0]!.filter((line) => line.includes('run stopped here')).length).toBe(2);
  });
});
