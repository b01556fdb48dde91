import type { AppUpdates } from '../app-updates.js';
import { callerTokens } from '../form-body.js';
import type { EventHandler } from './index.js';

/** ONAPPUPDATE: an update drops the app's handlers (docs/protocols.md B1); a durable re-registration is queued. */
export function onAppUpdate(appUpdates: AppUpdates): EventHandler {
  return {
    event: 'ONAPPUPDATE',
    async handle({ portal, auth }) {
      await appUpdates.updated(portal, callerTokens(auth));
      return { status: 200, body: { status: 'updating' } };
    },
  };
}
