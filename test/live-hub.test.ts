import { describe, expect, it } from 'vitest';
import { localBroadcast } from '../src/db/broadcast.js';
import type { Portal } from '../src/db/portals.js';
import type { DialogViewer } from '../src/dialogs/scope.js';
import type { LiveEvent } from '../src/live/changes.js';
import { LiveHub, MAX_UNSENT_EVENTS } from '../src/live/hub.js';
import { createLogger } from '../src/log.js';

// The hub's own bound, without HTTP: a reader that stops taking events cannot be made to fill a
// loopback socket's buffers reliably, so the sink stands for the stream here.

const portal = { memberId: 'portal-1' } as Portal;
const viewer: DialogViewer = { portal, userId: 1, admin: true, scope: { kind: 'all' }, operatorId: undefined, via: 'workspace', expiresAt: Number.MAX_SAFE_INTEGER };
const inbox = (messageId: number) => ({ hook_type: 'inbox', message_id: messageId, dialog_id: 10, client_id: 20, client: { id: 20, phone: '79161234567' } });
const newHub = () =>
  new LiveHub({
    broadcast: localBroadcast(),
    portalOf: async () => portal,
    directoryOf: async () => undefined,
    limits: { streamsPerPortal: 10, streamsPerUser: 10 },
    log: createLogger('silent'),
  });

describe('the live hub', () => {
  it('drops a subscriber that stops taking events instead of buffering without bound', async () => {
    const hub = newHub();
    const sent: LiveEvent[] = [];
    let dropped!: (reason: string) => void;
    const droppedWith = new Promise<string>((resolve) => {
      dropped = resolve;
    });
    const neverTaken = (event: LiveEvent) => {
      sent.push(event);
      return new Promise<void>(() => undefined);
    };
    hub.subscribe(viewer, { send: neverTaken, drop: (reason) => dropped(reason), end: () => undefined });
    for (let id = 1; id <= MAX_UNSENT_EVENTS + 10; id += 1) hub.published(portal.memberId, inbox(id));
    expect(await droppedWith).toContain(`more than ${MAX_UNSENT_EVENTS} events`);
    expect(sent).toHaveLength(MAX_UNSENT_EVENTS);
  });

  it('keeps a subscriber that takes its events, however many come', async () => {
    const hub = newHub();
    const count = MAX_UNSENT_EVENTS * 3;
    let all!: () => void;
    const allSent = new Promise<void>((resolve) => {
      all = resolve;
    });
    let sent = 0;
    hub.subscribe(viewer, {
      send: async () => {
        sent += 1;
        if (sent === count) all();
      },
      drop: () => expect.fail('a reader that keeps up was dropped'),
      end: () => undefined,
    });
    for (let id = 1; id <= count; id += 1) hub.published(portal.memberId, inbox(id));
    await allSent;
  });
});
