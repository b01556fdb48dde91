import { serve, type ServerType } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { activities } from './activities/index.js';
import { createApp } from './app.js';
import { InstallService } from './bitrix24/install.js';
import { AppUpdates } from './bitrix24/app-updates.js';
import { InstallerTokens } from './bitrix24/installer-tokens.js';
import { OAuthServer } from './bitrix24/oauth.js';
import { AppRegistration } from './bitrix24/registration.js';
import { Bitrix24Rest } from './bitrix24/rest-client.js';
import { Uninstalls } from './bitrix24/uninstall.js';
import { BitrixUsers } from './bitrix24/users.js';
import { Chat2DeskAccounts, accountKey } from './chat2desk/client.js';
import { DialogDirectory } from './chat2desk/directory.js';
import { Chat2DeskWebhooks } from './chat2desk/webhooks.js';
import { CacheStore } from './db/cache.js';
import { Chat2DeskRateStore } from './db/chat2desk-rates.js';
import { EffectStore } from './db/effects.js';
import { WebhookStore } from './db/webhooks.js';
import { BackgroundTasks } from './background.js';
import type { Config } from './config.js';
import { systemClock, type Clock } from './clock.js';
import { openDatabase, pingDatabase, type DatabaseHandle } from './db/database.js';
import { JobStore } from './db/jobs.js';
import { PortalStore } from './db/portals.js';
import { RobotCalls } from './jobs/robot-calls.js';
import { RobotWorker } from './jobs/worker.js';
import type { Logger } from './log.js';
import { readSettings, type PortalSettings } from './portal-settings.js';
import { SecretBox, resolveAppSecret } from './secrets.js';
import { SettingsService } from './settings-service.js';

/** Finished robot jobs are kept 30 days, for "did the robot run?" questions. */
const FINISHED_JOB_RETENTION_MS = 30 * 24 * 3600_000;

/** Runs `prune` now and every hour; returns the stop function. */
function startMaintenance(prune: () => void, log: Logger): () => void {
  const run = () => {
    try {
      prune();
    } catch (error) {
      log.warn({ err: error instanceof Error ? error.message : String(error) }, 'maintenance failed');
    }
  };
  run();
  const timer = setInterval(run, 3600_000);
  timer.unref();
  return () => clearInterval(timer);
}

export interface RunningServer {
  url: string;
  port: number;
  database: DatabaseHandle;
  worker: RobotWorker;
  rest: Bitrix24Rest;
  portals: PortalStore;
  jobs: JobStore;
  chat2deskWebhooks: Chat2DeskWebhooks;
  /** Resolves when no background task (cache fill, re-registration) is running. */
  idle(): Promise<void>;
  /** The portal's Chat2Desk directory (cache), for tests and the benchmark. */
  directoryOf(memberId: string): DialogDirectory | undefined;
  close(): Promise<void>;
}

export interface ServerOptions {
  /** Hostname to listen on; loopback by default in tests, all interfaces in production. */
  hostname?: string;
  fetch?: typeof fetch;
  reportLingerMs?: number;
  /** Where every time-based decision reads the time; tests move it forward instead of sleeping. */
  clock?: Clock;
}

/** Builds every service from the config, starts the workers and the HTTP server. */
export async function startServer(config: Config, log: Logger, options: ServerOptions = {}): Promise<RunningServer> {
  const clock = options.clock ?? systemClock;
  const database = openDatabase(config.databaseFile);
  const secrets = new SecretBox(resolveAppSecret(config.appSecret, config.databaseFile));
  const portals = new PortalStore(database.db, secrets);
  const jobs = new JobStore(database.db);
  const fetchImpl = options.fetch ?? fetch;
  const oauth = new OAuthServer(config.bitrix24.oauthUrl, config.bitrix24.clientId, config.bitrix24.clientSecret, fetchImpl);
  const rest = new Bitrix24Rest({ portals, oauth, log, ratePerSecond: config.bitrix24.ratePerSecond, burst: config.bitrix24.rateBurst, fetch: fetchImpl });
  const accounts = new Chat2DeskAccounts(config.chat2desk, new Chat2DeskRateStore(database.db), fetchImpl);
  const chat2deskFor = (portal: { memberId: string }, settings: { chat2deskApiUrl: string }) => {
    const token = portals.chat2deskToken(portal.memberId);
    // A stored URL no longer on the operator's allow-list is not used.
    if (!token || !config.chat2desk.allowedApiUrls.includes(settings.chat2deskApiUrl)) return undefined;
    return accounts.api(settings.chat2deskApiUrl, token);
  };
  const cache = new CacheStore(database.db);
  const background = new BackgroundTasks(log);
  const directoryFor = (portal: { memberId: string }, settings: PortalSettings) => {
    const api = chat2deskFor(portal, settings);
    const token = portals.chat2deskToken(portal.memberId);
    if (!api || !token) return undefined;
    return new DialogDirectory(api, cache, accountKey(settings.chat2deskApiUrl, token), settings.cacheTtlSeconds * 1000, log);
  };
  const chat2deskWebhooks = new Chat2DeskWebhooks({
    webhooks: new WebhookStore(database.db, secrets),
    cache,
    portals,
    publicUrl: config.publicUrl,
    directoryFor: (portal) => directoryFor(portal, readSettings(portal.settings, config.chat2desk.defaultApiUrl)),
    log,
  });
  const registration = new AppRegistration({
    rest,
    publicUrl: config.publicUrl,
    activities,
    log,
    channelsOf: async (portal) => {
      const api = chat2deskFor(portal, readSettings(portal.settings, config.chat2desk.defaultApiUrl));
      return api ? api.channels() : [];
    },
  });
  const effects = new EffectStore(database.db, clock);
  const worker = new RobotWorker({
    jobs,
    portals,
    rest,
    users: new BitrixUsers(rest),
    effects,
    clock,
    directoryFor,
    defaultChat2DeskUrl: config.chat2desk.defaultApiUrl,
    portalConcurrency: config.portalConcurrency,
    log,
    reportLingerMs: options.reportLingerMs,
  });
  const uninstalls = new Uninstalls({ portals, jobs, rest, chat2deskWebhooks, background, log });
  const installerTokens = new InstallerTokens({ oauth, portals, log });
  const appUpdates = new AppUpdates({ portals, installerTokens, registration, background });
  const app = createApp({
    log,
    maxBodyBytes: config.maxBodyBytes,
    portals,
    jobs,
    registration,
    install: new InstallService({ oauth, rest, portals, registration, log, attemptsPerMinute: config.installAttemptsPerMinute }),
    installerTokens,
    uninstalls,
    appUpdates,
    robotCalls: new RobotCalls({
      jobs,
      robotDeadlineSeconds: config.robotDeadlineSeconds,
      maxUnconfirmedPerPortal: config.maxUnconfirmedCallsPerPortal,
      onQueued: () => worker.callAccepted(),
      log,
    }),
    settings: new SettingsService({
      portals,
      rest,
      accounts,
      registration,
      secrets,
      defaultApiUrl: config.chat2desk.defaultApiUrl,
      allowedApiUrls: config.chat2desk.allowedApiUrls,
      chat2deskWebhooks,
      directoryFor: (portal) => directoryFor(portal, readSettings(portal.settings, config.chat2desk.defaultApiUrl)),
      background,
      log,
    }),
    background,
    chat2deskWebhooks,
    databaseUp: () => pingDatabase(database),
    workersRunning: () => worker.running,
  });
  worker.start();
  const stopMonitor = chat2deskWebhooks.startMonitor(config.webhookCheckSeconds * 1000);
  const stopUninstallChecks = uninstalls.startMonitor();
  const stopMaintenance = startMaintenance(() => {
    const now = clock.now();
    const jobsRemoved = jobs.pruneFinished(now - FINISHED_JOB_RETENTION_MS);
    const cacheRows = cache.pruneOlderThan(now - 2 * 24 * 3600_000);
    const deliveries = chat2deskWebhooks.pruneDeliveries();
    if (jobsRemoved + cacheRows + deliveries > 0) log.info({ jobsRemoved, cacheRows, deliveries }, 'old rows pruned');
    // A run's own effects go with its job (src/db/effects.ts).
    effects.pruneRunEffects(now - FINISHED_JOB_RETENTION_MS).then(
      (runEffects) => runEffects > 0 && log.info({ runEffects }, 'old rows pruned'),
      (error: unknown) => log.error({ err: String(error) }, 'pruning effects failed'),
    );
  }, log);
  const server: ServerType = await new Promise((resolve) => {
    const started = serve({ fetch: app.fetch, port: config.port, hostname: options.hostname }, () => resolve(started));
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${options.hostname ?? 'localhost'}:${port}`,
    port,
    database,
    worker,
    rest,
    portals,
    jobs,
    chat2deskWebhooks,
    idle: () => background.idle(),
    directoryOf: (memberId) => {
      const portal = portals.get(memberId);
      return portal ? directoryFor(portal, readSettings(portal.settings, config.chat2desk.defaultApiUrl)) : undefined;
    },
    async close() {
      stopMonitor();
      stopUninstallChecks();
      appUpdates.stop();
      stopMaintenance();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await background.idle();
      await worker.stop();
      accounts.flush();
      database.close();
    },
  };
}
