import qs from 'qs';

/**
 * The one parser for what Bitrix24 posts: PHP http_build_query bodies with nested keys such as
 * `auth[access_token]` and `properties[phone][0]`, every value a string (docs/protocols.md B0).
 */
export function parseFormBody(raw: string): Record<string, unknown> {
  return qs.parse(raw, { depth: 8, arrayLimit: 200, parameterLimit: 2000, allowPrototypes: false, charset: 'utf-8' }) as Record<string, unknown>;
}

export function str(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

/** The OAuth pair an incoming call carries in `auth[...]` (events, robot calls; docs/protocols.md B1, B7). */
export interface CallerTokens {
  userId: number | null;
  accessToken: string;
  refreshToken: string;
  /** Unix seconds, when the call says (`expires`). */
  expiresAt: number | undefined;
  /** The pair's lifetime (`expires_in`, else an hour): its expiry is reckoned from it when `expires` is missing. */
  expiresInSeconds: number;
}

export function callerTokens(auth: Record<string, unknown>): CallerTokens | undefined {
  const accessToken = str(auth.access_token);
  const refreshToken = str(auth.refresh_token);
  if (!accessToken || !refreshToken) return undefined;
  return {
    userId: str(auth.user_id) ? Number(str(auth.user_id)) : null,
    accessToken,
    refreshToken,
    expiresAt: Number(str(auth.expires)) || undefined,
    expiresInSeconds: Number(str(auth.expires_in)) || 3600,
  };
}
