import { type Context, Hono, type MiddlewareHandler } from 'hono';
import type { DialogMeta } from '../dialogs/dialog-meta.js';
import { DEFAULT_MESSAGE_PAGE, DialogReadError, type DialogReads } from '../dialogs/dialog-reads.js';
import type { ViewerVariables } from '../dialogs/viewer.js';
import { NOT_HERE } from '../dialogs/visibility.js';

export interface DialogsRouteDeps {
  dialogReads: DialogReads;
  /** src/dialogs/viewer.ts dialogViewer: a tab token (record scope) or an app page token (workspace scope). */
  viewer: MiddlewareHandler<ViewerVariables>;
  /** The write controls' choices (tags, operators, channels) and whether the viewer may write. */
  dialogMeta: DialogMeta;
}

/**
 * The dialog read API (bearer: a tab token or an app page token; 401 `{renew: true}` when it expired):
 * - `GET /api/dialogs/by-phone?phone=<digits>` → `{phone, latest: DialogSummary | null, others: DialogSummary[]}`,
 *   latest activity first. A tab may only ask for its record's phones; another phone answers 404.
 * - `GET /api/dialogs/meta` → `{tags: [{id, label}], operators: [{id, name}] (active only), channels: [{id, name,
 *   transports}], operatorId: number | null}` from the account's cached lists; `operatorId` null = the viewer may
 *   read but not write (src/dialogs/dialog-meta.ts).
 * - `GET /api/dialogs/:id` → `DialogSummary`.
 * - `GET /api/dialogs/:id/messages?before=<message id>&limit=<1..50>` → `{messages: MessageView[] (oldest first), older}`.
 * A dialog outside the viewer's scope answers 404 "No such dialog here", exactly as one that does not exist.
 * Shapes: src/dialogs/dialog-reads.ts.
 */
export function createDialogsRoute(deps: DialogsRouteDeps): Hono<ViewerVariables> {
  const refusal = (c: Context, error: unknown) => {
    if (error instanceof DialogReadError) return c.json({ error: error.message }, error.httpStatus);
    throw error;
  };
  const dialogId = (c: Context): number | undefined => {
    const id = Number(c.req.param('id'));
    return /^\d{1,15}$/.test(c.req.param('id') ?? '') && id > 0 ? id : undefined;
  };
  return new Hono<ViewerVariables>()
    .use('/api/dialogs/*', deps.viewer)
    .get('/api/dialogs/by-phone', async (c) => {
      try {
        return c.json(await deps.dialogReads.byPhone(c.get('viewer'), c.req.query('phone') ?? ''));
      } catch (error) {
        return refusal(c, error);
      }
    })
    .get('/api/dialogs/meta', async (c) => {
      try {
        return c.json(await deps.dialogMeta.of(c.get('viewer')));
      } catch (error) {
        return refusal(c, error);
      }
    })
    .get('/api/dialogs/:id', async (c) => {
      const id = dialogId(c);
      if (id === undefined) return c.json({ error: NOT_HERE }, 404);
      try {
        return c.json(await deps.dialogReads.dialog(c.get('viewer'), id));
      } catch (error) {
        return refusal(c, error);
      }
    })
    .get('/api/dialogs/:id/messages', async (c) => {
      const id = dialogId(c);
      if (id === undefined) return c.json({ error: NOT_HERE }, 404);
      const beforeText = c.req.query('before');
      const limitText = c.req.query('limit');
      const before = beforeText === undefined ? undefined : Number(beforeText);
      const limit = limitText === undefined ? DEFAULT_MESSAGE_PAGE : Number(limitText);
      if (before !== undefined && (!Number.isInteger(before) || before <= 0)) return c.json({ error: 'before must be a message id' }, 400);
      if (!Number.isInteger(limit) || limit < 1 || limit > 50) return c.json({ error: 'limit must be 1 to 50' }, 400);
      try {
        return c.json(await deps.dialogReads.messages(c.get('viewer'), id, { before, limit }));
      } catch (error) {
        return refusal(c, error);
      }
    });
}
