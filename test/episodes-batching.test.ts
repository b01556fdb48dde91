import { afterEach, describe, expect, it } from 'vitest';
import { CLOSE_EPISODE_KIND } from '../src/jobs/kinds/close-episode.js';
import { eventually, installAndConfigure, startStack, type Stack } from './support/stack.js';

/**
 * A flood of closed episodes (README "Closed dialogs → CRM records", "Bitrix24 requests"): episodes
 * of a portal run many at once in slots of their own and share batch requests, and robot runs do not
 * wait behind them. Counted from the fake portal's call log, at its real rate limit (2/s, burst 50).
 */
describe('closed episodes in a flood', () => {
  let stack: Stack;
  afterEach(() => stack?.close());

  async function setUp() {
    stack = await startStack();
    await installAndConfigure(stack, { defaultCountry: 'RU', episodesEnabled: true });
  }

  /**
   * HTTP requests in the fake portal's call log: a batch's commands are logged right after it (the
   * fake runs them in one go), and are not requests of their own.
   */
  function requests(): number {
    const calls = stack.b24.calls;
    let requests = 0;
    for (let i = 0; i < calls.length; i++) {
      requests += 1;
      const call = calls[i]!;
      if (call.method === 'batch' && call.status === 200) i += Object.keys((call.params.cmd as Record<string, unknown> | undefined) ?? {}).length;
    }
    return requests;
  }

  const triggersFired = () => stack.b24.calls.filter((call) => call.method === 'crm.automation.trigger.execute' && call.status === 200).length;

  const count = async (state: string) => ((await stack.db.row('select count(*) as n from jobs where kind = ? and state = ?', CLOSE_EPISODE_KIND, state)) as { n: number }).n;

  /** `n` clients with an open dialog each, every other one already a contact in the CRM; their dialogs closed in Chat2Desk. */
  function closedEpisodes(n: number) {
    return Array.from({ length: n }, (_, i) => {
      const phone = `7916${String(5_000_000 + i)}`;
      if (i % 2 === 0) stack.b24.seedContact({ phones: [`+${phone}`] });
      const { client, dialog } = stack.c2d.seedClient({ phone, name: `Client ${i}`, transport: 'whatsapp', withDialog: 'open' });
      stack.c2d.receiveMessage({ clientId: client.id as number, text: 'Where is my order?' });
      return stack.c2d.closeDialog(dialog!.id as number);
    });
  }

  /** Chat2Desk delivers the close webhooks a few at a time, each within its timeout; every one is taken. */
  async function deliverAll(closes: Array<{ closeRequest: Record<string, unknown> }>) {
    const statuses: number[][] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < closes.length) statuses.push(await stack.c2d.deliverWebhook(closes[next++]!.closeRequest));
      }),
    );
    expect(statuses.filter((status) => status.join() !== '200')).toEqual([]);
  }

  it('200 episodes closed at once take at most 0.15 Bitrix24 requests each', async () => {
    await setUp();
    const closes = closedEpisodes(200);
    // All 200 stored before the first runs: closed at once, however slowly this machine takes the deliveries.
    await stack.server.worker.stop();
    await deliverAll(closes);
    stack.b24.resetCalls();
    await stack.server.worker.start();
    await eventually(async () => (await count('done')) === 200 && triggersFired() === 200, 120_000, 'every episode handled');

    expect(stack.b24.timelineComments).toHaveLength(200);
    expect(stack.b24.calls.filter((call) => call.method === 'crm.lead.add' && call.status === 200)).toHaveLength(100);
    // Every request our server made of the portal while the episodes ran and fired their triggers, a batch counted once.
    expect(requests() / 200, `${requests()} requests`).toBeLessThanOrEqual(0.15);
  }, 150_000);

  it('a robot call made during a flood of episodes is run and answered while every episode is still waiting on the portal', async () => {
    await setUp();
    // Every episode starts by looking the client up (crm.duplicate.findbycomm): held there, the flood fills its slots and stays.
    const held = stack.b24.hold({ rest: 'batch', command: 'crm.duplicate.findbycomm' }, 1_000);
    const closes = closedEpisodes(120);
    await deliverAll(closes);
    await eventually(async () => (await count('running')) === 50, 30_000, 'the episodes filled their slots');

    stack.c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    const call = await stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: '+7 (916) 123-45-67', text: 'Your order is ready' } });
    expect(call.status).toBe(200);
    const sent = await eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === call.eventToken), 30_000, 'the robot result');
    expect(sent.returnValues.status).toBe('sent');
    // The episodes are still held at the portal: the robot went past them by its own slots, not by their finishing.
    expect(await count('done')).toBe(0);
    expect(await count('running')).toBe(50);
    expect(await count('queued')).toBe(70);

    held.release();
    await eventually(async () => (await count('done')) === 120, 120_000, 'every episode handled after the release');
  }, 150_000);
});
