import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit as honoBodyLimit } from 'hono/body-limit';

export interface BodyLimitOptions {
  maxSize: number;
  onError: (c: Context) => Response | Promise<Response>;
  /** Paths (exact) with a limit of their own instead of `maxSize`: file uploads take more than any other request. */
  routes?: Record<string, { maxSize: number; onError: (c: Context) => Response | Promise<Response> }>;
}

/**
 * Hono's bodyLimit, with the common case decided from the headers alone. Hono's version first reads
 * `c.req.raw.body`, which makes @hono/node-server build a full web Request (a ReadableStream over
 * the socket, an AbortController) for every call; the robot route then reads the body through that
 * stream instead of node-server's direct path. Profiled under load that was the largest single
 * cost of a robot-call acknowledgement after the database insert. A body with a Content-Length and
 * no Transfer-Encoding is judged by its length, exactly as Hono does; anything else goes to Hono's
 * middleware, which counts the bytes as they arrive.
 */
export function bodyLimit(options: BodyLimitOptions): MiddlewareHandler {
  const limited = (limit: { maxSize: number; onError: BodyLimitOptions['onError'] }): MiddlewareHandler => {
    const counting = honoBodyLimit(limit);
    return async (c, next) => {
      const length = c.req.header('content-length');
      if (length !== undefined && c.req.header('transfer-encoding') === undefined) {
        return Number.parseInt(length, 10) > limit.maxSize ? limit.onError(c) : next();
      }
      return counting(c, next);
    };
  };
  const common = limited(options);
  const perRoute = new Map(Object.entries(options.routes ?? {}).map(([path, limit]) => [path, limited(limit)]));
  return async (c, next) => {
    if (c.req.method === 'GET' || c.req.method === 'HEAD') return next();
    return (perRoute.get(c.req.path) ?? common)(c, next);
  };
}
