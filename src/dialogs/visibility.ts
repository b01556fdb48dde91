import { type DialogViewer, phonesInScope } from './scope.js';

/** The parts of a Chat2Desk client a scope decides on (CachedClient and DialogSummary's client both fit). */
export interface ScopedClient {
  phone: string | null;
  clientPhone: string | null;
}

/** The part of a dialog a scope decides on (CachedDialog fits). */
export interface ScopedDialog {
  operatorId: number | null;
}

/** Outside a viewer's scope a dialog or client answers 404 "No such dialog here": its existence is not revealed. */
export const NOT_HERE = 'No such dialog here';

/**
 * May this viewer see this client? A record scope sees only clients with one of the record's phones;
 * an operator scope sees a client only through that operator's dialogs (dialogVisible), so the
 * client alone is not enough there; `all` sees every client.
 */
export function clientVisible(viewer: DialogViewer, client: ScopedClient): boolean {
  switch (viewer.scope.kind) {
    case 'record':
      return phonesInScope(viewer.scope, [client.phone, client.clientPhone]);
    case 'operator':
      return false;
    case 'all':
      return true;
  }
}

/**
 * May this viewer see this dialog (of this client, when known)? Record: the client must carry one
 * of the record's phones; a dialog whose client is unknown is not shown. Operator: the dialog's
 * operator must be the viewer's. All: always.
 */
export function dialogVisible(viewer: DialogViewer, dialog: ScopedDialog, client: ScopedClient | null | undefined): boolean {
  switch (viewer.scope.kind) {
    case 'record':
      return client != null && phonesInScope(viewer.scope, [client.phone, client.clientPhone]);
    case 'operator':
      return dialog.operatorId === viewer.scope.operatorId;
    case 'all':
      return true;
  }
}
