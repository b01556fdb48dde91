import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit as honoBodyLimit } from 'hono/body-limit';

/**
 * Hono's bodyLimit, with the common case decided from the headers alone. Hono's version first reads
 * `c.req.raw.body`, which makes @hono/node-server build a full web Request (a ReadableStream over
 * the socket, an AbortController) for every call; the robot route then reads the body through that
 * stream instead of node-server's direct path. Profiled under load that was the largest single
 * cost of a robot-call acknowledgement after the database insert. A body with a Content-Length and
 * no Transfer-Encoding is judged by its length, exactly as Hono does; anything else goes to Hono's
 * middleware, which counts the bytes as they arrive.
 */
export function bodyLimit(options: { maxSize: number; onError: (c: Context) => Response | Promise<Response> }): MiddlewareHandler {
  const counting = honoBodyLimit(options);
  return async (c, next) => {
    if (c.req.method === 'GET' || c.req.method === 'HEAD') return next();
    const length = c.req.header('content-length');
    if (length !== undefined && c.req.header('transfer-encoding') === undefined) {
      return Number.parseInt(length, 10) > options.maxSize ? options.onError(c) : next();
    }
    return counting(c, next);
  };
}
