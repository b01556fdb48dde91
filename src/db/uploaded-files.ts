import { and, eq, gt, inArray, lte, sql } from 'drizzle-orm';
import { changes } from './dialect.js';
import type { DatabaseAccess } from './database.js';
import { uploadedFiles } from './schema.js';

/** A stored upload without its bytes: what a dialog action needs to hand it to Chat2Desk. */
export interface UploadedFile {
  id: string;
  secret: string;
  memberId: string;
  userId: number;
  name: string;
  type: string;
  size: number;
  createdAt: number;
  expiresAt: number;
}

export type NewUploadedFile = UploadedFile & { bytes: Buffer };

const columns = {
  id: uploadedFiles.id,
  secret: uploadedFiles.secret,
  memberId: uploadedFiles.memberId,
  userId: uploadedFiles.userId,
  name: uploadedFiles.name,
  type: uploadedFiles.type,
  size: uploadedFiles.size,
  createdAt: uploadedFiles.createdAt,
  expiresAt: uploadedFiles.expiresAt,
};

/** Uploaded files (migration 0010): bytes in the row, found by id (its owner) or by the link's secret (anyone). */
export class UploadedFileStore {
  constructor(private readonly database: DatabaseAccess) {}

  async add(file: NewUploadedFile): Promise<void> {
    await this.database.db.insert(uploadedFiles).values(file);
  }

  /**
   * Stores the file under its id unless that id is stored already, and returns what is stored: a
   * retried job re-hosting the same file keeps one copy and one link.
   */
  async addOnce(file: NewUploadedFile): Promise<UploadedFile> {
    await this.database.db.insert(uploadedFiles).values(file).onConflictDoNothing({ target: uploadedFiles.id });
    const [stored] = await this.database.db.select(columns).from(uploadedFiles).where(eq(uploadedFiles.id, file.id));
    return stored!;
  }

  /** The portal user's own files among `ids` that have not expired at `now`. */
  async ownUnexpired(memberId: string, userId: number, ids: string[], now: number): Promise<UploadedFile[]> {
    if (ids.length === 0) return [];
    return this.database.db
      .select(columns)
      .from(uploadedFiles)
      .where(and(eq(uploadedFiles.memberId, memberId), eq(uploadedFiles.userId, userId), inArray(uploadedFiles.id, ids), gt(uploadedFiles.expiresAt, now)));
  }

  /** Bytes of the user's files whose links still work: what one user keeps stored. */
  async unexpiredBytes(memberId: string, userId: number, now: number): Promise<number> {
    // PostgreSQL's sum of bigints is a numeric, which node-postgres reads as text.
    const [row] = await this.database.db
      .select({ bytes: sql<number>`coalesce(sum(${uploadedFiles.size}), 0)`.mapWith(Number) })
      .from(uploadedFiles)
      .where(and(eq(uploadedFiles.memberId, memberId), eq(uploadedFiles.userId, userId), gt(uploadedFiles.expiresAt, now)));
    return row?.bytes ?? 0;
  }

  /** The file behind a public link, expired or not (an expired one answers 410 until it is pruned). */
  async bySecret(secret: string): Promise<(UploadedFile & { bytes: Buffer }) | undefined> {
    const [file] = await this.database.db
      .select({ ...columns, bytes: uploadedFiles.bytes })
      .from(uploadedFiles)
      .where(eq(uploadedFiles.secret, secret));
    return file;
  }

  /** Deletes every file expired at `now`; the hourly maintenance calls it. */
  async pruneExpired(now: number): Promise<number> {
    return changes(await this.database.db.delete(uploadedFiles).where(lte(uploadedFiles.expiresAt, now)));
  }
}
