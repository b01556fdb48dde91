import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TestClock } from './support/clock.js';
import { installAndConfigure, startStack, type Stack } from './support/stack.js';
import { bearer, pageToken, tabToken } from './support/viewer-tokens.js';

const PHONE = '79161234567';

/** GET /api/dialogs/meta: what the dialog view's write controls choose from (src/dialogs/dialog-meta.ts). */
describe('the dialog view’s choices for its write controls', () => {
  let stack: Stack;
  let clock: TestClock;

  beforeEach(async () => {
    clock = new TestClock();
    stack = await startStack({ clock });
    await installAndConfigure(stack, { defaultCountry: 'RU' });
  });
  afterEach(() => stack.close());

  const meta = async (token: string) => {
    const response = await fetch(`${stack.server.url}/api/dialogs/meta`, { headers: bearer(token) });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };

  it('lists the account’s tags, active operators and channels with their messengers, and says who the viewer writes as', async () => {
    // User 1 has operator 617's e-mail.
    const { status, body } = await meta(await tabToken(stack, { userId: 1, phones: [PHONE], clock }));
    expect(status).toBe(200);
    const account = stack.c2d.account();
    expect(body.operatorId).toBe(617);
    expect(body.tags).toEqual(expect.arrayContaining(account.tags.map((tag) => ({ id: tag.id, label: tag.label }))));
    expect(body.channels).toEqual(account.channels.map((channel) => ({ id: channel.id, name: channel.name, transports: channel.transports })));
    // The deleted operator 313753 is not offered.
    expect((body.operators as Array<{ id: number }>).map((operator) => operator.id).sort()).toEqual([311416, 617]);
    expect(body.operators).toContainEqual({ id: 617, name: 'John Doe' });
  });

  it('costs Chat2Desk nothing once the account’s lists are cached', async () => {
    const token = await tabToken(stack, { userId: 1, phones: [PHONE], clock });
    expect((await meta(token)).status).toBe(200);
    stack.c2d.resetCalls();
    expect((await meta(token)).status).toBe(200);
    expect((await meta(await pageToken(stack, { userId: 1, admin: true, clock }))).status).toBe(200);
    expect(stack.c2d.calls).toEqual([]);
  });

  it('says a user without a Chat2Desk operator may only read (operatorId null), and needs a token', async () => {
    const unmapped = stack.b24.seedUser({ name: 'Ulises', email: 'ulises@example.com' });
    const { status, body } = await meta(await tabToken(stack, { userId: unmapped, phones: [PHONE], clock }));
    expect(status).toBe(200);
    expect(body.operatorId).toBeNull();
    const anonymous = await fetch(`${stack.server.url}/api/dialogs/meta`);
    expect(anonymous.status).toBe(401);
  });
});
