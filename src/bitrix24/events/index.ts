import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { Portal } from '../../db/portals.js';

/** A Bitrix24 event posted to our handler, from a portal its application token named. */
export interface PortalEvent {
  portal: Portal;
  /** The form body's `auth` map (tokens, when the event carries them). */
  auth: Record<string, unknown>;
  /** The form body's `data` field. */
  data: unknown;
  /** The form body's `ts` (when Bitrix24 sent the event): tells a repeated delivery from a new event of the same object. */
  ts?: string;
}

export interface EventAnswer {
  status: ContentfulStatusCode;
  body: Record<string, unknown>;
}

/** One Bitrix24 event the app handles (event names are compared upper-cased). */
export interface EventHandler {
  event: string;
  handle(event: PortalEvent): Promise<EventAnswer>;
}

/** The events the app is bound to, by name; others are acknowledged and ignored. */
export class EventHandlers {
  readonly #byEvent = new Map<string, EventHandler>();

  constructor(handlers: EventHandler[]) {
    for (const handler of handlers) this.#byEvent.set(handler.event.toUpperCase(), handler);
  }

  handle(name: string, event: PortalEvent): Promise<EventAnswer> {
    const handler = this.#byEvent.get(name.toUpperCase());
    return handler ? handler.handle(event) : Promise.resolve({ status: 200, body: { status: 'ignored' } });
  }
}
