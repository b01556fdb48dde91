import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import type { Clock } from '../clock.js';
import type { DialogViewer } from '../dialogs/scope.js';

/** A ticket opens one stream within a minute of being issued (issue 9: "a single-use ticket that lives a minute"). */
export const LIVE_TICKET_TTL_MS = 60_000;

/**
 * Unused tickets kept at once, all portals together. A page asks for one per (re)connection, at
 * least every 15 minutes (its token's life); the least recently issued go first beyond this.
 */
const MAX_TICKETS = 20_000;

/**
 * Tickets one user may ask for per minute: a few open tabs reconnecting, with room for network
 * trouble, but not enough for one user to push everybody else's tickets out of the store.
 */
const TICKETS_PER_USER_PER_MINUTE = 30;

/** Tickets are 32 random bytes, base64url: exactly this. Anything else is refused before a lookup. */
const TICKET_SHAPE = /^[A-Za-z0-9_-]{43}$/;

/** What a ticket stands for: the viewer it was issued to; its token's expiry (`viewer.expiresAt`) ends the stream. */
export interface LiveGrant {
  viewer: DialogViewer;
}

export class LiveTicketRefusal extends Error {
  override name = 'LiveTicketRefusal';
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
  }
}

/**
 * Single-use tickets for opening a live stream: EventSource cannot send a header, and the page
 * token must never appear in a URL (it would reach logs and proxies), so the page trades its bearer
 * for a ticket that is worth one connection within a minute.
 *
 * Kept in this process's memory. Issue 11 (several processes behind one address) moves them to the
 * database, so a ticket issued by one process can be taken by another, still exactly once.
 */
export class LiveTickets {
  readonly #tickets = new LRUCache<string, { grant: LiveGrant; expiresAt: number }>({ max: MAX_TICKETS });
  readonly #issued = new RateLimiterMemory({ keyPrefix: 'live-tickets', points: TICKETS_PER_USER_PER_MINUTE, duration: 60 });

  constructor(private readonly clock: Clock) {}

  async issue(grant: LiveGrant): Promise<{ ticket: string; expiresAt: number }> {
    try {
      await this.#issued.consume(`${grant.viewer.portal.memberId} ${grant.viewer.userId}`);
    } catch (refusal) {
      if (!(refusal instanceof RateLimiterRes)) throw refusal;
      const retryAfterSeconds = Math.max(1, Math.ceil(refusal.msBeforeNext / 1000));
      throw new LiveTicketRefusal(`Too many live tickets; try again in ${retryAfterSeconds} s`, retryAfterSeconds);
    }
    const ticket = randomBytes(32).toString('base64url');
    // Never past the token: a ticket cannot outlive what it was issued on.
    const expiresAt = Math.min(this.clock.now() + LIVE_TICKET_TTL_MS, grant.viewer.expiresAt);
    this.#tickets.set(ticket, { grant, expiresAt });
    return { ticket, expiresAt };
  }

  /** The grant of a ticket issued here, not used and not expired; it is used up by this call either way. */
  take(ticket: string | undefined): LiveGrant | undefined {
    if (!ticket || !TICKET_SHAPE.test(ticket)) return undefined;
    // Read and removed in one synchronous step: two requests with the same ticket cannot both get it.
    const entry = this.#tickets.get(ticket);
    this.#tickets.delete(ticket);
    if (!entry || this.clock.now() >= entry.expiresAt) return undefined;
    return entry.grant;
  }
}
