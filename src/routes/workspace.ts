import { Hono, type MiddlewareHandler } from 'hono';
import type { ViewerVariables } from '../dialogs/viewer.js';
import { WORKSPACE_VIEWS, WorkspaceRefusal, type WorkspaceDialogs, type WorkspaceView } from '../dialogs/workspace.js';

/** Longest search text: a name or a phone number, never a document. */
const MAX_QUERY_LENGTH = 100;
/** Deepest offset a list pages to; Chat2Desk pages by offset and nobody scrolls this far. */
const MAX_OFFSET = 100_000;

/**
 * The Chat workspace's API (the app page's Chat section; its UI comes with the dialog view).
 *
 * `GET /api/workspace/dialogs?view=mine|open|all&q=<name or phone>&offset=<n>`, with
 * `Authorization: Bearer <app page token>` (src/dialogs/viewer.ts; a CRM tab's token is refused here)
 * → `{ dialogs: DialogSummary[], more: boolean, view }`, newest first, 50 a page (`offset` for the next).
 * - `mine` (default): the dialogs of the viewer's Chat2Desk operator; 403 `{code:'not_mapped'}` without one.
 * - `open`, `all`: only for a viewer who sees every dialog (admins, settings `workspaceUsers` and
 *   `workspaceDepartments`); anybody else gets 403 saying so.
 * - `q`: a phone number (digits, `+`, spaces, brackets, dashes) finds Chat2Desk's clients with that
 *   number, anything else the clients whose name contains it; their dialogs are listed within the view.
 * Whatever the view or the query, only dialogs the viewer's scope shows are answered. A viewer with
 * no operator and no wider access gets 403 from the viewer middleware; an expired token 401 `{renew:true}`.
 */
export function createWorkspaceRoute(deps: { viewer: MiddlewareHandler<ViewerVariables>; workspaceDialogs: WorkspaceDialogs }) {
  return new Hono<ViewerVariables>().get('/api/workspace/dialogs', deps.viewer, async (c) => {
    const viewer = c.get('viewer');
    if (viewer.via !== 'workspace') return c.json({ error: "The Chat workspace takes the app page's token, not a CRM tab's" }, 403);
    const view = c.req.query('view') ?? 'mine';
    if (!WORKSPACE_VIEWS.includes(view as WorkspaceView)) return c.json({ error: `view must be one of: ${WORKSPACE_VIEWS.join(', ')}` }, 400);
    const q = c.req.query('q')?.trim() || undefined;
    if (q !== undefined && q.length > MAX_QUERY_LENGTH) return c.json({ error: `q is longer than ${MAX_QUERY_LENGTH} characters` }, 400);
    const offsetText = c.req.query('offset') ?? '0';
    if (!/^\d{1,6}$/.test(offsetText) || Number(offsetText) > MAX_OFFSET) return c.json({ error: `offset must be a whole number from 0 to ${MAX_OFFSET}` }, 400);
    try {
      return c.json(await deps.workspaceDialogs.list(viewer, { view: view as WorkspaceView, q, offset: Number(offsetText) }));
    } catch (error) {
      if (error instanceof WorkspaceRefusal) return c.json(error.code ? { error: error.message, code: error.code } : { error: error.message }, error.httpStatus);
      throw error;
    }
  });
}
