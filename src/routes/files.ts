import { Hono, type MiddlewareHandler } from 'hono';
import { contentDisposition, FileRequestError, PLAIN_TEXT, type DialogFiles } from '../dialogs/files.js';
import { requireMappedOperator, type ViewerVariables } from '../dialogs/viewer.js';

/**
 * Files for dialog actions (issue 9, slice 2).
 *
 * `POST /api/files` — multipart/form-data with one field `file`; Authorization: Bearer <tab token
 * `c2dt.…` or app page token `c2dp.…`>; the user must be mapped to a Chat2Desk operator (403
 * `{code: 'not_mapped'}`), a cross-site Origin is refused (403). The body may be up to
 * UPLOAD_MAX_BYTES (this route only; 413 names the limit); the type is sniffed from the bytes
 * (415 for a kind that cannot be sent). → 201 `{ id, name, size, type, expiresAt }`; send `id` in
 * `fileIds` of a `send` or `write_first` action (src/routes/dialog-actions.ts) before `expiresAt`.
 *
 * `GET /files/<secret>/<name>` — no authorization: the link itself is the secret (32 random bytes),
 * for Chat2Desk to fetch. Served as a download that can never render in our origin
 * (`Content-Disposition: attachment`, `X-Content-Type-Options: nosniff`, `Content-Security-Policy:
 * sandbox; default-src 'none'`, the sniffed type). 404 for an unknown link, 410 once expired
 * (FILE_LINK_HOURS after the upload); the hourly maintenance then deletes it.
 */
export function createFilesRoute(deps: { files: DialogFiles; viewer: MiddlewareHandler<ViewerVariables>; sameOrigin: MiddlewareHandler }) {
  return new Hono<ViewerVariables>()
    .post('/api/files', deps.sameOrigin, deps.viewer, requireMappedOperator(), async (c) => {
      let form: Record<string, string | File | (string | File)[]>;
      try {
        form = await c.req.parseBody({ all: true });
      } catch {
        return c.json({ error: 'Send the file as multipart/form-data in the field "file"' }, 400);
      }
      const file = form.file;
      if (!(file instanceof File)) return c.json({ error: 'Send one file in the multipart field "file"' }, 400);
      try {
        const answer = await deps.files.upload(c.get('viewer'), { name: file.name, bytes: Buffer.from(await file.arrayBuffer()) });
        return c.json(answer, 201);
      } catch (error) {
        if (error instanceof FileRequestError) return refusal(c, error);
        throw error;
      }
    })
    .get('/files/:secret/:name', async (c) => {
      try {
        const file = await deps.files.open(c.req.param('secret'), c.req.param('name'));
        return c.body(new Uint8Array(file.bytes), 200, {
          'content-type': file.type === PLAIN_TEXT ? `${PLAIN_TEXT}; charset=utf-8` : file.type,
          'content-disposition': contentDisposition(file.name),
          'x-content-type-options': 'nosniff',
          'content-security-policy': "sandbox; default-src 'none'",
          'cache-control': 'private, no-store',
          'referrer-policy': 'no-referrer',
        });
      } catch (error) {
        if (error instanceof FileRequestError) return refusal(c, error);
        throw error;
      }
    });
}

function refusal(c: { json: (body: unknown, status: FileRequestError['httpStatus']) => Response }, error: FileRequestError): Response {
  return c.json({ error: error.message }, error.httpStatus);
}
