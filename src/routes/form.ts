import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { parseFormBody } from '../bitrix24/form-body.js';

/** Reads a Bitrix24 form post; anything else is refused before it reaches a handler. */
export async function readBitrixForm(c: Context): Promise<Record<string, unknown>> {
  // The media type is what comes before any parameters (`; charset=UTF-8`), compared whole.
  const mediaType = (c.req.header('content-type') ?? '').split(';', 1)[0]!.trim().toLowerCase();
  if (mediaType !== 'application/x-www-form-urlencoded') {
    throw new HTTPException(415, { message: 'Bitrix24 posts application/x-www-form-urlencoded bodies' });
  }
  return parseFormBody(await c.req.text());
}

/** A JSON body that is an object; undefined for anything else (not JSON, null, an array, a string), which the route refuses with 400. */
export async function readJsonObject(c: Context): Promise<Record<string, unknown> | undefined> {
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    return undefined;
  }
  return body && typeof body === 'object' && !Array.isArray(body) ? (body as Record<string, unknown>) : undefined;
}
