import { sql } from 'drizzle-orm';
import { blob, index, integer, primaryKey, real, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';

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
  /**
   * An ONAPPUNINSTALL the portal has not confirmed yet (it could not be asked): when it arrived and
   * when to ask again. Cleared once the portal answers either way (src/bitrix24/uninstall.ts).
   */
  uninstallRequestedAt: integer('uninstall_requested_at'),
  uninstallCheckAt: integer('uninstall_check_at'),
  /** The pending ONAPPUNINSTALL asked to delete the app's data (`data[CLEAN]=1`): the wipe deletes the portal's jobs, cache and effects too. */
  uninstallClean: integer('uninstall_clean', { mode: 'boolean' }).notNull().default(false),
  /**
   * A token refresh in progress (PostgreSQL, several processes): which process holds the portal's
   * refresh lease and until when (ms). Others wait for `token_generation` to change instead of
   * sending the same refresh token again; a lease whose holder died runs out (src/db/portals.ts).
   */
  refreshOwner: text('refresh_owner'),
  refreshUntil: integer('refresh_until'),
  chat2deskToken: text('chat2desk_token'),
  settings: text('settings').notNull().default('{}'),
  installedAt: integer('installed_at').notNull(),
  updatedAt: integer('updated_at').notNull(),
});

/**
 * A durable job of some kind (src/jobs/kinds.ts): a robot (or business-process activity) call, a
 * re-registration after an update, and whatever kinds come next. Whatever triggered it is stored
 * with it before we answer; `(member_id, dedup_key)` makes a repeated trigger a no-op (robot calls:
 * the event token, since Bitrix24 posts each call once and never retries).
 */
export const jobs = sqliteTable(
  'jobs',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    /** The job kind's name: robot | register_app | … */
    kind: text('kind').notNull(),
    /** Random, sent to Chat2Desk as external_id so a resend after a crash can be detected. */
    publicId: text('public_id').notNull(),
    memberId: text('member_id').notNull(),
    /** Unique per portal while set; a kind that allows one pending job clears it when the job starts. */
    dedupKey: text('dedup_key'),
    /** Jobs of one portal with the same key run one at a time, in id order (bounded hold, src/jobs/dispatcher.ts). */
    orderingKey: text('ordering_key'),
    /** Robot runs only: the call's event token, robot code and workflow document. */
    eventToken: text('event_token'),
    robotCode: text('robot_code'),
    documentId: text('document_id'),
    /** The kind's input as JSON (a robot call's properties), validated when enqueued and when run. */
    input: text('input').notNull(),
    /**
     * confirming (Bitrix24 has not yet confirmed the call, src/jobs/confirmations.ts) | queued |
     * running | reporting | done | cancelled
     */
    state: text('state').notNull(),
    attempts: integer('attempts').notNull().default(0),
    runAt: integer('run_at').notNull(),
    leaseUntil: integer('lease_until'),
    /** When the first attempt started: how long a job at the head of its ordering key has held it. */
    startedAt: integer('started_at'),
    deadlineAt: integer('deadline_at').notNull(),
    /** Failed attempts to have the portal confirm the call. */
    confirmAttempts: integer('confirm_attempts').notNull().default(0),
    /** When the portal confirmed the call (bizproc.activity.log accepted its event token). */
    confirmedAt: integer('confirmed_at'),
    lastError: text('last_error'),
    /** The values returned to the workflow, status and error included (other kinds: their result). */
    returnValues: text('return_values'),
    logMessage: text('log_message'),
    reportAttempts: integer('report_attempts').notNull().default(0),
    reportError: text('report_error'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
    finishedAt: integer('finished_at'),
    /** The client's phone as international digits, for the event log's phone filter (src/event-log.ts `searchablePhone`). */
    phone: text('phone'),
  },
  (table) => [
    uniqueIndex('jobs_member_dedup_key').on(table.memberId, table.dedupKey).where(sql`${table.dedupKey} IS NOT NULL`),
    uniqueIndex('jobs_public_id').on(table.publicId),
    index('jobs_due').on(table.state, table.runAt),
    index('jobs_member_state').on(table.memberId, table.state),
    index('jobs_ordering').on(table.memberId, table.orderingKey, table.id).where(sql`${table.orderingKey} IS NOT NULL`),
    // The event log: a portal's jobs newest first, paged by (created_at, id), or those of one phone.
    index('jobs_member_created').on(table.memberId, table.createdAt, table.id),
    index('jobs_member_phone').on(table.memberId, table.phone, table.createdAt, table.id).where(sql`${table.phone} IS NOT NULL`),
    // `/healthz`: the runs finished in the last minutes, by every process (JobStore.workShare).
    index('jobs_finished').on(table.finishedAt).where(sql`${table.finishedAt} IS NOT NULL`),
  ],
);

export type PortalRow = typeof portals.$inferSelect;
export type JobRow = typeof jobs.$inferSelect;

/**
 * The Chat2Desk cache, per account (a hash of API host and token, so portals sharing an account
 * share it). A row is served while it is younger than the portal's TTL and than the account's
 * `valid_from`; webhook deliveries delete the rows they make stale.
 */
export const c2dAccounts = sqliteTable('c2d_accounts', {
  accountKey: text('account_key').primaryKey(),
  /** Rows fetched before this instant are stale (set by reconciliation after a webhook gap). */
  validFrom: integer('valid_from').notNull().default(0),
  lastSyncAt: integer('last_sync_at'),
});

export const c2dClients = sqliteTable(
  'c2d_clients',
  {
    accountKey: text('account_key').notNull(),
    id: integer('id').notNull(),
    phone: text('phone'),
    clientPhone: text('client_phone'),
    name: text('name'),
    assignedName: text('assigned_name'),
    tags: text('tags').notNull().default('[]'),
    fetchedAt: integer('fetched_at').notNull(),
  },
  (table) => [primaryKey({ columns: [table.accountKey, table.id] })],
);

/** Which clients a phone number leads to; an empty list is a cached "no such client". */
export const c2dPhoneLookups = sqliteTable(
  'c2d_phone_lookups',
  {
    accountKey: text('account_key').notNull(),
    phone: text('phone').notNull(),
    clientIds: text('client_ids').notNull(),
    fetchedAt: integer('fetched_at').notNull(),
  },
  (table) => [primaryKey({ columns: [table.accountKey, table.phone] })],
);

export const c2dDialogs = sqliteTable(
  'c2d_dialogs',
  {
    accountKey: text('account_key').notNull(),
    id: integer('id').notNull(),
    clientId: integer('client_id'),
    state: text('state').notNull(),
    operatorId: integer('operator_id'),
    channelId: integer('channel_id'),
    transport: text('transport'),
    beginAt: text('begin_at'),
    endAt: text('end_at'),
    lastMessageText: text('last_message_text'),
    lastMessageAt: text('last_message_at'),
    lastMessageType: text('last_message_type'),
    lastRequestId: integer('last_request_id'),
    messagesCount: integer('messages_count'),
    fetchedAt: integer('fetched_at').notNull(),
  },
  (table) => [primaryKey({ columns: [table.accountKey, table.id] }), index('c2d_dialogs_client').on(table.accountKey, table.clientId)],
);

/** Marks that every dialog of a client is in c2d_dialogs as of fetched_at. */
export const c2dClientDialogs = sqliteTable(
  'c2d_client_dialogs',
  {
    accountKey: text('account_key').notNull(),
    clientId: integer('client_id').notNull(),
    fetchedAt: integer('fetched_at').notNull(),
  },
  (table) => [primaryKey({ columns: [table.accountKey, table.clientId] })],
);

/** Whole lists that change rarely: operators, channels, tags. */
export const c2dLists = sqliteTable(
  'c2d_lists',
  {
    accountKey: text('account_key').notNull(),
    kind: text('kind').notNull(),
    items: text('items').notNull(),
    fetchedAt: integer('fetched_at').notNull(),
  },
  (table) => [primaryKey({ columns: [table.accountKey, table.kind] })],
);

/** The webhook each portal registered in Chat2Desk; the URL carries an unguessable secret. */
export const c2dWebhooks = sqliteTable(
  'c2d_webhooks',
  {
    memberId: text('member_id').primaryKey(),
    accountKey: text('account_key').notNull(),
    webhookId: integer('webhook_id'),
    secretDigest: text('secret_digest').notNull(),
    /** Sealed: the URL must be re-sent when the webhook is re-created. */
    secret: text('secret').notNull(),
    status: text('status').notNull(),
    lastDeliveryAt: integer('last_delivery_at'),
    lastCheckAt: integer('last_check_at'),
    createdAt: integer('created_at').notNull(),
  },
  (table) => [uniqueIndex('c2d_webhooks_secret').on(table.secretDigest)],
);

/** Deliveries, stored before the 2xx; the key removes Chat2Desk's retries (10 s, 5 min, 2 h). */
export const webhookDeliveries = sqliteTable(
  'webhook_deliveries',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    memberId: text('member_id').notNull(),
    accountKey: text('account_key').notNull(),
    dedupKey: text('dedup_key').notNull(),
    hookType: text('hook_type').notNull(),
    body: text('body').notNull(),
    receivedAt: integer('received_at').notNull(),
  },
  (table) => [uniqueIndex('webhook_deliveries_key').on(table.memberId, table.dedupKey), index('webhook_deliveries_account_time').on(table.accountKey, table.receivedAt)],
);

/**
 * The exactly-once ledger (src/jobs/ledger.ts): one row per effect that must not be repeated
 * blindly (a message sent, a client created, a timeline comment), keyed per portal. A run claims the
 * key before it acts and records the result after; a claim whose outcome is unknown is settled by
 * looking for the effect before anyone acts again.
 */
export const effects = sqliteTable(
  'effects',
  {
    memberId: text('member_id').notNull(),
    effectKey: text('effect_key').notNull(),
    /** claimed (an attempt is acting, or its outcome is unknown) | done (result recorded) */
    state: text('state').notNull(),
    /** The run (job public id) holding the claim; null when nobody does (carried over by a migration). */
    owner: text('owner'),
    /** Until then the owner is acting; after it (0: at once) the claim is in doubt and is settled by whoever comes next. */
    leaseUntil: integer('lease_until').notNull().default(0),
    /** When the first attempt to act began: settling looks back to it. */
    attemptAt: integer('attempt_at').notNull(),
    /** What settling looks for (JSON), written with the claim. */
    intent: text('intent').notNull().default('{}'),
    /** The recorded result (JSON), once done. */
    result: text('result'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
  },
  (table) => [primaryKey({ columns: [table.memberId, table.effectKey] })],
);

/**
 * A portal's Bitrix24 REST budget shared by every process on PostgreSQL: the leaky bucket's level
 * and when it was last drained (ms, the database's clock), taken with one conditional update per
 * call (src/db/upstream-budgets.ts). Unused on SQLite, where one process keeps it in memory.
 */
export const restBudgets = sqliteTable('rest_budgets', {
  memberId: text('member_id').primaryKey(),
  level: real('level').notNull().default(0),
  drainedAt: real('drained_at').notNull().default(0),
});

/**
 * rate-limiter-flexible's table (RateLimiterPostgres, its own columns and upserts): the caps on
 * unverified checks and installs shared by every process on PostgreSQL (src/db/rate-limiters.ts).
 * Unused on SQLite, where one process keeps them in memory.
 */
export const rateLimits = sqliteTable('rate_limits', {
  key: text('key').primaryKey(),
  points: integer('points').notNull().default(0),
  expire: integer('expire'),
});

/** The request rate learned per Chat2Desk account (src/chat2desk/adaptive-rate.ts); written every few seconds at most. */
export const c2dRates = sqliteTable('c2d_rates', {
  accountKey: text('account_key').primaryKey(),
  perMinute: real('per_minute').notNull(),
  /** Chat2Desk's limit as estimated at its last refusal for load; null while it never refused. */
  limitPerMinute: real('limit_per_minute'),
  /**
   * The account's shared pace on PostgreSQL (several processes, src/db/upstream-budgets.ts): the
   * bucket's level and when it was last drained (ms, the database's clock), no request before
   * `paused_until`, the last cut (`cut_at`), and the answers accepted in the current and the
   * previous second (`accepted_second`) that estimate Chat2Desk's limit at a refusal. Unused on SQLite.
   */
  level: real('level').notNull().default(0),
  drainedAt: real('drained_at').notNull().default(0),
  pausedUntil: real('paused_until').notNull().default(0),
  cutAt: real('cut_at').notNull().default(0),
  acceptedSecond: integer('accepted_second').notNull().default(0),
  acceptedNow: integer('accepted_now').notNull().default(0),
  acceptedBefore: integer('accepted_before').notNull().default(0),
  updatedAt: integer('updated_at').notNull(),
});

/**
 * Live stream tickets (src/live/tickets.ts): each opens one stream within a minute, on whichever
 * process the page's connection reaches, and is taken once (`delete … returning`). Kept as the
 * ticket's SHA-256, so a reader of the database cannot open a stream with it.
 */
export const liveTickets = sqliteTable(
  'live_tickets',
  {
    ticketHash: text('ticket_hash').primaryKey(),
    /** The viewer it was issued to, as JSON (src/dialogs/scope.ts DialogViewer). */
    grant: text('grant').notNull(),
    expiresAt: integer('expires_at').notNull(),
  },
  (table) => [index('live_tickets_expires').on(table.expiresAt)],
);

/** The CRM record of a Chat2Desk client, per portal: found again without a phone (src/episodes/). */
export const episodeRecords = sqliteTable(
  'episode_records',
  {
    memberId: text('member_id').notNull(),
    clientId: integer('client_id').notNull(),
    /** lead | contact | company | deal */
    entityType: text('entity_type').notNull(),
    entityId: integer('entity_id').notNull(),
    updatedAt: integer('updated_at').notNull(),
  },
  (table) => [primaryKey({ columns: [table.memberId, table.clientId] })],
);

/**
 * A file uploaded for a dialog action (src/dialogs/files.ts): owned by one user of one portal,
 * served at /files/<secret>/<name> until `expiresAt`, then pruned (migration 0010).
 */
export const uploadedFiles = sqliteTable(
  'uploaded_files',
  {
    /** The id the page sends back as a fileId. */
    id: text('id').primaryKey(),
    /** 32 random bytes, base64url: the unguessable part of the public link. */
    secret: text('secret').notNull(),
    memberId: text('member_id').notNull(),
    userId: integer('user_id').notNull(),
    /** Sanitised: no path separators or control characters. */
    name: text('name').notNull(),
    /** Sniffed from the content, never taken from the upload. */
    type: text('type').notNull(),
    size: integer('size').notNull(),
    bytes: blob('bytes', { mode: 'buffer' }).notNull(),
    createdAt: integer('created_at').notNull(),
    expiresAt: integer('expires_at').notNull(),
  },
  (table) => [uniqueIndex('uploaded_files_secret').on(table.secret), index('uploaded_files_expires').on(table.expiresAt)],
);

/**
 * Each Chat2Desk client's latest Open Channel chat in Bitrix24, per portal (Open Channels mode,
 * src/db/open-channel-chats.ts): recorded when Bitrix24 takes one of the client's messages and names
 * the chat (`session.CHAT_ID`), so the Chat workspace's dialog view can open it in the messenger.
 */
export const openChannelChats = sqliteTable(
  'open_channel_chats',
  {
    memberId: text('member_id').notNull(),
    clientId: integer('client_id').notNull(),
    /** The line and our connector's chat id (per client or per request: src/open-channels/identity.ts). */
    lineId: integer('line_id').notNull(),
    chatId: text('chat_id').notNull(),
    /** Bitrix24's chat: the messenger opens it as `chat<id>`. */
    imChatId: integer('im_chat_id').notNull(),
    /** When the client's message was sent (ms): the row is the chat of the latest one. */
    sentAt: integer('sent_at').notNull(),
  },
  (table) => [primaryKey({ columns: [table.memberId, table.clientId] })],
);

/** Open Channel lines connected to the portal's Chat2Desk account (issue 10; src/db/open-lines.ts). */
export const openLines = sqliteTable(
  'open_lines',
  {
    memberId: text('member_id').notNull(),
    /** The Open Channel line (imopenlines config id). */
    lineId: integer('line_id').notNull(),
    /** Routing order: where rules overlap, the lower position wins. */
    position: integer('position').notNull(),
    /** The line's options as JSON (src/open-channels/lines.ts validates them). */
    options: text('options').notNull(),
    connectedAt: integer('connected_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
  },
  (table) => [primaryKey({ columns: [table.memberId, table.lineId] })],
);
