import { Hono } from 'hono';
import type { BackgroundTasks } from '../background.js';
import { callerTokens, str } from '../bitrix24/form-body.js';
import { phpMap } from '../bitrix24/values.js';
import type { InstallerTokens } from '../bitrix24/installer-tokens.js';
import { MalformedCall, type RobotCall, readRobotCall } from '../bitrix24/robot-call.js';
import type { PortalStore } from '../db/portals.js';
import type { RobotCalls } from '../jobs/robot-calls.js';
import { readBitrixForm } from './form.js';

/**
 * The robot and activity handler: verify, persist, answer at once (Bitrix24 never retries, docs/protocols.md B7).
 * The application token only names the portal (every page of the app shows it): the job runs once
 * the portal has confirmed the call (src/jobs/confirmations.ts).
 */
export function createRobotRoute(deps: { portals: PortalStore; robotCalls: RobotCalls; installerTokens: InstallerTokens; background: BackgroundTasks }) {
  return new Hono().post('/bitrix24/robot', async (c) => {
    const fields = await readBitrixForm(c);
    const auth = phpMap(fields.auth);
    const portal = await deps.portals.authenticate(str(auth.member_id), str(auth.application_token));
    if (!portal) return c.json({ error: 'unknown portal or wrong application token' }, 401);
    let call: RobotCall;
    try {
      call = readRobotCall(fields);
    } catch (error) {
      if (error instanceof MalformedCall) return c.json({ error: error.message }, 400);
      throw error;
    }
    const tokens = callerTokens(auth);
    if (portal.status === 'reauth_required' && tokens && tokens.userId === portal.installerUserId) {
      // Kept only once the authorization server says they are the installer's (after the answer).
      deps.background.run('token recovery', () => deps.installerTokens.recover(portal, tokens), { memberId: portal.memberId });
    }
    const accepted = await deps.robotCalls.accept(portal, call);
    if (accepted.status === 'refused') return c.json({ error: accepted.error }, 422);
    if (accepted.status === 'overloaded') return c.json({ error: accepted.error }, 503, { 'retry-after': '60' });
    return c.json({ status: accepted.status, job: accepted.jobId });
  });
}
