import pLimit, { type LimitFunction } from 'p-limit';
import type { CachedDialog, DialogDirectory } from '../chat2desk/directory.js';
import type { Broadcast } from '../db/broadcast.js';
import type { Portal } from '../db/portals.js';
import type { DialogViewer } from '../dialogs/scope.js';
import { clientVisible, dialogVisible, type ScopedClient } from '../dialogs/visibility.js';
import type { Logger } from '../log.js';
import { type DialogChange, dialogChangeOf, type LiveEvent } from './changes.js';

/** How many live streams may be open at once (config LIVE_STREAMS_PER_PORTAL / LIVE_STREAMS_PER_USER). */
export interface LiveLimits {
  /** Each stream holds a connection and a subscriber; beyond this, a portal's streams are a leak or abuse, not its employees' tabs. */
  streamsPerPortal: number;
  /** One per open CRM card tab and workspace; a browser keeps about 6 connections per host (HTTP/1.1) anyway. */
  streamsPerUser: number;
}

/**
 * Events handed to one stream that its connection has not taken yet. A reader this far behind is
 * dropped (its page reconnects and reads afresh) rather than buffered without bound.
 */
export const MAX_UNSENT_EVENTS = 64;

/**
 * Deliveries of one portal waiting for their audience to be worked out (each may need one cached
 * Chat2Desk lookup). Beyond this the portal's live updates are skipped: pages catch up on their next read.
 */
const MAX_WAITING_CHANGES_PER_PORTAL = 1000;

/** Where a subscriber's events go: the SSE stream of src/routes/live.ts. */
export interface LiveSink {
  /** Resolves when the connection has taken the event. */
  send(event: LiveEvent): Promise<void>;
  /** The hub gave up on this subscriber (too slow): end its stream without waiting for the reader. */
  drop(reason: string): void;
  /** The server is stopping: end the stream as at its token's expiry (the page reconnects). */
  end(): void;
}

export type Subscription = { unsubscribe(): void } | { refused: string };

interface Subscriber {
  viewer: DialogViewer;
  sink: LiveSink;
  unsent: number;
  active: boolean;
}

interface PortalSubscribers {
  subscribers: Set<Subscriber>;
  /** One change at a time per portal: events reach every stream in the order the deliveries came. */
  inOrder: LimitFunction;
}

/** The broadcast topic of a live change; the payload is `{ memberId, change }` as JSON (src/db/broadcast.ts). */
export const LIVE_CHANGE = 'live';

export interface LiveHubDeps {
  /** Carries each change to every process sharing the database, this one included, whose own streams it reaches. */
  broadcast: Broadcast;
  portalOf(memberId: string): Promise<Portal | undefined>;
  directoryOf(portal: Portal): Promise<DialogDirectory | undefined>;
  limits: LiveLimits;
  log: Logger;
}

/**
 * Live updates: open pages subscribe per portal with their viewer to the process their stream
 * reached; a verified Chat2Desk delivery, received by any process, is published on the broadcast
 * and every process hands it to its own streams, each event reaching only the viewers whose scope
 * shows that dialog or client (src/dialogs/visibility.ts). The broadcast carries the change as the
 * delivery's body describes it (ids, the client's phones, the operator), not the body.
 */
export class LiveHub {
  readonly #portals = new Map<string, PortalSubscribers>();
  readonly #unsubscribe: () => void;

  constructor(private readonly deps: LiveHubDeps) {
    this.#unsubscribe = deps.broadcast.subscribe(LIVE_CHANGE, (payload) => this.#received(payload));
  }

  subscribe(viewer: DialogViewer, sink: LiveSink): Subscription {
    const memberId = viewer.portal.memberId;
    const portal = this.#portals.get(memberId) ?? { subscribers: new Set<Subscriber>(), inOrder: pLimit(1) };
    if (portal.subscribers.size >= this.deps.limits.streamsPerPortal) {
      return { refused: `This portal already has ${this.deps.limits.streamsPerPortal} live streams open; try again later` };
    }
    const ofUser = [...portal.subscribers].filter((other) => other.viewer.userId === viewer.userId).length;
    if (ofUser >= this.deps.limits.streamsPerUser) {
      return { refused: `You already have ${this.deps.limits.streamsPerUser} live streams open; close some tabs or cards and try again` };
    }
    const subscriber: Subscriber = { viewer, sink, unsent: 0, active: true };
    portal.subscribers.add(subscriber);
    this.#portals.set(memberId, portal);
    return { unsubscribe: () => this.#remove(memberId, subscriber) };
  }

  /**
   * A verified, stored, first receipt of a Chat2Desk delivery (src/chat2desk/webhooks.ts). Returns at
   * once: who may see it is worked out in the background, in delivery order per portal, never
   * holding up the webhook's answer.
   */
  published(memberId: string, delivery: Record<string, unknown>): void {
    const change = dialogChangeOf(delivery);
    if (change) this.changed(memberId, change);
  }

  /**
   * A change to what a dialog view shows, to every process's streams: a delivery's, or one our own
   * work made (a client's Open Channel chat became known, naming the client only: who may see it is
   * looked up as for a delivery that names no dialog).
   */
  changed(memberId: string, change: DialogChange): void {
    // The sender's own handlers run at once (Broadcast.publish); a failure to reach the others is logged there.
    void this.deps.broadcast.publish(LIVE_CHANGE, JSON.stringify({ memberId, change }));
  }

  /** A change published by this process or another: to this process's streams of its portal. */
  #received(payload: string): void {
    const message = JSON.parse(payload) as { memberId: string; change: DialogChange };
    const portal = this.#portals.get(message.memberId);
    if (!portal) return;
    if (portal.inOrder.pendingCount >= MAX_WAITING_CHANGES_PER_PORTAL) {
      this.deps.log.warn({ memberId: message.memberId }, 'live updates behind: a change was skipped');
      return;
    }
    void portal.inOrder(() => this.#fanOut(message.memberId, portal, message.change));
  }

  async #fanOut(memberId: string, portal: PortalSubscribers, change: DialogChange): Promise<void> {
    const current = await this.deps.portalOf(memberId);
    const audience = new Audience(change, async () => (current ? this.deps.directoryOf(current) : undefined));
    for (const subscriber of [...portal.subscribers]) {
      // An uninstall or a reinstall voids every token issued before it, and so the streams opened with them.
      if (!current || current.status === 'uninstalled' || current.installedAt !== subscriber.viewer.portal.installedAt) {
        this.#remove(memberId, subscriber);
        subscriber.sink.end();
        continue;
      }
      let visible: boolean;
      try {
        visible = await audience.sees(subscriber.viewer);
      } catch (error) {
        // Unknown is not visible: a lookup that failed never widens what a viewer sees.
        this.deps.log.warn({ memberId, err: error instanceof Error ? error.message : String(error) }, 'live update: could not tell who may see a change');
        visible = false;
      }
      if (visible && subscriber.active) this.#send(memberId, subscriber, change.event);
    }
  }

  /** The server is stopping: every stream ends, so no open connection holds the shutdown up. */
  close(): void {
    this.#unsubscribe();
    for (const [memberId, portal] of this.#portals) {
      for (const subscriber of [...portal.subscribers]) {
        this.#remove(memberId, subscriber);
        subscriber.sink.end();
      }
    }
  }

  #send(memberId: string, subscriber: Subscriber, event: LiveEvent): void {
    if (subscriber.unsent >= MAX_UNSENT_EVENTS) {
      this.#remove(memberId, subscriber);
      subscriber.sink.drop(`more than ${MAX_UNSENT_EVENTS} events not taken`);
      return;
    }
    subscriber.unsent += 1;
    subscriber.sink.send(event).then(
      () => {
        subscriber.unsent -= 1;
      },
      () => this.#remove(memberId, subscriber),
    );
  }

  #remove(memberId: string, subscriber: Subscriber): void {
    subscriber.active = false;
    const portal = this.#portals.get(memberId);
    if (!portal) return;
    portal.subscribers.delete(subscriber);
    // A change still in flight for this entry iterates its own (now empty) set: nothing is lost or reordered.
    if (portal.subscribers.size === 0) this.#portals.delete(memberId);
  }
}

/**
 * Who may see one change. The body's own facts first; what it leaves out (a close's client, an
 * outbox's dialog operator) is read through the portal's dialog directory (the cache, then
 * Chat2Desk), once per change and only when some viewer's scope needs it.
 */
class Audience {
  #dialog?: Promise<CachedDialog | undefined>;
  #client?: Promise<ScopedClient | undefined>;
  #clientDialogs?: Promise<CachedDialog[]>;

  constructor(
    private readonly change: DialogChange,
    private readonly directory: () => Promise<DialogDirectory | undefined>,
  ) {}

  async sees(viewer: DialogViewer): Promise<boolean> {
    const { dialogId } = this.change.event;
    switch (viewer.scope.kind) {
      case 'all':
        return true;
      case 'record': {
        const client = await this.#theClient();
        return client !== undefined && clientVisible(viewer, client);
      }
      case 'operator': {
        if (dialogId !== null) {
          const operatorId = this.change.operatorId !== undefined ? this.change.operatorId : ((await this.#theDialog())?.operatorId ?? null);
          return dialogVisible(viewer, { operatorId }, undefined);
        }
        // A change naming only the client (a client tag): seen by the operators of its dialogs.
        return (await this.#dialogsOfClient()).some((dialog) => dialogVisible(viewer, dialog, undefined));
      }
    }
  }

  #theDialog(): Promise<CachedDialog | undefined> {
    const { dialogId } = this.change.event;
    this.#dialog ??= dialogId === null ? Promise.resolve(undefined) : this.directory().then((directory) => directory?.dialog(dialogId));
    return this.#dialog;
  }

  #theClient(): Promise<ScopedClient | undefined> {
    this.#client ??= (async () => {
      if (this.change.client) return this.change.client;
      const clientId = this.change.event.clientId ?? (await this.#theDialog())?.clientId ?? null;
      if (clientId === null) return undefined;
      return (await this.directory())?.client(clientId);
    })();
    return this.#client;
  }

  #dialogsOfClient(): Promise<CachedDialog[]> {
    const { clientId } = this.change.event;
    this.#clientDialogs ??= clientId === null ? Promise.resolve([]) : this.directory().then(async (directory) => (directory ? directory.dialogsOfClient(clientId) : []));
    return this.#clientDialogs;
  }
}
