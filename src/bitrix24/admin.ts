import { Bitrix24Error } from './errors.js';
import type { Bitrix24Rest } from './rest-client.js';
import { isYes } from './values.js';

/** Who is asking, in the portal's words: the portal, its REST endpoint and the caller's own token. */
export interface AdminQuestion {
  memberId: string;
  clientEndpoint: string;
  accessToken: string;
}

/** `bad_token`: the portal refused the token itself (expired, foreign, not a user's). */
export type AdminVerdict = 'admin' | 'not_admin' | 'bad_token';

/** `profile` answers ADMIN as true, `Y` or `1` for a portal administrator (docs/protocols.md B0). */
export function isAdminProfile(profile: { ADMIN?: unknown } | null | undefined): boolean {
  return isYes(profile?.ADMIN);
}

/**
 * Whether a failed `profile` call says the token is no good. A refusal for load, a 5xx or the
 * network says nothing about the token, so it is not a verdict.
 */
export function refusesToken(error: unknown): boolean {
  return error instanceof Bitrix24Error && error.httpStatus < 500 && !error.refusedForLoad;
}

/**
 * Asks the portal itself whether the token's user is its administrator (`profile` → ADMIN).
 * Failures that are not a verdict are thrown. `provenToken`: the authorization server has already
 * proved the token ours and this portal's, so the call is outside the callers' share.
 */
export async function askPortalAdmin(rest: Pick<Bitrix24Rest, 'callAs'>, question: AdminQuestion, options: { provenToken?: boolean } = {}): Promise<AdminVerdict> {
  try {
    const profile = await rest.callAs<{ ADMIN?: unknown }>(question.memberId, question.clientEndpoint, question.accessToken, 'profile', {}, options);
    return isAdminProfile(profile) ? 'admin' : 'not_admin';
  } catch (error) {
    if (refusesToken(error)) return 'bad_token';
    throw error;
  }
}
