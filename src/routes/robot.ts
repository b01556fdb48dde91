import { Hono } from 'hono';
import { callerTokens, record, str } from '../bitrix24/form-body.js';
import { MalformedCall, type RobotCall, readRobotCall } from '../bitrix24/robot-call.js';
import type { PortalStore } from '../db/portals.js';
import type { RobotCalls } from '../jobs/robot-calls.js';
import { readBitrixForm } from './form.js';

/** The robot and activity handler: verify, persist, answer at once (Bitrix24 never retries, protocols §7). */
export function createRobotRoute(deps: { portals: PortalStore; robotCalls: RobotCalls }) {
  return new Hono().post('/bitrix24/robot', async (c) => {
    const fields = await readBitrixForm(c);
    const auth = record(fields.auth);
    const portal = deps.portals.authenticate(str(auth.member_id), str(auth.application_token));
    if (!portal) return c.json({ error: 'unknown portal or wrong application token' }, 401);
    const tokens = callerTokens(auth);
    if (portal.status === 'reauth_required' && tokens && tokens.userId === portal.installerUserId) deps.portals.recoverTokens(portal.memberId, tokens);
    let call: RobotCall;
    try {
      call = readRobotCall(fields);
    } catch (error) {
      if (error instanceof MalformedCall) return c.json({ error: error.message }, 400);
      throw error;
    }
    const { jobId, duplicate } = deps.robotCalls.accept(portal, call);
    return c.json({ status: duplicate ? 'duplicate' : 'accepted', job: jobId });
  });
}
