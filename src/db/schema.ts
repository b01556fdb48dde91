
import { index, integer, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';

/** One row per Bitrix24 portal (member_id) that installed the app. Secrets are sealed (see secrets.ts). */
export const portals = sqliteTable('portals', {
  memberId: text('member_id').primaryKey(),
  domain: text('domain').notNull(),
  clientEndpoint: text('client_endpoint').notNull(),
  /** active | uninstalled | reauth_required (the refresh token was rejected) */
  status: text('status').notNull(),
  applicationTokenDigest: text('application_token_digest').notNull(),
  accessToken: text('access_token'),
  refreshToken: text('refresh_token'),
  accessExpiresAt: integer('access_expires_at').notNull().default(0),
  /** Bumped on every refresh, so a caller can tell whether the token it failed with is still current. */
  tokenGeneration: integer('token_generation').notNull().default(0),
  installerUserId: integer('installer_user_id'),
  chat2deskToken: text('chat2desk_token'),
  settings: text('settings').notNull().default('{}'),
  installedAt: integer('installed_at').notNull(),
  updatedAt: integer('updated_at').notNull(),
});

/**
 * A robot (or business-process activity) call: the durable job that runs it and the run's outcome.
 * Bitrix24 posts each call once and never retries, so the row is written before the 200 and the
 * (member_id, event_token) key makes a repeated delivery a no-op.
 */
export const jobs = sqliteTable(
  'jobs',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    /** Random, sent to Chat2Desk as external_id so a resend after a crash can be detected. */
    publicId: text('public_id').notNull(),
    memberId: text('member_id').notNull(),
    eventToken: text('event_token').notNull(),
    robotCode: text('robot_code').notNull(),
    documentId: text('document_id').notNull(),
    properties: text('properties').notNull(),
    /** queued | running | reporting | done | cancelled */
    state: text('state').notNull(),
    attempts: integer('attempts').notNull().default(0),
    runAt: integer('run_at').notNull(),
    leaseUntil: integer('lease_until'),
    deadlineAt: integer('deadline_at').notNull(),
    /** Progress that must survive a crash, e.g. that a message was handed to Chat2Desk. */
    checkpoint: text('checkpoint').notNull().default('{}'),
    lastError: text('last_error'),
    /** The values returned to the workflow, status and error included. */
    returnValues: text('return_values'),
    logMessage: text('log_message'),
    reportAttempts: integer('report_attempts').notNull().default(0),
    reportError: text('report_error'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
    finishedAt: integer('finished_at'),
  },
  (table) => [
    uniqueIndex('jobs_member_event_token').on(table.memberId, table.eventToken),
    uniqueIndex('jobs_public_id').on(table.publicId),
    index('jobs_due').on(table.state, table.runAt),
  ],
);

export type PortalRow = typeof portals.$inferSelect;
export type JobRow = typeof jobs.$inferSelect;
