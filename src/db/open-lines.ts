import { and, asc, eq, sql } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import type { DatabaseAccess, Db } from './database.js';
import { changes, exec, type Tx } from './dialect.js';
import { type HeldWake, wakeHeldJobs } from './jobs.js';
import { openLines, portals } from './schema.js';

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

  /**
   * Connects a line (last in the order) or changes a connected line's options. `wakes`: held jobs
   * the change may release (messages no line took), made due now in the same transaction, so they
   * are routed again at once and see the line. Returns how many were woken, or 'not_open_channels'
   * (nothing saved) when the portal is not in Open Channels mode (any more).
   */
  /** Whether the portal's stored mode is Open Channels now (read tolerantly, as src/portal-settings.ts does). */
  async inOpenChannelsMode(memberId: string): Promise<boolean> {
    const [row] = await modeQuery(this.database.db, this.database.dialect, memberId);
    return row?.mode === 'open_channels';
  }

  async save(memberId: string, lineId: number, options: unknown, wakes: Array<Omit<HeldWake, 'memberId'>> = []): Promise<number | 'not_open_channels'> {
    const now = this.clock.now();
    const json = JSON.stringify(options);
    const { dialect } = this.database;
    return dialect.transaction(function* (tx) {
      // The mode is checked in the same transaction as the row, with the portal's row locked (on
      // PostgreSQL; SQLite's transaction is alone anyway), as the switch back locks it: a line saved
      // while the portal switches back is either seen by the switch (which refuses to finish while a
      // row exists) or refused here.
      yield* exec(
        tx
          .update(portals)
          .set({ updatedAt: sql`${portals.updatedAt}` })
          .where(eq(portals.memberId, memberId)),
      );
      const [row] = yield* exec(modeQuery(tx, dialect, memberId));
      if (row?.mode !== 'open_channels') return 'not_open_channels';
      yield* exec(
        tx
          .insert(openLines)
          .values({
            memberId,
            lineId,
            position: sql`(select coalesce(max(${openLines.position}), 0) + 1 from ${openLines} where ${openLines.memberId} = ${memberId})`,
            options: json,
            connectedAt: now,
            updatedAt: now,
          })
          .onConflictDoUpdate({ target: [openLines.memberId, openLines.lineId], set: { options: json, updatedAt: now } }),
      );
      let woken = 0;
      for (const wake of wakes) woken += yield* wakeHeldJobs(tx, { ...wake, memberId }, now);
      return woken;
    });
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

/** The portal's stored mode field. */
function modeQuery(db: Db | Tx, dialect: DatabaseAccess['dialect'], memberId: string) {
  return db
    .select({ mode: sql<string | null>`${dialect.jsonText(portals.settings, 'integrationType')}` })
    .from(portals)
    .where(eq(portals.memberId, memberId));
}
