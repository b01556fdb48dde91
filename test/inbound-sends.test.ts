import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { CallOptions } from '../src/bitrix24/rest-client.js';
import { type DatabaseHandle, openDatabase } from '../src/db/database.js';
import { EffectStore } from '../src/db/effects.js';
import { bindLedger, type Effect } from '../src/jobs/ledger.js';
import { InboundSends } from '../src/open-channels/inbound-sends.js';
import { RunStoppedError, runSignal, stillGoing, withinRun } from '../src/run-scope.js';

/**
 * Shared imconnector.send.messages calls and the ledger's deferred claims (src/open-channels/inbound-sends.ts,
 * src/jobs/ledger.ts) on a real SQLite file. The portal is a stand-in that, like the REST client, runs
 * `beforeSend` once the bucket let the call through and then takes every message it carries.
 */
describe('inbound sends and deferred claims', () => {
  let dir: string;
  let database: DatabaseHandle;
  afterEach(() => {
    database.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function setup() {
    dir = mkdtempSync(join(tmpdir(), 'inbound-sends-'));
    database = openDatabase(join(dir, 'app.db'));
    const clock = { now: () => 1_000_000 };
    const store = new EffectStore(database, clock);
    const calls: string[][] = [];
    const rest = {
      call: async (_memberId: string, _method: string, params: Record<string, unknown>, options: CallOptions = {}) => {
        // As the REST client does: the caller's run, read on entry and checked once the bucket let the call through.
        const run = runSignal();
        await options.beforeSend?.();
        stillGoing(run);
        const messages = params.MESSAGES as Array<{ key: string }>;
        calls.push(messages.map((message) => message.key));
        return { DATA: { RESULT: messages.map(() => ({ SUCCESS: true })) } };
      },
    };
    const sends = new InboundSends(rest as never, { lingerMs: 5 });
    const effect = (key: string): Effect<unknown> => ({
      key,
      intent: { key },
      busy: 'busy',
      inDoubt: 'in doubt',
      unreachable: 'unreachable',
      refused: () => false,
      deferred: true,
      act: (claim) => sends.send('portal', 1, { key }, claim.dispatching),
      settle: async () => 'unknown',
    });
    const ledger = (job: string, attempt: number) => bindLedger(store, { memberId: 'portal', owner: job, attempt, clock });
    return { store, calls, effect, ledger };
  }

  it('a message whose dispatch mark cannot be written fails alone; the call carries the others, and the failed one goes on its next attempt', async () => {
    const { store, calls, effect, ledger } = setup();
    const mark = store.dispatched.bind(store);
    let failOnce = true;
    store.dispatched = async (memberId, key, owner, intent) => {
      if (key === 'B' && failOnce) {
        failOnce = false;
        throw new Error('SQLITE_BUSY: database is locked');
      }
      return mark(memberId, key, owner, intent);
    };
    const results = await Promise.allSettled(['A', 'B'].map((key) => ledger(`job-${key}`, 1).once(effect(key))));
    expect(results.map((result) => result.status)).toEqual(['fulfilled', 'rejected']);
    expect(calls).toEqual([['A']]);
    // B never left: its claim is known undispatched, so the next attempt sends it instead of reporting it in doubt.
    await ledger('job-B', 2).once(effect('B'));
    expect(calls).toEqual([['A'], ['B']]);
  });

  it('a later attempt that took over a claim still waiting for its call sends it; the waiting one does not send it again', async () => {
    const { calls, effect, ledger } = setup();
    let open!: () => void;
    // The first attempt's act waits before its message reaches the queue; meanwhile a later attempt takes its claim over.
    const bucketOpen = new Promise<void>((resolve) => (open = resolve));
    const waiting = {
      ...effect('X'),
      act: async (claim: Parameters<Effect<unknown>['act']>[0]) => {
        await bucketOpen;
        return effect('X').act(claim);
      },
    };
    const first = ledger('job-X', 1).once(waiting);
    await new Promise((resolve) => setImmediate(resolve));
    await ledger('job-X', 2).once(effect('X'));
    open();
    await expect(first).rejects.toThrow('busy');
    expect(calls.flat().filter((key) => key === 'X')).toHaveLength(1);
  });

  it('a run stopped while its message waits for the shared call sends nothing; the call still carries the messages of the others', async () => {
    const { calls, effect, ledger } = setup();
    // The stopped run's message comes first: the call's linger starts within its scope.
    const stopped = new AbortController();
    const first = withinRun(stopped.signal, () => ledger('job-A', 1).once(effect('A')));
    const second = withinRun(new AbortController().signal, () => ledger('job-B', 1).once(effect('B')));
    // Handed back (src/jobs/dispatcher.ts) before the linger ends.
    stopped.abort();
    await expect(first).rejects.toBeInstanceOf(RunStoppedError);
    await expect(second).resolves.toMatchObject({ earlier: false });
    expect(calls).toEqual([['B']]);
  });
});
