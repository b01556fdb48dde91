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

/** The portal's answer about a token: its verdict and, for a token it accepted, the user's id. */
export interface CallerVerdict {
  verdict: AdminVerdict;
  userId: number | null;
}

/**
 * Asks the portal itself who the token's user is and whether they are its administrator (`profile`
 * → ID, ADMIN). Failures that are not a verdict are thrown. `provenToken`: the authorization server
 * has already proved the token ours and this portal's, so the call is outside the callers' share.
 */
export async function askPortalCaller(rest: Pick<Bitrix24Rest, 'callAs'>, question: AdminQuestion, options: { provenToken?: boolean } = {}): Promise<CallerVerdict> {
  try {
    const profile = await rest.callAs<{ ID?: unknown; ADMIN?: unknown }>(question.memberId, question.clientEndpoint, question.accessToken, 'profile', {}, options);
    const userId = Number(profile?.ID);
    return { verdict: isAdminProfile(profile) ? 'admin' : 'not_admin', userId: Number.isInteger(userId) && userId > 0 ? userId : null };
  } catch (error) {
    if (refusesToken(error)) return { verdict: 'bad_token', userId: null };
    throw error;
  }
}

/** askPortalCaller's verdict alone. */
export async function askPortalAdmin(rest: Pick<Bitrix24Rest, 'callAs'>, question: AdminQuestion, options: { provenToken?: boolean } = {}): Promise<AdminVerdict> {
  return (await askPortalCaller(rest, question, options)).verdict;
}
