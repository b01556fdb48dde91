import { afterEach, describe, expect, it } from 'vitest';
import { startChildStack } from './support/child-server.js';
import { eventually, installAndConfigure } from './support/stack.js';

describe('a closed episode and a real server process', () => {
  const cleanup: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step();
  });

  it('kill -9 between creating the record and pinning the comment: no second record, the comment is pinned after the restart', async () => {
    const server = await startChildStack();
    cleanup.push(() => server.close());
    const { b24, c2d } = server;
    await installAndConfigure(server, { episodesEnabled: true, defaultCountry: 'RU' });

    // The comment (in a shared batch) is held before Bitrix24 runs it: the lead exists, the comment does not, when the server dies.
    const comment = b24.hold({ rest: 'batch', command: 'crm.timeline.comment.add' });
    cleanup.push(() => comment.release());
    const { client, dialog } = c2d.seedClient({ phone: '79161234567', name: 'Anna', withDialog: 'open' });
    c2d.receiveMessage({ clientId: client.id as number, text: 'Hello' });
    const closed = c2d.closeDialog(dialog!.id as number);
    expect(await c2d.deliverWebhook(closed.closeRequest)).toEqual([200]);
    await comment.arrived;
    expect(b24.crm.leads.size).toBe(1);
    await server.kill();

    await server.restart();
    const [leadId] = [...b24.crm.leads.keys()];
    const pinned = await eventually(() => b24.timelineComments.find((item) => item.entityType === 'lead' && item.entityId === leadId), 30_000, 'comment after restart');
    expect(pinned.comment).toContain(`#${closed.requestId}`);
    expect(b24.crm.leads.size).toBe(1);
    expect(b24.calls.filter((call) => call.method === 'crm.lead.add')).toHaveLength(1);
    expect(b24.timelineComments).toHaveLength(1);
  });
});
