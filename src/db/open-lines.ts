import { and, asc, eq, sql } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import { changes } from './dialect.js';
import type { DatabaseAccess } from './database.js';
import { openLines } from './schema.js';

/** One connected Open Channel line; `options` is the stored JSON, read by src/open-channels/lines.ts. */
export interface OpenLineRow {
  lineId: number;
  position: number;
  options: unknown;
  connectedAt: number;
}

/** The Open Channel lines each portal connected to its Chat2Desk account (Open Channels mode, issue 10). */
export class OpenLineStore {
  constructor(
    private readonly database: DatabaseAccess,
    private readonly clock: Clock,
  ) {}

  /** The portal's lines in routing order. */
  async list(memberId: string): Promise<OpenLineRow[]> {
    const rows = await this.database.db
      .select({ lineId: openLines.lineId, position: openLines.position, options: openLines.options, connectedAt: openLines.connectedAt })
      .from(openLines)
      .where(eq(openLines.memberId, memberId))
      .orderBy(asc(openLines.position), asc(openLines.lineId));
    return rows.map((row) => ({ ...row, options: JSON.parse(row.options) as unknown }));
  }

  async get(memberId: string, lineId: number): Promise<OpenLineRow | undefined> {
    return (await this.list(memberId)).find((line) => line.lineId === lineId);
  }

  /** Connects a line (last in the order) or changes a connected line's options; one statement. */
  async save(memberId: string, lineId: number, options: unknown): Promise<void> {
    const now = this.clock.now();
    const json = JSON.stringify(options);
    await this.database.db
      .insert(openLines)
      .values({
        memberId,
        lineId,
        position: sql`(select coalesce(max(${openLines.position}), 0) + 1 from ${openLines} where ${openLines.memberId} = ${memberId})`,
        options: json,
        connectedAt: now,
        updatedAt: now,
      })
      .onConflictDoUpdate({ target: [openLines.memberId, openLines.lineId], set: { options: json, updatedAt: now } });
  }

  /** Disconnects a line (deleted in Bitrix24, or the admin disconnected it). True when it was connected. */
  async remove(memberId: string, lineId: number): Promise<boolean> {
    return changes(await this.database.db.delete(openLines).where(and(eq(openLines.memberId, memberId), eq(openLines.lineId, lineId)))) > 0;
  }

  /** Every line of a portal (its data deleted on uninstall). */
  async removeAll(memberId: string): Promise<void> {
    await this.database.db.delete(openLines).where(eq(openLines.memberId, memberId));
  }
}
