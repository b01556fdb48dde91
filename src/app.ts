import { type Context, Hono, type MiddlewareHandler } from 'hono';
import type { BackgroundTasks } from './background.js';
import { bodyLimit } from './body-limit.js';
import { HTTPException } from 'hono/http-exception';
import type { InstallService } from './bitrix24/install.js';
import type { InstallerTokens } from './bitrix24/installer-tokens.js';
import type { Chat2DeskWebhooks } from './chat2desk/webhooks.js';
import type { AppRegistration } from './bitrix24/registration.js';
import type { JobStore } from './db/jobs.js';
import type { PortalStore } from './db/portals.js';
import type { EventLog } from './event-log.js';
import type { RobotCalls } from './jobs/robot-calls.js';
import type { Logger } from './log.js';
import { createChat2DeskWebhookRoute } from './routes/chat2desk-webhook.js';
import type { EventHandlers } from './bitrix24/events/index.js';
import { pageAdmin } from './pages/page-auth.js';
import { createEventLogRoute } from './routes/event-log.js';
import { createEventsRoute } from './routes/events.js';
import type { ClientAddresses } from './client-address.js';
import { createHealthRoute, type ProcessIdentity } from './routes/health.js';
import { createInstallRoute } from './routes/install.js';
import { createLiveRoute, type LiveRouteDeps } from './routes/live.js';
import { createAppPage } from './routes/app-page.js';
import type { AppPageService } from './pages/app-page.js';
import type { PageAuth } from './pages/page-auth.js';
import type { ViewerVariables } from './dialogs/viewer.js';
import { createRobotRoute } from './routes/robot.js';
import { createSettingsRoute } from './routes/settings.js';
import type { SettingsService } from './settings-service.js';
import type { WorkspaceDialogs } from './dialogs/workspace.js';
import { createWorkspaceRoute } from './routes/workspace.js';
import type { DialogReads } from './dialogs/dialog-reads.js';
import type { TabAuth } from './dialogs/tab-auth.js';
import type { DialogMeta } from './dialogs/dialog-meta.js';
import { createDialogsRoute } from './routes/dialogs.js';
import { createTabRoute } from './routes/tab.js';
import { createConnectorRoute } from './routes/connector.js';
import type { ConnectorPage } from './open-channels/settings-page.js';
import type { DialogActions } from './dialogs/actions.js';
import { describeBytes, type DialogFiles } from './dialogs/files.js';
import { createDialogActionsRoute } from './routes/dialog-actions.js';
import { createFilesRoute } from './routes/files.js';

export interface AppDeps {
  log: Logger;
  background: BackgroundTasks;
  maxBodyBytes: number;
  /** UPLOAD_MAX_BYTES: the body limit of POST /api/files alone. */
  uploadMaxBytes: number;
  portals: PortalStore;
  jobs: JobStore;
  install: InstallService;
  installerTokens: InstallerTokens;
  events: EventHandlers;
  registration: AppRegistration;
  robotCalls: RobotCalls;
  settings: SettingsService;
  eventLog: EventLog;
  chat2deskWebhooks: Chat2DeskWebhooks;
  pageAuth: PageAuth;
  /** Who is asking on a dialog API (src/dialogs/viewer.ts) and the cross-site guard of its writes. */
  dialogViewer: MiddlewareHandler<ViewerVariables>;
  sameOriginWrites: MiddlewareHandler;
  files: DialogFiles;
  dialogActions: DialogActions;
  appPage: AppPageService;
  workspaceDialogs: WorkspaceDialogs;
  /** Live updates of open tabs and the workspace (src/routes/live.ts). */
  live: Omit<LiveRouteDeps, 'viewer' | 'sameOrigin'>;
  /** CSP frame-ancestors of the app page (config FRAME_ANCESTORS); default the portal's own host. */
  frameAncestors?: string;
  /** The CRM tab (POST /tab, /api/tab/renew) and the dialog read API for tabs and the workspace. */
  tabAuth: TabAuth;
  /** The Open Channels connector's settings page (POST /connector, /api/connector/lines/:line). */
  connectorPage: ConnectorPage;
  dialogReads: DialogReads;
  dialogMeta: DialogMeta;
  /** Who sent a request, for per-address limits (TRUSTED_PROXIES, src/client-address.ts). */
  clientAddresses: ClientAddresses;
  databaseUp(): boolean | Promise<boolean>;
  /** Which database the server runs on (`/healthz`). */
  databaseKind: 'sqlite' | 'postgres';
  /** Which process answers `/healthz`. */
  process: ProcessIdentity;
  workersRunning(): boolean;
}

/** Room for the multipart envelope of an upload beyond UPLOAD_MAX_BYTES. */
const MULTIPART_ROOM_BYTES = 64 * 1024;

/** Composes routes and middleware; everything comes in through deps, so tests build their own. */
export function createApp(deps: AppDeps): Hono {
  const app = new Hono();
  app.use(
    '*',
    bodyLimit({
      maxSize: deps.maxBodyBytes,
      // The unread rest of the body would poison a kept-alive connection, so close it.
      onError: (c) => c.json({ error: `The body is larger than ${deps.maxBodyBytes} bytes` }, 413, { connection: 'close' }),
      routes: {
        // The multipart envelope around the file (boundaries, part headers) gets a little room; the route checks the file itself.
        '/api/files': {
          maxSize: deps.uploadMaxBytes + MULTIPART_ROOM_BYTES,
          onError: (c) =>
            c.json({ error: `The file is larger than ${describeBytes(deps.uploadMaxBytes)}, the most this server takes (UPLOAD_MAX_BYTES)` }, 413, { connection: 'close' }),
        },
      },
    }),
  );
  const appPage = createAppPage(deps);
  app.route('/', createHealthRoute(deps));
  app.route('/', createInstallRoute({ ...deps, appPageRenderer: appPage.renderer }));
  app.route('/', appPage.route);
  app.route('/', createEventsRoute(deps));
  app.route('/', createRobotRoute(deps));
  app.route('/', createSettingsRoute(deps));
  // Until the app page's token lands, the event log takes the same Bitrix24-bearer admin check as the settings.
  app.route('/', createEventLogRoute({ eventLog: deps.eventLog, admin: pageAdmin(deps) }));
  app.route('/', createChat2DeskWebhookRoute(deps));
  app.route('/', createLiveRoute({ ...deps.live, viewer: deps.dialogViewer, sameOrigin: deps.sameOriginWrites }));
  app.route('/', createWorkspaceRoute({ viewer: deps.dialogViewer, workspaceDialogs: deps.workspaceDialogs }));
  app.route('/', createTabRoute(deps));
  app.route('/', createConnectorRoute(deps));
  app.route('/', createDialogsRoute({ dialogReads: deps.dialogReads, dialogMeta: deps.dialogMeta, viewer: deps.dialogViewer }));
  app.route('/', createDialogActionsRoute({ actions: deps.dialogActions, viewer: deps.dialogViewer, sameOrigin: deps.sameOriginWrites }));
  app.route('/', createFilesRoute({ files: deps.files, viewer: deps.dialogViewer, sameOrigin: deps.sameOriginWrites }));
  app.notFound((c) => c.json({ error: 'Not found' }, 404));
  app.onError((error, c) => {
    if (error instanceof HTTPException) return c.json({ error: error.message }, error.status);
    if (clientWentAway(c, error)) {
      // Anyone can abort an upload: it is not our failure, and must not fill the error log.
      deps.log.debug({ route: c.req.routePath }, 'client went away before the request was read');
      return c.json({ error: 'The request was aborted' }, 400);
    }
    // The route pattern, not the path: a webhook path carries its secret.
    deps.log.error({ err: error.message, route: c.req.routePath }, 'request failed');
    return c.json({ error: 'Internal error' }, 500);
  });
  return app;
}

/**
 * The client closed the connection while we read its request: @hono/node-server aborts the
 * request's signal, and the body read fails with Node's own "aborted" ECONNRESET (which may
 * arrive before the signal is aborted).
 */
function clientWentAway(c: Context, error: Error): boolean {
  return c.req.raw.signal.aborted || ((error as NodeJS.ErrnoException).code === 'ECONNRESET' && error.message === 'aborted');
}
