import type { Clock } from '../clock.js';
import * as v from 'valibot';
import { OAuthError } from './errors.js';
import { isYes } from './values.js';

export type Fetch = typeof fetch;

const AppInfoSchema = v.object({
  result: v.object({
    client_id: v.string(),
    user_id: v.optional(v.union([v.string(), v.number()])),
    install: v.object({
      member_id: v.string(),
      domain: v.string(),
      client_endpoint: v.optional(v.string()),
      installed: v.optional(v.union([v.boolean(), v.string(), v.number()])),
    }),
  }),
});

export interface VerifiedInstall {
  clientId: string;
  userId: number | null;
  memberId: string;
  domain: string;
  clientEndpoint: string;
  /** False while the app is being installed (until installFinish); true for an app already in use. */
  installed: boolean;
}

const TokenSchema = v.object({
  access_token: v.string(),
  refresh_token: v.string(),
  expires: v.optional(v.union([v.number(), v.string()])),
  expires_in: v.optional(v.union([v.number(), v.string()])),
  client_endpoint: v.optional(v.string()),
  member_id: v.optional(v.string()),
});

export interface RefreshedTokens {
  accessToken: string;
  refreshToken: string;
  expiresAt: number;
  clientEndpoint: string | undefined;
  memberId: string | undefined;
}

/**
 * The Bitrix24 authorization server (B24_OAUTH_URL). The client secret goes here and nowhere else:
 * never to an address that arrived in a request (docs/protocols.md B1, B2).
 */
export class OAuthServer {
  constructor(
    private readonly baseUrl: string,
    private readonly clientId: string | undefined,
    private readonly clientSecret: string | undefined,
    private readonly clock: Clock,
    private readonly fetchImpl: Fetch = fetch,
  ) {}

  get configured(): boolean {
    return Boolean(this.clientId && this.clientSecret);
  }

  get appClientId(): string | undefined {
    return this.clientId;
  }

  /** Asks the authorization server who this access token belongs to. */
  async appInfo(accessToken: string): Promise<VerifiedInstall> {
    const url = `${this.baseUrl}/rest/app.info?${new URLSearchParams({ auth: accessToken })}`;
    const body = await this.#json(url, { method: 'GET' });
    const parsed = v.safeParse(AppInfoSchema, body);
    if (!parsed.success) throw new OAuthError('unexpected_answer', 'app.info answer has no install section', 200);
    const { result } = parsed.output;
    return {
      clientId: result.client_id,
      userId: result.user_id === undefined || result.user_id === '' ? null : Number(result.user_id),
      memberId: result.install.member_id,
      domain: result.install.domain,
      clientEndpoint: result.install.client_endpoint ?? `https://${result.install.domain}/rest/`,
      installed: isYes(result.install.installed),
    };
  }

  async refresh(refreshToken: string): Promise<RefreshedTokens> {
    if (!this.clientId || !this.clientSecret) throw new OAuthError('not_configured', 'B24_CLIENT_ID / B24_CLIENT_SECRET are not set', 0);
    const form = new URLSearchParams({
      grant_type: 'refresh_token',
      client_id: this.clientId,
      client_secret: this.clientSecret,
      refresh_token: refreshToken,
    });
    const body = await this.#json(`${this.baseUrl}/oauth/token/`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: form.toString(),
    });
    const parsed = v.safeParse(TokenSchema, body);
    if (!parsed.success) throw new OAuthError('unexpected_answer', 'token answer lacks access_token/refresh_token', 200);
    const tokens = parsed.output;
    const expiresIn = Number(tokens.expires_in ?? 3600);
    return {
      accessToken: tokens.access_token,
      refreshToken: tokens.refresh_token,
      expiresAt: tokens.expires !== undefined ? Number(tokens.expires) : Math.floor(this.clock.now() / 1000) + expiresIn,
      clientEndpoint: tokens.client_endpoint,
      memberId: tokens.member_id,
    };
  }

  async #json(url: string, init: RequestInit): Promise<unknown> {
    let response: Response;
    try {
      response = await this.fetchImpl(url, { ...init, signal: AbortSignal.timeout(20_000) });
    } catch (error) {
      throw new OAuthError('unreachable', error instanceof Error ? error.message : String(error), 0);
    }
    const text = await response.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new OAuthError('unexpected_answer', `HTTP ${response.status}, not JSON`, response.status);
    }
    if (body && typeof body === 'object' && 'error' in body) {
      const { error, error_description: description } = body as { error: unknown; error_description?: unknown };
      throw new OAuthError(String(error), typeof description === 'string' ? description : '', response.status);
    }
    if (!response.ok) throw new OAuthError('http_error', `HTTP ${response.status}`, response.status);
    return body;
  }
}
