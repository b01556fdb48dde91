import { and, eq, isNull } from 'drizzle-orm';
import type { Db } from './database.js';
import { timelineLogs } from './schema.js';

export interface TimelineLog {
  /** Null while a run holds the claim and has not yet been told the comment's id. */
  commentId: number | null;
  createdAt: number;
  /** When a claimed write ended without a usable answer; null otherwise. */
  unknownSince: number | null;
}

/**
 * The timeline comments the log robot wrote, one per (portal, dialog, document). A run claims the
 * row before it calls crm.timeline.comment.add, which is not idempotent, so a second run (or a
 * second attempt of the same run) finds the first comment instead of writing another.
 */
export class TimelineLogStore {
  constructor(
    private readonly db: Db,
    private readonly now: () => number = Date.now,
  ) {}

  find(memberId: string, dialogId: number, documentKey: string): TimelineLog | undefined {
    return this.db
      .select({ commentId: timelineLogs.commentId, createdAt: timelineLogs.createdAt, unknownSince: timelineLogs.unknownSince })
      .from(timelineLogs)
      .where(this.#key(memberId, dialogId, documentKey))
      .get();
  }

  /** Takes the right to write the comment; false when a row already exists (written, or claimed by another attempt). */
  claim(memberId: string, dialogId: number, documentKey: string): boolean {
    const result = this.db.insert(timelineLogs).values({ memberId, dialogId, documentKey, commentId: null, createdAt: this.now() }).onConflictDoNothing().run();
    return result.changes === 1;
  }

  saveCommentId(memberId: string, dialogId: number, documentKey: string, commentId: number): void {
    this.db
      .update(timelineLogs)
      .set({ commentId })
      .where(this.#key(memberId, dialogId, documentKey))
      .run();
  }

  /** The write's outcome is unknown: the claim stays, so runs already waiting for it do not write a second comment. */
  markUnknown(memberId: string, dialogId: number, documentKey: string): void {
    this.db
      .update(timelineLogs)
      .set({ unknownSince: this.now() })
      .where(and(this.#key(memberId, dialogId, documentKey), isNull(timelineLogs.commentId)))
      .run();
  }

  /** Gives a claim back (the comment was not written, or its fate is unknown and a person decides); a written comment's row stays. */
  release(memberId: string, dialogId: number, documentKey: string): void {
    this.db
      .delete(timelineLogs)
      .where(and(this.#key(memberId, dialogId, documentKey), isNull(timelineLogs.commentId)))
      .run();
  }

  #key(memberId: string, dialogId: number, documentKey: string) {
    return and(eq(timelineLogs.memberId, memberId), eq(timelineLogs.dialogId, dialogId), eq(timelineLogs.documentKey, documentKey));
  }
}
