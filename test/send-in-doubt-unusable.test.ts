import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';
import { eventually, installAndConfigure, startStack, type Stack } from './support/stack.js';

describe('a send in doubt whose next attempt cannot reach Chat2Desk at all', () => {
  let stack: Stack | undefined;
  afterEach(async () => {
    await stack?.close();
    stack = undefined;
  });

  it('fails saying the message may already have been sent, not only why it cannot run', async () => {
    stack = await startStack();
    await installAndConfigure(stack);
    const { b24, c2d } = stack;
    c2d.seedClient({ phone: '79161234567', transport: 'whatsapp', channelId: 17404 });
    // Chat2Desk stores the message; its answer is lost, and the server stops before the retry.
    const answer = c2d.holdNext({ method: 'POST', path: '/messages' });
    const call = await b24.callRobot({ code: 'c2d_send_message', properties: { phone: '79161234567', text: 'stored, answer lost' } });
    await answer.arrived;
    const closing = stack.server.close();
    answer.lose();
    await closing;
    expect(c2d.account().messages.filter((message) => message.text === 'stored, answer lost')).toHaveLength(1);

    // The operator removed the portal's Chat2Desk address from the allow-list meanwhile.
    const config = { ...stack.config, chat2desk: { ...stack.config.chat2desk, allowedApiUrls: ['https://api.chat2desk.invalid/v1'] } };
    stack.server = await startServer(config, createLogger('warn'), { hostname: '127.0.0.1', reportLingerMs: 50 });
    const event = await eventually(() => b24.sentEvents.find((item) => item.eventToken === call.eventToken), 20_000, 'result');
    expect(event.returnValues).toMatchObject({ status: 'failed' });
    expect(String(event.returnValues.error)).toContain('no longer allowed');
    expect(String(event.returnValues.error)).toContain('may already have');
  });
});
