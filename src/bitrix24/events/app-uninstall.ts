import type { Uninstalls } from '../uninstall.js';
import { isYes, phpMap } from '../values.js';
import type { EventHandler } from './index.js';

/**
 * ONAPPUNINSTALL carries only the application token, which is on every page of the app
 * (docs/protocols.md B0, B1): it is acted on only once the portal refuses our stored tokens.
 */
export function onAppUninstall(uninstalls: Uninstalls): EventHandler {
  return {
    event: 'ONAPPUNINSTALL',
    async handle({ portal, data }) {
      // data[CLEAN]=1: the admin chose to delete the app's data with it (docs/protocols.md B1).
      const decision = await uninstalls.request(portal.memberId, isYes(phpMap(data).CLEAN));
      if (decision === 'uninstalled') return { status: 200, body: { status: 'uninstalled' } };
      if (decision === 'not confirmed') return { status: 401, body: { error: 'The portal still accepts this app: the uninstall did not come from Bitrix24 and changed nothing' } };
      return { status: 202, body: { status: 'checking', detail: 'The portal could not be asked yet; the uninstall is recorded and will be decided when it answers' } };
    },
  };
}
