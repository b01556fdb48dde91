/**
 * What one command's error inside a `batch` answer means (docs/protocols.md B3): the batch
 * itself succeeded, so these never throw; each caller decides per command from the verdict here.
 */

/** One entry of a batch answer's `result_error`, keyed like the command. */
export interface BatchCommandError {
  error: string;
  error_description: string;
}

/** Per-command errors that clear by waiting (docs/protocols.md B3 system errors). */
const TRANSIENT = new Set(['QUERY_LIMIT_EXCEEDED', 'OPERATION_TIME_LIMIT', 'OVERLOAD_LIMIT', 'INTERNAL_SERVER_ERROR', 'ERROR_UNEXPECTED_ANSWER', 'expired_token']);

/**
 * - `transient`: repeat the command later, it may pass;
 * - `access_denied`: for bizproc.activity.log and bizproc.event.send, the event token is not one
 *   the portal waits for (forged, or the workflow no longer waits);
 * - `already_done`: registering a robot, activity or event that is there already;
 * - `refused`: anything else; repeating it will not change the answer.
 */
export type CommandErrorKind = 'transient' | 'access_denied' | 'already_done' | 'refused';

export function commandErrorKind(error: BatchCommandError): CommandErrorKind {
  if (TRANSIENT.has(error.error)) return 'transient';
  if (error.error === 'ACCESS_DENIED') return 'access_denied';
  // bizproc.*.add answers the code (docs/protocols.md B5); a repeated event.bind only says it in the text (B11).
  if (error.error === 'ERROR_ACTIVITY_ALREADY_INSTALLED' || /already binded/i.test(error.error_description)) return 'already_done';
  return 'refused';
}

/** The error as a log or a workflow reads it: code and description. */
export function describeCommandError(error: BatchCommandError): string {
  return `${error.error} ${error.error_description}`.trim();
}
