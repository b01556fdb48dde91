/**
 * Bitrix24 error codes mapped to types, in one place (docs/protocols.md B2, B3 system errors).
 */
export class Bitrix24Error extends Error {
  override name = 'Bitrix24Error';
  constructor(
    readonly method: string,
    readonly code: string,
    readonly description: string,
    readonly httpStatus: number,
  ) {
    super(`Bitrix24 ${method}: ${code || 'error'}${description ? ` (${description})` : ''}`);
  }

  /** Refused before running (rate or operating limit): safe to repeat for any method. */
  get refusedForLoad(): boolean {
    return this.code === 'QUERY_LIMIT_EXCEEDED' || this.code === 'OPERATION_TIME_LIMIT' || this.code === 'OVERLOAD_LIMIT';
  }

  get expiredToken(): boolean {
    return this.code === 'expired_token';
  }

  get accessDenied(): boolean {
    return this.code === 'ACCESS_DENIED' || this.code === 'user_access_error' || this.code === 'insufficient_scope';
  }
}

/** The portal cannot be called: not installed, uninstalled, or its refresh token was rejected. */
export class PortalUnavailableError extends Error {
  override name = 'PortalUnavailableError';
  constructor(
    readonly memberId: string,
    readonly reason: 'not_installed' | 'reauth_required',
    /** The OAuth error (invalid_grant, invalid_client) that refused the portal's refresh during this very call, if one did. */
    readonly refreshRefusedWith?: string,
  ) {
    super(
      reason === 'reauth_required'
        ? `Portal ${memberId}: Bitrix24 rejected the stored refresh token; reinstall the app to authorise it again`
        : `Portal ${memberId} has not installed the app (or uninstalled it)`,
    );
  }
}

/** Errors of the OAuth server (docs/protocols.md B2): invalid_grant, invalid_client, ... */
export class OAuthError extends Error {
  override name = 'OAuthError';
  constructor(
    readonly code: string,
    readonly description: string,
    readonly httpStatus: number,
  ) {
    super(`Bitrix24 OAuth: ${code}${description ? ` (${description})` : ''}`);
  }
}

/**
 * The network failed or the answer was not JSON. `notSent`: the failure came before the request
 * could reach Bitrix24 (no connection, no address, no TLS session: src/http-request.ts
 * `failedBeforeSending`), so the call surely did not run; otherwise it may or may not have run.
 */
export class Bitrix24TransportError extends Error {
  override name = 'Bitrix24TransportError';
  constructor(
    readonly method: string,
    cause: unknown,
    readonly notSent = false,
  ) {
    super(`Bitrix24 ${method}: ${notSent ? 'not reached' : 'no usable answer'} (${cause instanceof Error ? cause.message : String(cause)})`, { cause });
  }
}

/**
 * Whether an error of a Bitrix24 REST call proves the method did not run, so repeating it later
 * cannot make its effect twice (docs/protocols.md B24): the portal was never reached, the token
 * could not be refreshed (the call is only sent after), Bitrix24 refused it for load or an expired
 * token, or answered a 4xx with its JSON error (a refusal). A 5xx, a timeout waiting for the answer,
 * a connection cut after the request went out, or a page that is not Bitrix24's JSON prove nothing.
 */
export function certainlyNotRun(error: unknown): boolean {
  if (error instanceof Bitrix24TransportError) return error.notSent;
  if (error instanceof Bitrix24Error) return error.refusedForLoad || error.expiredToken || (error.httpStatus >= 400 && error.httpStatus < 500);
  return error instanceof OAuthError || error instanceof PortalUnavailableError;
}
