import type { Portal } from '../db/portals.js';

/**
 * What one viewer of dialogs may see and act on. Every dialog API (the CRM tab, the Chat workspace,
 * actions, files, live updates) decides through this, server-side, on every request:
 * - `record`: the CRM tab. Bound to the record the tab was opened for and the phones read from it
 *   with the user's own rights (international digits, no `+`): only clients with one of these
 *   phones (Chat2Desk `phone` or `client_phone`) and their dialogs.
 * - `operator`: the Chat workspace's "mine": only dialogs whose operator is this Chat2Desk operator.
 * - `all`: the Chat workspace for portal admins and the users or departments an admin lists.
 */
export type DialogScope = { kind: 'record'; entityTypeId: number; entityId: number; phones: string[] } | { kind: 'operator'; operatorId: number } | { kind: 'all' };

/** Who is asking on a dialog API, resolved from a tab token (`c2dt.`) or an app page token (`c2dp.`). */
export interface DialogViewer {
  portal: Portal;
  userId: number;
  admin: boolean;
  scope: DialogScope;
  /**
   * The Chat2Desk operator mapped to this Bitrix24 user (settings' operatorMap, then e-mail), looked up
   * at request time; undefined = the user may read but every write is refused (403, told how to get mapped).
   */
  operatorId: number | undefined;
  via: 'tab' | 'workspace';
  /** When the tab or page token the viewer came with expires (ms since the epoch): a live stream ends then. */
  expiresAt: number;
}

/** Does a client with these phones fall in a record scope? Phones are compared as international digits. */
export function phonesInScope(scope: DialogScope, clientPhones: Array<string | null | undefined>): boolean {
  if (scope.kind !== 'record') return true;
  const allowed = new Set(scope.phones);
  // Non-phone transports carry pseudo-ids such as "[tg] 807892" (docs/protocols.md C3): never a match.
  return clientPhones.some((phone) => typeof phone === 'string' && !phone.trim().startsWith('[') && allowed.has(phone.replace(/\D/g, '')));
}
