import { describe, expect, it } from 'vitest';
import type { BatchCommand } from '../src/bitrix24/rest-client.js';
import { SharedBatches } from '../src/episodes/shared-batches.js';
import { RunStoppedError, runSignal, stillGoing, withinRun } from '../src/run-scope.js';

/**
 * Closed episodes' shared batches (src/episodes/shared-batches.ts) and runs stopped in this process
 * (src/run-scope.ts: handed back at stop, or their lease lost): a stopped run's command stays out of
 * the batch, and the batch is not stopped with the run that happened to start it.
 */
describe('shared batches and stopped runs', () => {
  it("leaves out a stopped run's command and sends the others' in the batch that run started", async () => {
    const sent: string[][] = [];
    const rest = {
      // As the REST client does: the caller's run is read on entry and checked before the request goes.
      batch: async (_memberId: string, commands: BatchCommand[]) => {
        const run = runSignal();
        await new Promise((resolve) => setImmediate(resolve));
        stillGoing(run);
        sent.push(commands.map((command) => command.method));
        return { results: Object.fromEntries(commands.map((command) => [command.key, true])), errors: {} };
      },
    };
    const portal = new SharedBatches(rest as never, { lingerMs: 5 }).forPortal('portal');
    // The stopped run's command comes first: the batch's linger starts within its scope.
    const stopped = new AbortController();
    const first = withinRun(stopped.signal, () => portal.call('crm.timeline.comment.add'));
    const second = withinRun(new AbortController().signal, () => portal.call('crm.contact.list'));
    stopped.abort();
    await expect(first).rejects.toBeInstanceOf(RunStoppedError);
    await expect(second).resolves.toBe(true);
    expect(sent).toEqual([['crm.contact.list']]);
  });
});
