import { eq, lte } from 'drizzle-orm';
import type { DatabaseAccess } from './database.js';
import { changes } from './dialect.js';
import { liveTickets } from './schema.js';

/** Live stream tickets (src/live/tickets.ts), shared by every process on the database. */
export class LiveTicketStore {
  constructor(private readonly database: DatabaseAccess) {}

  async put(ticketHash: string, grant: string, expiresAt: number): Promise<void> {
    await this.database.db.insert(liveTickets).values({ ticketHash, grant, expiresAt });
  }

  /**
   * The ticket's grant and expiry, removed in the same statement: of two requests with the same
   * ticket, in one process or two, only one gets a row back.
   */
  async take(ticketHash: string): Promise<{ grant: string; expiresAt: number } | undefined> {
    const [row] = await this.database.db
      .delete(liveTickets)
      .where(eq(liveTickets.ticketHash, ticketHash))
      .returning({ grant: liveTickets.grant, expiresAt: liveTickets.expiresAt });
    return row;
  }

  /** Tickets never used go once expired. */
  async pruneExpired(now: number): Promise<number> {
    return changes(await this.database.db.delete(liveTickets).where(lte(liveTickets.expiresAt, now)));
  }
}
