import { and, eq } from 'drizzle-orm';
import type { DatabaseAccess } from './database.js';
import { jobs } from './schema.js';

/** A dialog action's job as the page polls it: its state, what it was asked to do and how it ended. */
export interface DialogActionRow {
  publicId: string;
  kind: string;
  state: string;
  input: string;
  returnValues: string | null;
  lastError: string | null;
}

/** Dialog actions are jobs (kind `dialog_action`) found by their dedup key `action:<userId>:<key>`. */
export class DialogActionStore {
  constructor(private readonly database: DatabaseAccess) {}

  async byDedupKey(memberId: string, dedupKey: string): Promise<DialogActionRow | undefined> {
    const [row] = await this.database.db
      .select({ publicId: jobs.publicId, kind: jobs.kind, state: jobs.state, input: jobs.input, returnValues: jobs.returnValues, lastError: jobs.lastError })
      .from(jobs)
      .where(and(eq(jobs.memberId, memberId), eq(jobs.dedupKey, dedupKey)));
    return row;
  }
}
