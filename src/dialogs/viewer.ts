import type { Context, MiddlewareHandler } from 'hono';
import { createMiddleware } from 'hono/factory';
import type { Portal, PortalStore } from '../db/portals.js';
import { PageAuthError, pageAuthRefusal, type PageAuth } from '../pages/page-auth.js';
import { PAGE_TOKEN_PREFIX, type PageClaims } from '../pages/page-token.js';
import type { DialogScope, DialogViewer } from './scope.js';
import { TAB_TOKEN_PREFIX, type TabTokens } from './tab-token.js';

/** Which dialogs a workspace user (app page token) may see; undefined = none (H4: src/dialogs/workspace.ts). */
export interface WorkspaceScopes {
  scopeOf(portal: Portal, claims: PageClaims): Promise<DialogScope | undefined>;
}

/** The Chat2Desk operator mapped to a Bitrix24 user: settings' operatorMap, then the same e-mail. */
export interface OperatorOfUser {
  operatorOf(portal: Portal, userId: number): Promise<number | undefined>;
}

export type ViewerVariables = { Variables: { viewer: DialogViewer } };

export const NO_WORKSPACE_ACCESS = "You have no Chat2Desk operator and no access to other people's dialogs; ask your administrator";
export const NOT_MAPPED = "Ask a Bitrix24 administrator to map you to a Chat2Desk operator in the app's Operators section";

/** The token of `Authorization: Bearer <token>`, if any. */
export function bearerOf(c: Context): string | undefined {
  return /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '')?.[1];
}

/**
 * Who is asking on a dialog API, and what they may see (src/dialogs/scope.ts). A tab token (`c2dt.`)
 * carries its record scope; an app page token (`c2dp.`) gets the workspace scope. Either way the
 * portal must still be the install the token was issued under. Expired or forged → 401 `{renew: true}`:
 * the page renews through its parent frame and retries. Sets `viewer`.
 */
export function dialogViewer(deps: {
  pageAuth: PageAuth;
  tabTokens: TabTokens;
  workspace: WorkspaceScopes;
  operators: OperatorOfUser;
  portals: PortalStore;
}): MiddlewareHandler<ViewerVariables> {
  return createMiddleware<ViewerVariables>(async (c, next) => {
    const bearer = bearerOf(c);
    if (!bearer) return c.json({ error: 'Send Authorization: Bearer <tab or app page token>' }, 401);
    try {
      if (bearer.startsWith(TAB_TOKEN_PREFIX)) {
        const claims = deps.tabTokens.verify(bearer);
        if (!claims) throw new PageAuthError('The tab token expired or is not ours', 401, true);
        const portal = await deps.portals.get(claims.memberId);
        if (!portal || portal.status === 'uninstalled' || portal.installedAt !== claims.generation) {
          throw new PageAuthError('The app was uninstalled or installed again since this tab opened; open it again', 401);
        }
        c.set('viewer', {
          portal,
          userId: claims.userId,
          admin: claims.admin,
          scope: claims.scope,
          operatorId: await deps.operators.operatorOf(portal, claims.userId),
          via: 'tab',
          expiresAt: claims.expiresAt,
        });
      } else if (bearer.startsWith(PAGE_TOKEN_PREFIX)) {
        const { portal, claims } = await deps.pageAuth.authorize(bearer, { admin: false, write: false });
        const scope = await deps.workspace.scopeOf(portal, claims);
        if (!scope) return c.json({ error: NO_WORKSPACE_ACCESS }, 403);
        c.set('viewer', {
          portal,
          userId: claims.userId,
          admin: claims.admin,
          scope,
          operatorId: scope.kind === 'operator' ? scope.operatorId : await deps.operators.operatorOf(portal, claims.userId),
          via: 'workspace',
          expiresAt: claims.expiresAt,
        });
      } else {
        throw new PageAuthError('The token is not a tab or app page token of ours', 401, true);
      }
    } catch (error) {
      if (error instanceof PageAuthError) return pageAuthRefusal(c, error);
      throw error;
    }
    await next();
  });
}

/** Writes act as the viewer's Chat2Desk operator: a user without one may read, and is told how to get mapped. */
export function requireMappedOperator(): MiddlewareHandler<ViewerVariables> {
  return createMiddleware<ViewerVariables>(async (c, next) => {
    if (c.get('viewer').operatorId === undefined) return c.json({ error: NOT_MAPPED, code: 'not_mapped' }, 403);
    await next();
  });
}

/**
 * Cross-site request defence for dialog writes. The bearer header is the real one (no cookies, so
 * a foreign page cannot make the browser send our token); on top, a write whose Origin header names
 * another site is refused. No Origin (same-origin GETs, scripts) is fine. `ownOrigins` adds the
 * public address when a proxy makes the request URL's origin differ from it.
 */
export function sameOriginWrites(ownOrigins: readonly string[] = []): MiddlewareHandler {
  return createMiddleware(async (c, next) => {
    const method = c.req.method;
    if (method !== 'GET' && method !== 'HEAD' && method !== 'OPTIONS') {
      const origin = c.req.header('origin');
      if (origin !== undefined && origin !== new URL(c.req.url).origin && !ownOrigins.includes(origin)) {
        return c.json({ error: 'Cross-site request refused: this API only takes writes from the app itself' }, 403);
      }
    }
    await next();
  });
}
