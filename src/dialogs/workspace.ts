import { HTTPException } from 'hono/http-exception';
import type { BitrixUsers } from '../bitrix24/users.js';
import type { Chat2DeskAccess } from '../chat2desk/access.js';
import { type CachedClient, type CachedDialog, type DialogDirectory, latestFirst } from '../chat2desk/directory.js';
import { Chat2DeskError } from '../chat2desk/errors.js';
import type { Portal } from '../db/portals.js';
import type { PageClaims } from '../pages/page-token.js';
import { normalizePhone } from '../phone.js';
import { readWorkspaceSettings, type PortalSettings } from '../portal-settings.js';
import { DialogReadError, type DialogReads, type DialogSummary } from './dialog-reads.js';
import type { DialogScope, DialogViewer } from './scope.js';
import type { OperatorOfUser, WorkspaceScopes } from './viewer.js';
import { dialogVisible } from './visibility.js';

/**
 * Who sees what in the Chat workspace (the app page's Chat section), decided on every request:
 * portal admins, the users an admin lists (`workspaceUsers`) and the members of the departments an
 * admin lists (`workspaceDepartments`) see every dialog; anybody else mapped to a Chat2Desk operator
 * sees that operator's dialogs; nobody else sees any. Departments are read from the portal with the
 * app's own token (user.get UF_DEPARTMENT) through `users`, whose answers are kept briefly
 * (WORKSPACE_DEPARTMENTS_TTL_MS), so a move to another department counts within minutes.
 */
export class WorkspaceAccess implements WorkspaceScopes {
  constructor(private readonly deps: { users: BitrixUsers; operators: OperatorOfUser }) {}

  async scopeOf(portal: Portal, claims: PageClaims): Promise<DialogScope | undefined> {
    if (claims.admin) return { kind: 'all' };
    const settings = readWorkspaceSettings(portal.settings);
    if (settings.workspaceUsers.includes(claims.userId)) return { kind: 'all' };
    if (settings.workspaceDepartments.length > 0 && (await this.#inDepartments(portal, claims.userId, settings.workspaceDepartments))) return { kind: 'all' };
    const operatorId = await this.deps.operators.operatorOf(portal, claims.userId);
    return operatorId === undefined ? undefined : { kind: 'operator', operatorId };
  }

  async #inDepartments(portal: Portal, userId: number, departments: number[]): Promise<boolean> {
    let user: Awaited<ReturnType<BitrixUsers['byId']>>;
    try {
      user = await this.deps.users.byId(portal.memberId, userId);
    } catch (error) {
      // Not knowing the departments must neither widen nor silently narrow what the user sees.
      throw new HTTPException(502, { message: `Bitrix24 could not be asked for your departments: ${error instanceof Error ? error.message : String(error)}; try again` });
    }
    const own = (user?.UF_DEPARTMENT ?? []).map(Number);
    return own.some((id) => departments.includes(id));
  }
}

/** How long a user's departments are trusted (src/bitrix24/users.ts cache): a change in the portal counts within this. */
export const WORKSPACE_DEPARTMENTS_TTL_MS = 2 * 60_000;

export type WorkspaceView = 'mine' | 'open' | 'all';
export const WORKSPACE_VIEWS: readonly WorkspaceView[] = ['mine', 'open', 'all'];

/** Dialogs per page of a list (Chat2Desk's `limit`, at most 200: docs/protocols.md C1). */
export const WORKSPACE_PAGE_SIZE = 50;
/** Clients a name search reads dialogs for: each may cost a Chat2Desk request on a cold cache. */
export const NAME_SEARCH_CLIENTS = 20;

export const NOT_ALL_SCOPE = 'Open and all dialogs are for Bitrix24 administrators and the users or departments an administrator lists in the app settings; "mine" lists your own';
export const NO_OWN_DIALOGS = "You are not mapped to a Chat2Desk operator, so you have no dialogs of your own; ask an administrator to map you in the app's Operators section";

/** A request the workspace refuses, with the status and words the page shows. */
export class WorkspaceRefusal extends Error {
  override name = 'WorkspaceRefusal';
  constructor(
    message: string,
    readonly httpStatus: 403 | 502 | 503,
    readonly code?: 'not_mapped',
  ) {
    super(message);
  }
}

export interface WorkspacePage {
  dialogs: DialogSummary[];
  more: boolean;
  view: WorkspaceView;
}

/**
 * The Chat workspace's lists: "mine" (the viewer's operator's dialogs), "open", "all", and a search
 * by phone (Chat2Desk's clients by phone) or by name (the clients the cache knows). Whatever the
 * view or the search, only dialogs the viewer's scope shows are answered (src/dialogs/visibility.ts).
 */
export class WorkspaceDialogs {
  constructor(private readonly deps: { chat2desk: Chat2DeskAccess; dialogReads: Pick<DialogReads, 'summaries'> }) {}

  async list(viewer: DialogViewer, request: { view: WorkspaceView; q: string | undefined; offset: number }): Promise<WorkspacePage> {
    const { view, q, offset } = request;
    if (view !== 'mine' && viewer.scope.kind !== 'all') throw new WorkspaceRefusal(NOT_ALL_SCOPE, 403);
    const operatorId = viewer.scope.kind === 'operator' ? viewer.scope.operatorId : viewer.operatorId;
    if (view === 'mine' && operatorId === undefined) throw new WorkspaceRefusal(NO_OWN_DIALOGS, 403, 'not_mapped');
    const connection = await this.deps.chat2desk.connect(viewer.portal);
    if (!connection.usable) throw new WorkspaceRefusal(connection.reason, 503);
    const { directory, settings } = connection;
    const inView = (dialog: CachedDialog) => (view === 'mine' ? dialog.operatorId === operatorId : view === 'open' ? dialog.state === 'open' : true);
    try {
      let page: { dialogs: CachedDialog[]; more: boolean };
      if (q) {
        const found = (await this.#search(directory, settings, q)).filter((match) => inView(match.dialog) && dialogVisible(viewer, match.dialog, match.client));
        const sorted = found.map((match) => match.dialog).sort(latestFirst);
        page = { dialogs: sorted.slice(offset, offset + WORKSPACE_PAGE_SIZE), more: sorted.length > offset + WORKSPACE_PAGE_SIZE };
      } else {
        const fetched = await directory.dialogsPage({
          operatorId: view === 'mine' ? operatorId : undefined,
          state: view === 'open' ? 'open' : undefined,
          offset,
          limit: WORKSPACE_PAGE_SIZE,
        });
        // Chat2Desk filtered already; the scope is checked all the same, on what it answered.
        const dialogs = fetched.dialogs.filter((dialog) => inView(dialog) && dialogVisible(viewer, dialog, null));
        const more = fetched.total !== undefined ? offset + fetched.dialogs.length < fetched.total : fetched.dialogs.length === WORKSPACE_PAGE_SIZE;
        page = { dialogs, more };
      }
      return { dialogs: await this.deps.dialogReads.summaries(viewer.portal, directory, settings, page.dialogs), more: page.more, view };
    } catch (error) {
      if (error instanceof Chat2DeskError) throw new WorkspaceRefusal(`Chat2Desk could not list the dialogs: ${error.apiMessage}`, 502);
      if (error instanceof DialogReadError) throw new WorkspaceRefusal(error.message, 502);
      throw error;
    }
  }

  /** Dialogs of the clients a search finds: by phone when the query is a number, else by name. */
  async #search(directory: DialogDirectory, settings: PortalSettings, q: string): Promise<Array<{ dialog: CachedDialog; client: CachedClient }>> {
    const phone = phoneQuery(q, settings.defaultCountry);
    const clients = phone ? await directory.clientsByPhone(phone) : await directory.clientsByName(q, NAME_SEARCH_CLIENTS);
    const lists = await Promise.all(clients.map(async (client) => (await directory.dialogsOfClient(client.id)).map((dialog) => ({ dialog, client }))));
    return lists.flat();
  }
}

/** A query made only of a phone number's characters → its international digits (as Chat2Desk stores them, C3); else undefined. */
export function phoneQuery(q: string, defaultCountry: string | null): string | undefined {
  if (!/^\+?[\d\s().-]+$/.test(q)) return undefined;
  const digits = q.replace(/\D/g, '');
  if (digits.length === 0 || digits.length > 15) return undefined;
  return normalizePhone(digits.length >= 10 ? q : digits, defaultCountry ?? undefined)?.digits ?? digits;
}
