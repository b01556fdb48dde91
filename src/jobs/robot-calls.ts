import * as v from 'valibot';
import { excerpt, type Activity } from '../activities/activity.js';
import { findActivity } from '../activities/index.js';
import { propertiesOutOfBounds, type RobotCall } from '../bitrix24/robot-call.js';
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
      const code = excerpt(call.code);
      immediateResult = { returnValues: { status: 'failed', error: `unknown robot code ${code}` }, logMessage: `Unknown robot code ${code}` };
    } else {
      // Every property is bounded before the robot's schema reads it: one value may be as large as the body.
      const problems = propertiesOutOfBounds(call.properties) ?? schemaProblems(activity, call.properties);
      if (problems) immediateResult = activity.failed(`${activity.name.en}: ${problems}`);
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
      this.deps.log.info({ memberId: portal.memberId, jobId: job.id, code: excerpt(call.code), invalid: Boolean(immediateResult) }, 'robot call accepted');
      this.deps.onQueued();
    }
    return { jobId: job.id, duplicate };
  }
}

/** The schema's complaints about the properties, each once; undefined when they are valid. */
function schemaProblems(activity: Activity, properties: Record<string, unknown>): string | undefined {
  const parsed = v.safeParse(activity.schema, properties);
  return parsed.success ? undefined : [...new Set(parsed.issues.map((issue) => issue.message))].join('; ');
}
