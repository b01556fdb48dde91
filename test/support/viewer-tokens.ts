import type { Clock } from '../../src/clock.js';
import { TabTokens } from '../../src/dialogs/tab-token.js';
import { PageTokens } from '../../src/pages/page-token.js';
import { APP_SECRET, type Stack } from './stack.js';

/**
 * Tokens as the server would issue them (same APP_SECRET as test/support/stack.ts): a CRM tab's for a
 * record and its phones, or the app page's (the workspace). The portal's current install generation
 * is read from the server.
 */
export async function tabToken(stack: Stack, input: { userId: number; phones: string[]; entityId?: number; admin?: boolean; clock?: Clock }): Promise<string> {
  const portal = await stack.server.portals.get(stack.b24.memberId);
  if (!portal) throw new Error('the app is not installed');
  const clock = input.clock ?? { now: () => Date.now() };
  return new TabTokens(APP_SECRET, clock).issue({
    memberId: portal.memberId,
    userId: input.userId,
    generation: portal.installedAt,
    admin: input.admin ?? false,
    checkedAt: clock.now(),
    scope: { kind: 'record', entityTypeId: 2, entityId: input.entityId ?? 1, phones: input.phones },
  }).token;
}

export async function pageToken(stack: Stack, input: { userId: number; admin?: boolean; clock?: Clock }): Promise<string> {
  const portal = await stack.server.portals.get(stack.b24.memberId);
  if (!portal) throw new Error('the app is not installed');
  const clock = input.clock ?? { now: () => Date.now() };
  return new PageTokens(APP_SECRET, clock).issue({
    memberId: portal.memberId,
    userId: input.userId,
    generation: portal.installedAt,
    admin: input.admin ?? false,
    checkedAt: clock.now(),
  }).token;
}

export function bearer(token: string, extra: Record<string, string> = {}): Record<string, string> {
  return { authorization: `Bearer ${token}`, ...extra };
}
