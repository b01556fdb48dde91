import * as v from 'valibot';
import { findActivity } from '../activities/index.js';
import type { RobotCall } from '../bitrix24/robot-call.js';
import type { JobStore } from '../db/jobs.js';
import type { Portal } from '../db/portals.js';
import type { Logger } from '../log.js';

/** Bitrix24 needs our answer before its own timeout; this much is kept in hand for the report. */
const TIMEOUT_MARGIN_MS = 30_000;

export interface AcceptDeps {
  jobs: JobStore;
  robotDeadlineSeconds: number;
  onQueued(): void;
  log: Logger;
}

/**
 * Takes a verified robot call and makes it durable before Bitrix24 gets its 200. Input that is
 * already known to be wrong becomes a failed result at once, so the workflow finishes and can branch.
 */
export class RobotCalls {
  constructor(private readonly deps: AcceptDeps) {}

  accept(portal: Portal, call: RobotCall): { jobId: number; duplicate: boolean } {
    const now = Date.now();
    const limit = call.timeoutSeconds > 0 ? call.timeoutSeconds * 1000 - TIMEOUT_MARGIN_MS : Infinity;
    const deadlineAt = now + Math.max(5_000, Math.min(this.deps.robotDeadlineSeconds * 1000, limit));
    const activity = findActivity(call.code);
    let immediateResult: { returnValues: Record<string, unknown>; logMessage: string } | undefined;
    if (!activity) {
      immediateResult = { returnValues: { status: 'failed', error: `unknown robot code ${call.code}` }, logMessage: `Unknown robot code ${call.code}` };
    } else {
      const parsed = v.safeParse(activity.schema, call.properties);
      if (!parsed.success) {
        const problems = [...new Set(parsed.issues.map((issue) => issue.message))].join('; ');
        immediateResult = activity.failed(`${activity.name.en}: ${problems}`);
      }
    }
    const { job, duplicate } = this.deps.jobs.enqueue({
      memberId: portal.memberId,
      eventToken: call.eventToken,
      robotCode: call.code,
      documentId: call.documentId,
      properties: call.properties,
      deadlineAt,
      immediateResult,
    });
    if (duplicate) {
      this.deps.log.info({ memberId: portal.memberId, jobId: job.id }, 'repeated robot call acknowledged, not run again');
    } else {
      // Every accepted call is already recorded durably as its job row; a line per call at info cost
      // about 5% of an acknowledgement in the benchmark's profile (half of it pino's redaction), so
      // only calls refused for their input are logged at info.
      const level = immediateResult ? 'info' : 'debug';
      this.deps.log[level]({ memberId: portal.memberId, jobId: job.id, code: call.code, invalid: Boolean(immediateResult) }, 'robot call accepted');
      this.deps.onQueued();
    }
    return { jobId: job.id, duplicate };
  }
}
