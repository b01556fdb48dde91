import { RobotFailure } from '../run-failure.js';
import { EffectBusyError } from './ledger.js';
import { Bitrix24Error, Bitrix24TransportError, OAuthError, PortalUnavailableError } from '../bitrix24/errors.js';
import { Chat2DeskError } from '../chat2desk/errors.js';
import type { JobRow } from '../db/jobs.js';
import { backoffMs } from '../rate-limit.js';

/**
 * A job that cannot succeed, with a message the portal admin can act on: it is not retried. Robot
 * files throw it as RobotFailure.
 */
export { RobotFailure as JobFailure };

/** What to do with a failed attempt: try again at `at`, finish as failed, or give up (settling first). */
export type FailureDecision = { action: 'retry'; at: number; message: string; expected: boolean } | { action: 'fail'; message: string } | { action: 'give_up'; message: string };

export interface FailurePolicy {
  now: number;
  /** Unknown (non-protocol) errors are retried this many times, then the job is given up. */
  maxUnexpectedAttempts: number;
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The default classification of a failed attempt: refusals that will not change by waiting fail
 * the job; load, outages and lost answers are retried with backoff until the job's deadline, then
 * it is given up.
 */
export function classifyFailure(error: unknown, job: Pick<JobRow, 'attempts' | 'deadlineAt'>, policy: FailurePolicy): FailureDecision {
  if (error instanceof RobotFailure) return { action: 'fail', message: error.message };
  if (error instanceof Chat2DeskError && !error.transient) {
    return { action: 'fail', message: error.kind === 'auth' ? `Chat2Desk rejected the API token: ${error.apiMessage}` : `Chat2Desk: ${error.apiMessage}` };
  }
  if (error instanceof PortalUnavailableError) return { action: 'fail', message: error.message };
  // Bitrix24 refusals other than load or server trouble (access, validation, not found) will not change by waiting.
  if (error instanceof Bitrix24Error && !error.refusedForLoad && error.httpStatus < 500) {
    return { action: 'fail', message: `Bitrix24 refused ${error.method}: ${error.code || 'error'}${error.description ? ` (${error.description})` : ''}` };
  }
  const message = errorMessage(error);
  // OAuthError: the authorization server failed during a refresh (a refused grant arrives as PortalUnavailableError).
  // EffectBusyError: another run holds the effect's claim (src/jobs/ledger.ts); this one tries again later.
  const expected =
    error instanceof Chat2DeskError || error instanceof Bitrix24Error || error instanceof Bitrix24TransportError || error instanceof OAuthError || error instanceof EffectBusyError;
  if (!expected && job.attempts >= policy.maxUnexpectedAttempts) return { action: 'give_up', message: `internal error after ${job.attempts} attempts: ${message}` };
  return retryWithBackoff(job, policy.now, message, expected);
}

/** Retry with backoff, or give up when the next attempt would come after the deadline. */
export function retryWithBackoff(job: Pick<JobRow, 'attempts' | 'deadlineAt'>, now: number, message: string, expected = true): FailureDecision {
  const at = now + backoffMs(job.attempts, 1_000, 5 * 60_000);
  if (at > job.deadlineAt) return { action: 'give_up', message: `gave up after ${job.attempts} attempts: ${message}` };
  return { action: 'retry', at, message, expected };
}
