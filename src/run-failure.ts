/**
 * A run that cannot succeed, with a message the portal admin can act on: it is not retried. Robots
 * throw it, and the pipeline's failure policy (src/jobs/failures.ts) and the exactly-once ledger
 * (src/jobs/ledger.ts) read it, so it sits below both.
 */
export class RobotFailure extends Error {
  override name = 'RobotFailure';
}
