import { createHash, randomBytes } from 'node:crypto';
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import type { Clock } from '../clock.js';
import type { LiveTicketStore } from '../db/live-tickets.js';
import type { DialogViewer } from '../dialogs/scope.js';

/** A ticket opens one stream within a minute of being issued (issue 9: "a single-use ticket that lives a minute"). */
export const LIVE_TICKET_TTL_MS = 60_000;

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
 * Rows in the database (src/db/live-tickets.ts), so that behind a load balancer the process that
 * issued a ticket need not be the one the stream reaches; taken with `delete … returning`, so a
 * ticket still opens one stream, across every process. Stored as its SHA-256: the ticket itself is
 * the credential. Unused tickets are pruned with the other old rows (src/server.ts maintenance).
 */
export class LiveTickets {
  readonly #issued = new RateLimiterMemory({ keyPrefix: 'live-tickets', points: TICKETS_PER_USER_PER_MINUTE, duration: 60 });

  constructor(
    private readonly store: LiveTicketStore,
    private readonly clock: Clock,
  ) {}

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
    await this.store.put(ticketHash(ticket), JSON.stringify(grant.viewer), expiresAt);
    return { ticket, expiresAt };
  }

  /** The grant of a ticket issued by any process, not used and not expired; it is used up by this call either way. */
  async take(ticket: string | undefined): Promise<LiveGrant | undefined> {
    if (!ticket || !TICKET_SHAPE.test(ticket)) return undefined;
    const row = await this.store.take(ticketHash(ticket));
    if (!row || this.clock.now() >= row.expiresAt) return undefined;
    return { viewer: JSON.parse(row.grant) as DialogViewer };
  }

  pruneExpired(): Promise<number> {
    return this.store.pruneExpired(this.clock.now());
  }
}

function ticketHash(ticket: string): string {
  return createHash('sha256').update(ticket).digest('base64url');
}
