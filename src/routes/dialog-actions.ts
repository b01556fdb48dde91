import { Hono, type MiddlewareHandler } from 'hono';
import { DialogActionRequestError, type DialogActions } from '../dialogs/actions.js';
import { requireMappedOperator, type ViewerVariables } from '../dialogs/viewer.js';
import { readJsonObject } from './form.js';

/**
 * Dialog actions of the CRM tab and the Chat workspace (issue 9, slice 2).
 *
 * Every request: `Authorization: Bearer <tab token c2dt.… | app page token c2dp.…>` (401 `{renew: true}`
 * when expired: renew through the parent frame and retry with the same key).
 *
 * `POST /api/dialog-actions` (JSON; a cross-site Origin is refused with 403; a user without a mapped
 * Chat2Desk operator gets 403 `{code: 'not_mapped'}`):
 * `{ key, action, ... }` where `key` is the page's idempotency key (`^[A-Za-z0-9_-]{8,80}$`), one per
 * composed message or action, and the action is one of
 * - `send {dialogId, text?, fileIds?}` — as the user's Chat2Desk operator; one message per file, the text with the first;
 * - `write_first {phone, channelId, transport, text?, fileIds?}` — the phone must be one of the tab's record's phones;
 *   a workspace user who sees only their operator's dialogs: every dialog of the number must be theirs (else 404);
 * - `tag | untag {dialogId, tagId, target: 'client' | 'request'}` — the dialog's client or its last request;
 * - `close | reopen {dialogId}`;
 * - `assign {dialogId, operatorId}`.
 * `fileIds` come from `POST /api/files` (the user's own, unexpired). → 202 `{ key, state: 'queued' |
 * 'running' | 'done' | 'failed', result?, error? }`. The same key again answers the same action and
 * does nothing twice; the same key with another request → 409. 400 names the bad field; a dialog or
 * phone outside the viewer's scope → 404 "No such dialog here"; Chat2Desk not connected → 503.
 *
 * `GET /api/dialog-actions/:key` → the same shape, for polling until `done` or `failed` (`error` is
 * in words the manager can act on, e.g. the WhatsApp Business template rule). 404 for an unknown key.
 */
export function createDialogActionsRoute(deps: { actions: DialogActions; viewer: MiddlewareHandler<ViewerVariables>; sameOrigin: MiddlewareHandler }) {
  return new Hono<ViewerVariables>()
    .post('/api/dialog-actions', deps.sameOrigin, deps.viewer, requireMappedOperator(), async (c) => {
      const payload = await readJsonObject(c);
      if (!payload) return c.json({ error: 'Send the action as a JSON object' }, 400);
      const viewer = c.get('viewer');
      const operatorId = viewer.operatorId;
      // requireMappedOperator let only a mapped viewer through.
      if (operatorId === undefined) throw new Error('dialog action without a mapped operator');
      try {
        return c.json(await deps.actions.submit({ ...viewer, operatorId }, payload), 202);
      } catch (error) {
        if (error instanceof DialogActionRequestError) return c.json({ error: error.message }, error.httpStatus);
        throw error;
      }
    })
    .get('/api/dialog-actions/:key', deps.viewer, async (c) => {
      try {
        return c.json(await deps.actions.status(c.get('viewer'), c.req.param('key')));
      } catch (error) {
        if (error instanceof DialogActionRequestError) return c.json({ error: error.message }, error.httpStatus);
        throw error;
      }
    });
}
