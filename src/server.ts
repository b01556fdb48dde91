import { serve, type ServerType } from '@hono/node-server';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { RobotRegistry } from './activities/index.js';
import { createApp } from './app.js';
import { InstallService } from './bitrix24/install.js';
import { AppUpdates } from './bitrix24/app-updates.js';
import { onAppUpdate } from './bitrix24/events/app-update.js';
import { onAppUninstall } from './bitrix24/events/app-uninstall.js';
import { EventHandlers } from './bitrix24/events/index.js';
import { onConnectorLineDelete, onConnectorStatusDelete } from './bitrix24/events/connector-lines.js';
import { connectorMessageHandlers } from './bitrix24/events/connector-messages.js';
import { MessageConfirmations } from './open-channels/confirmation.js';
import { OpenChannelsConnector } from './open-channels/connector.js';
import { ConnectorPage } from './open-channels/settings-page.js';
import { OpenChannelChatStore } from './db/open-channel-chats.js';
import { OpenLineStore } from './db/open-lines.js';
import { InstallerTokens } from './bitrix24/installer-tokens.js';
import { OAuthServer } from './bitrix24/oauth.js';
import { AppRegistration } from './bitrix24/registration.js';
import { Bitrix24Rest } from './bitrix24/rest-client.js';
import { Uninstalls } from './bitrix24/uninstall.js';
import { BitrixUsers } from './bitrix24/users.js';
import { Chat2DeskAccess } from './chat2desk/access.js';
import { Chat2DeskAccounts } from './chat2desk/client.js';
import { GapPolls, gapPollKind } from './chat2desk/closed-episodes.js';
import { DeliveryHandlers, type DeliveryHandler } from './chat2desk/delivery-handlers.js';
import type { DialogDirectory } from './chat2desk/directory.js';
import { Chat2DeskWebhooks } from './chat2desk/webhooks.js';
import { CacheStore } from './db/cache.js';
import { Chat2DeskRateStore } from './db/chat2desk-rates.js';
import { EffectStore } from './db/effects.js';
import { EventLogStore } from './db/event-log.js';
import { EpisodeRecordStore } from './db/episode-records.js';
import { closeEpisodeHandlers } from './episodes/delivery.js';
import { SharedBatches } from './episodes/shared-batches.js';
import { closeEpisodeKind } from './jobs/kinds/close-episode.js';
import { automationHandlers } from './triggers/delivery.js';
import { automationKinds } from './triggers/kinds.js';
import { WebhookStore } from './db/webhooks.js';
import { BackgroundTasks } from './background.js';
import { ClientAddresses } from './client-address.js';
import type { Config } from './config.js';
import { systemClock, type Clock } from './clock.js';
import { type Broadcast, localBroadcast, postgresBroadcast } from './db/broadcast.js';
import { warnOfClockSkew } from './db/clock-skew.js';
import { openDatabase, openPostgres, pingDatabase, type DatabaseHandle } from './db/database.js';
import { JobStore, type NewJob } from './db/jobs.js';
import { PortalStore } from './db/portals.js';
import { memoryLimiters, postgresLimiters, pruneExpiredLimits } from './db/rate-limiters.js';
import { Chat2DeskPaceStore, RestBudgetStore } from './db/upstream-budgets.js';
import { JobKinds, type JobKind } from './jobs/kinds.js';
import { REGISTER_APP_KIND, registerAppKind } from './jobs/kinds/register-app.js';
import { robotKind } from './jobs/kinds/robot.js';
import { Pipeline } from './jobs/pipeline.js';
import { RobotCalls } from './jobs/robot-calls.js';
import type { Worker } from './jobs/worker.js';
import { outsideFetcher } from './outside-fetch.js';
import { viaFetch } from './http-request.js';
import type { Logger } from './log.js';
import { AppPageService } from './pages/app-page.js';
import { PageAuth } from './pages/page-auth.js';
import { DialogMeta } from './dialogs/dialog-meta.js';
import { DialogReads } from './dialogs/dialog-reads.js';
import { RecordPhones } from './dialogs/record-phones.js';
import { TabAuth } from './dialogs/tab-auth.js';
import { TabTokens } from './dialogs/tab-token.js';
import { dialogViewer } from './dialogs/viewer.js';
import { PageTokens } from './pages/page-token.js';
import { SecretBox, resolveAppSecret } from './secrets.js';
import { DEFAULT_EVENT_LOG_RETENTION_DAYS } from './portal-settings.js';
import { SettingsService } from './settings-service.js';
import { EventLog } from './event-log.js';
import { PortalLanguages } from './notifications/portal-language.js';
import { WORKSPACE_DEPARTMENTS_TTL_MS, WorkspaceAccess, WorkspaceDialogs } from './dialogs/workspace.js';
import { LiveHub } from './live/hub.js';
import { type LiveTimers, systemTimers } from './live/stream.js';
import { LiveTickets } from './live/tickets.js';
import { LiveTicketStore } from './db/live-tickets.js';
import { DialogActions } from './dialogs/actions.js';
import { DialogFiles } from './dialogs/files.js';
import { sameOriginWrites } from './dialogs/viewer.js';
import { DialogActionStore } from './db/dialog-actions.js';
import { UploadedFileStore } from './db/uploaded-files.js';
import { dialogActionKind } from './jobs/kinds/dialog-action.js';
import { olInboundKind } from './jobs/kinds/ol-inbound.js';
import { InboundSends } from './open-channels/inbound-sends.js';
import { olOutboundKind } from './jobs/kinds/ol-outbound.js';
import { openChannelInboundHandlers } from './open-channels/inbound.js';
import { OpenLines } from './open-channels/lines.js';

/**
 * A finished run's own effects (src/db/effects.ts) matter only while it may still be retried; they
 * are kept the event log's default time, whatever a portal keeps its log for.
 */
const RUN_EFFECT_RETENTION_MS = DEFAULT_EVENT_LOG_RETENTION_DAYS * 24 * 3600_000;

/** Runs `prune` now and every hour; returns the stop function, which waits for a run in progress. */
function startMaintenance(prune: () => Promise<void>, log: Logger): () => Promise<void> {
  let running: Promise<void> | undefined;
  const run = () => {
    running ??= prune()
      .catch((error: unknown) => log.warn({ err: error instanceof Error ? error.message : String(error) }, 'maintenance failed'))
      .finally(() => {
        running = undefined;
      });
  };
  run();
  const timer = setInterval(run, 3600_000);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await running;
  };
}

export interface RunningServer {
  url: string;
  port: number;
  database: DatabaseHandle;
  /** What this process tells the other processes sharing the database (src/db/broadcast.ts). */
  broadcast: Broadcast;
  worker: Worker;
  pipeline: Pipeline;
  rest: Bitrix24Rest;
  portals: PortalStore;
  jobs: JobStore;
  chat2deskWebhooks: Chat2DeskWebhooks;
  /** Resolves when no background task (cache fill) is running and no re-registration is due or running. */
  idle(): Promise<void>;
  /** The portal's Chat2Desk directory (cache), for tests and the benchmark. */
  directoryOf(memberId: string): Promise<DialogDirectory | undefined>;
  close(): Promise<void>;
}

export interface ServerOptions {
  /** Hostname to listen on; loopback by default in tests, all interfaces in production. */
  hostname?: string;
  fetch?: typeof fetch;
  reportLingerMs?: number;
  /** Where every time-based decision reads the time; tests move it forward instead of sleeping. */
  clock?: Clock;
  /** Job kinds beyond the app's own (a test proves a kind of its own runs through the same pipeline). */
  extraKinds?: JobKind[];
  /** What Chat2Desk deliveries start (src/chat2desk/delivery-handlers.ts); a test registers its own. */
  deliveryHandlers?: DeliveryHandler[];
  /** The robots; a test may pass a registry with a robot of its own. */
  robots?: RobotRegistry;
  /** How long a failing job at the head of an ordering key holds the key (src/db/jobs.ts). */
  orderingHoldMs?: number;
  /** How the Bitrix24 and Chat2Desk clients wait before retrying a transient failure; a test passes one that does not wait. */
  retrySleep?: (ms: number) => Promise<void>;
  /** How long a dialog's incoming messages are gathered into one notification (src/triggers/delivery.ts, default 30 s). */
  notifyDelayMs?: number;
  /** How live streams wait between pings (src/live/stream.ts); a test fires them itself. */
  liveTimers?: LiveTimers;
}

/** Builds every service from the config, starts the workers and the HTTP server. */
export async function startServer(config: Config, log: Logger, options: ServerOptions = {}): Promise<RunningServer> {
  const clock = options.clock ?? systemClock;
  // On PostgreSQL several server processes share the database (docs/multi-process.md).
  const database = config.postgresUrl
    ? await openPostgres(config.postgresUrl, {
        onConnectionError: (error) => log.warn({ err: error.message }, 'a PostgreSQL connection was lost; the next query opens another'),
      })
    : openDatabase(config.databaseFile);
  // Job leases compare the processes' own clocks: a clock far from the others' is worth a warning.
  if (database.kind === 'postgres') await warnOfClockSkew(database.pool, () => clock.now(), log);
  // config.ts refuses PostgreSQL without APP_SECRET: there is no file beside the database to keep one in.
  const appSecret = database.kind === 'postgres' ? config.appSecret! : resolveAppSecret(config.appSecret, config.databaseFile);
  const secrets = new SecretBox(appSecret);
  // What this process tells the others sharing the database (src/db/broadcast.ts).
  const broadcast = database.kind === 'postgres' ? await postgresBroadcast(config.postgresUrl!, database.pool, log) : localBroadcast(log);
  const portals = new PortalStore(database, secrets, clock, broadcast);
  // Caps and upstream budgets: in this process's memory on SQLite (one process per file), in the
  // database on PostgreSQL, so that they hold across every process (docs/multi-process.md).
  const limiters = database.kind === 'postgres' ? postgresLimiters(database.pool) : memoryLimiters();
  const jobs = new JobStore(database, clock, { orderingHoldMs: options.orderingHoldMs });
  const robots = options.robots ?? new RobotRegistry();
  // Unset: each client's own transport (node:http for the Bitrix24 REST and Chat2Desk clients, fetch for OAuth).
  const fetchImpl = options.fetch;
  const send = fetchImpl && viaFetch(fetchImpl);
  const oauth = new OAuthServer(config.bitrix24.oauthUrl, config.bitrix24.clientId, config.bitrix24.clientSecret, clock, fetchImpl);
  const rest = new Bitrix24Rest({
    portals,
    oauth,
    log,
    clock,
    ratePerSecond: config.bitrix24.ratePerSecond,
    burst: config.bitrix24.rateBurst,
    fetch: send,
    sleep: options.retrySleep,
    limiters,
    shared: database.kind === 'postgres' ? { budgets: new RestBudgetStore(database) } : undefined,
  });
  const accounts = new Chat2DeskAccounts(
    config.chat2desk,
    new Chat2DeskRateStore(database, clock),
    send,
    options.retrySleep,
    database.kind === 'postgres' ? new Chat2DeskPaceStore(database, clock) : undefined,
  );
  const cache = new CacheStore(database);
  const webhookStore = new WebhookStore(database, secrets, clock);
  const chat2desk = new Chat2DeskAccess({ portals, accounts, cache, defaultApiUrl: config.chat2desk.defaultApiUrl, allowedApiUrls: config.chat2desk.allowedApiUrls, log, clock });
  const background = new BackgroundTasks(log);
  const registration = new AppRegistration({
    rest,
    publicUrl: config.publicUrl,
    activities: robots.all,
    log,
    channelsOf: async (portal) => {
      const connection = await chat2desk.connect(portal);
      return connection.usable ? connection.directory.api.channels() : [];
    },
  });
  const effects = new EffectStore(database, clock);
  const users = new BitrixUsers(rest, clock);
  const episodeRecords = new EpisodeRecordStore(database, clock);
  // One set of shared batches: every job that reads a client's CRM record joins the same per-portal batches.
  // Partial batches go no faster than the portal's steady rate: a flood does not spend its burst on them.
  const batches = new SharedBatches(rest, { partialEveryMs: 1000 / config.bitrix24.ratePerSecond });
  // One cache of the portals' languages for everything we write into a portal (comments, notifications).
  const languages = new PortalLanguages(rest, clock);
  const files = new DialogFiles({
    store: new UploadedFileStore(database),
    clock,
    publicUrl: config.publicUrl,
    linkHours: config.files.linkHours,
    maxBytes: config.files.uploadMaxBytes,
  });
  // Open tabs and the workspace hear of Chat2Desk deliveries (and of Open Channel chats ol_inbound
  // learns), whichever process received them.
  const liveHub = new LiveHub({
    broadcast,
    portalOf: (memberId) => portals.get(memberId),
    directoryOf: (portal) => chat2desk.directoryOf(portal),
    limits: config.live,
    log,
  });
  // Each client's latest Open Channel chat: written by ol_inbound, read by one dialog's answer.
  const openChannelChats = new OpenChannelChatStore(database);
  // The Chat2Desk operator of a Bitrix24 user (operatorMap, then e-mail) and the dialog read API.
  const dialogReads = new DialogReads({ chat2desk, users, clock, log, openChannelChats });
  const kinds = new JobKinds([
    robotKind({ jobs, portals, rest, users, effects, clock, chat2desk, languages, robots }),
    closeEpisodeKind({ jobs, portals, rest, users, effects, clock, chat2desk, languages, episodeRecords, batches }),
    registerAppKind({ portals, registration, clock }),
    gapPollKind({
      portals,
      apiOf: async (portal) => (await chat2desk.directoryOf(portal))?.api,
      // The pipeline is built from these kinds; the poll's follow-up jobs are built by it when it runs.
      job: (kind, memberId, input, jobOptions): NewJob => pipeline.job(kind, memberId, input, jobOptions),
      clock,
    }),
    ...automationKinds({ jobs, portals, rest, users, effects, clock, chat2desk, languages, episodeRecords, batches }),
    dialogActionKind({ jobs, portals, rest, users, effects, clock, chat2desk, languages, files }),
    olInboundKind({
      ...{ jobs, portals, rest, users, effects, clock, chat2desk, languages, files },
      lines: new OpenLines({ store: new OpenLineStore(database, clock) }),
      // Attachment links come from outside (Chat2Desk, a messenger, or whoever called the webhook's API):
      // never into our own network, at most UPLOAD_MAX_BYTES.
      fetchAttachment: outsideFetcher({ maxBytes: config.files.uploadMaxBytes, allowHosts: config.outsideFetchAllowHosts }),
      holdRecheckMs: config.openChannels.holdRecheckSeconds * 1000,
      sends: new InboundSends(rest),
      concurrency: config.openChannels.inboundConcurrency,
      chats: openChannelChats,
      // A client's Open Channel chat became known or changed: open dialog views read it again.
      chatChanged: (memberId, clientId) => liveHub.changed(memberId, { event: { dialogId: null, clientId, what: 'open_channel' } }),
    }),
    olOutboundKind({
      jobs,
      portals,
      rest,
      users,
      effects,
      clock,
      chat2desk,
      languages,
      files,
      operators: dialogReads,
      lines: new OpenLineStore(database, clock),
      maxFileBytes: config.files.uploadMaxBytes,
      secrets,
      confirmations: new MessageConfirmations({ rest, now: () => clock.now() }),
    }),
    ...(options.extraKinds ?? []),
  ]);
  const pipeline = new Pipeline({
    jobs,
    kinds,
    robots,
    rest,
    clock,
    portalConcurrency: config.portalConcurrency,
    log,
    reportLingerMs: options.reportLingerMs,
    // Only a SQLite file is held by one process: there, every running job at start was this process's.
    exclusiveDatabase: database.kind === 'sqlite',
    leaseMs: config.jobLeaseMs,
    // Wakes the other processes' workers when a job may run (a SQLite broadcast reaches nobody else).
    broadcast: database.kind === 'postgres' ? broadcast : undefined,
  });
  const liveTickets = new LiveTickets(new LiveTicketStore(database), clock, limiters);
  const gapPolls = new GapPolls({ enqueue: (kind, memberId, input, jobOptions) => pipeline.enqueue(kind, memberId, input, jobOptions), clock, log });
  const chat2deskWebhooks = new Chat2DeskWebhooks({
    webhooks: webhookStore,
    cache,
    portals,
    publicUrl: config.publicUrl,
    directoryFor: (portal) => chat2desk.directoryOf(portal),
    deliveryHandlers: new DeliveryHandlers(
      [...closeEpisodeHandlers(clock), ...automationHandlers(clock, options.notifyDelayMs), ...openChannelInboundHandlers(clock), ...(options.deliveryHandlers ?? [])],
      (kind, memberId, input, jobOptions) => pipeline.job(kind, memberId, input, jobOptions),
    ),
    jobsStored: (job) => pipeline.jobsStored(job),
    jobsWoken: () => pipeline.jobsWoken(),
    gapNoticed: (portal, lastDeliveryAt) => gapPolls.gapNoticed(portal, lastDeliveryAt),
    published: (memberId, delivery) => liveHub.published(memberId, delivery),
    clock,
    log,
  });
  const uninstalls = new Uninstalls({
    portals,
    jobs,
    rest,
    chat2deskWebhooks,
    accountKeyOf: async (portal) => (await chat2desk.directoryOf(portal))?.accountKey,
    background,
    log,
    clock,
  });
  const installerTokens = new InstallerTokens({ oauth, portals, log, clock });
  const appUpdates = new AppUpdates({ jobs, pipeline, installerTokens, background, clock });
  // Open Channels mode (issue 10): the lines connected to our connector and the connector itself.
  const openLineStore = new OpenLineStore(database, clock);
  const connector = new OpenChannelsConnector({
    rest,
    store: openLineStore,
    publicUrl: config.publicUrl,
    defaultApiUrl: config.chat2desk.defaultApiUrl,
    jobsWoken: () => pipeline.jobsWoken(),
    log,
  });
  const settings = new SettingsService({
    portals,
    rest,
    accounts,
    registration,
    connector,
    secrets,
    defaultApiUrl: config.chat2desk.defaultApiUrl,
    allowedApiUrls: config.chat2desk.allowedApiUrls,
    chat2deskWebhooks,
    directoryFor: (portal) => chat2desk.directoryOf(portal),
    background,
    log,
    clock,
    oauth,
  });
  const pageTokens = new PageTokens(appSecret, clock);
  const pageAuth = new PageAuth({ portals, settings, tokens: pageTokens, clock, limiters });
  const tabTokens = new TabTokens(appSecret, clock);
  // The Chat workspace: who sees which dialogs (departments asked with the app's token, kept briefly).
  const workspaceScopes = new WorkspaceAccess({ users: new BitrixUsers(rest, clock, { ttlMs: WORKSPACE_DEPARTMENTS_TTL_MS }), operators: dialogReads });
  const app = createApp({
    tabAuth: new TabAuth({ portals, tokens: tabTokens, recordPhones: new RecordPhones({ rest, oauth, defaultApiUrl: config.chat2desk.defaultApiUrl, clock }), limiters }),
    dialogReads,
    dialogMeta: new DialogMeta({ chat2desk }),
    dialogViewer: dialogViewer({ pageAuth, tabTokens, workspace: workspaceScopes, operators: dialogReads, portals }),
    workspaceDialogs: new WorkspaceDialogs({ chat2desk, dialogReads }),
    log,
    maxBodyBytes: config.maxBodyBytes,
    uploadMaxBytes: config.files.uploadMaxBytes,
    portals,
    jobs,
    registration,
    install: new InstallService({ oauth, rest, portals, registration, log, clock, attemptsPerMinute: config.installAttemptsPerMinute, limiters }),
    installerTokens,
    events: new EventHandlers([
      onAppUninstall(uninstalls),
      onAppUpdate(appUpdates),
      onConnectorLineDelete({ store: openLineStore, connector, rest }),
      onConnectorStatusDelete({ store: openLineStore, connector, rest }),
      ...connectorMessageHandlers({ pipeline, lines: openLineStore, secrets, clock, log }),
    ]),
    connectorPage: new ConnectorPage({ connector, store: openLineStore, directoryFor: (portal) => chat2desk.directoryOf(portal) }),
    robotCalls: new RobotCalls({
      pipeline,
      robots,
      clock,
      robotDeadlineSeconds: config.robotDeadlineSeconds,
      maxUnconfirmedPerPortal: config.maxUnconfirmedCallsPerPortal,
      log,
    }),
    settings,
    pageAuth,
    sameOriginWrites: sameOriginWrites([new URL(config.publicUrl).origin]),
    files,
    dialogActions: new DialogActions({ pipeline, store: new DialogActionStore(database), chat2desk, files, clock }),
    appPage: new AppPageService({
      chat2desk,
      jobs,
      clock,
      webhooks: webhookStore,
      chat2deskWebhooks,
      registration,
      settings,
      robots: robots.all,
      log,
      workspace: workspaceScopes,
      operators: dialogReads,
    }),
    frameAncestors: config.frameAncestors,
    eventLog: new EventLog({ store: new EventLogStore(database), robots, pipeline, defaultApiUrl: config.chat2desk.defaultApiUrl, clock }),
    background,
    chat2deskWebhooks,
    live: { tickets: liveTickets, hub: liveHub, portals, clock, timers: options.liveTimers ?? systemTimers },
    clientAddresses: new ClientAddresses(config.trustedProxies),
    databaseUp: () => pingDatabase(database),
    databaseKind: database.kind,
    process: { host: hostname(), pid: process.pid, instance: randomUUID().slice(0, 8) },
    workersRunning: () => pipeline.running,
  });
  await pipeline.start();
  const stopMonitor = chat2deskWebhooks.startMonitor(config.webhookCheckSeconds * 1000);
  const stopUninstallChecks = uninstalls.startMonitor();
  const stopMaintenance = startMaintenance(async () => {
    const now = clock.now();
    const jobsRemoved = await jobs.pruneFinished(now, DEFAULT_EVENT_LOG_RETENTION_DAYS);
    const cacheRows = await cache.pruneOlderThan(now - 2 * 24 * 3600_000);
    const deliveries = await chat2deskWebhooks.pruneDeliveries();
    const runEffects = await effects.pruneRunEffects(now - RUN_EFFECT_RETENTION_MS);
    const expiredFiles = await files.pruneExpired();
    const liveTicketsUnused = await liveTickets.pruneExpired();
    // The caps' windows are a minute at most; rate-limiter-flexible uses the real time, not the clock.
    const expiredLimits = database.kind === 'postgres' ? await pruneExpiredLimits(database.pool, Date.now() - 3600_000) : 0;
    if (jobsRemoved + cacheRows + deliveries + runEffects + expiredFiles + liveTicketsUnused + expiredLimits > 0) {
      log.info({ jobsRemoved, cacheRows, deliveries, runEffects, expiredFiles, liveTicketsUnused, expiredLimits }, 'old rows pruned');
    }
  }, log);
  const server: ServerType = await new Promise((resolve) => {
    const started = serve({ fetch: app.fetch, port: config.port, hostname: options.hostname }, () => resolve(started));
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${options.hostname ?? 'localhost'}:${port}`,
    port,
    database,
    broadcast,
    worker: pipeline.worker,
    pipeline,
    rest,
    portals,
    jobs,
    chat2deskWebhooks,
    async idle() {
      // The uninstall monitor's pass at start reads the database before it starts its checks.
      await uninstalls.passed();
      await background.idle();
      await pipeline.settled([REGISTER_APP_KIND]);
    },
    directoryOf: async (memberId) => {
      const portal = await portals.get(memberId);
      return portal ? chat2desk.directoryOf(portal) : undefined;
    },
    async close() {
      // The periodic passes are stopped and a pass in progress awaited before the work it starts is
      // awaited and the database closed (on PostgreSQL a pass after that would find the pool ended).
      const passesStopped = Promise.all([stopMonitor(), stopUninstallChecks(), stopMaintenance()]);
      // Open live streams would hold the HTTP server's close until their tokens expire.
      liveHub.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await passesStopped;
      await background.idle();
      await pipeline.stop();
      await accounts.flush();
      await broadcast.close();
      await database.close();
    },
  };
}
