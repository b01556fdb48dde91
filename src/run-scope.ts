import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * Which run of a job the code now working works for, and whether that run may still reach the
 * outside world. The dispatcher (src/jobs/dispatcher.ts) runs each job within its own scope and
 * stops it when the job leaves this process while the run goes on: handed back at stop
 * (`Dispatcher.handBack`) or its lease lost. Another process then takes the job up and settles its
 * effects by looking for them (src/jobs/ledger.ts); a request this run sent after that would do the
 * effect a second time (docs/multi-process.md). The protocol clients, which sit below the jobs,
 * ask `stillGoing` after every gate and queue, right before the request is written.
 */
const current = new AsyncLocalStorage<AbortSignal>();

/** The run was stopped in this process before the request went: nothing was sent. */
export class RunStoppedError extends Error {
  override name = 'RunStoppedError';
  constructor() {
    super('the run was stopped in this process (its job went to another): the request was not sent');
  }
}

/** Runs `work` for the run that `signal` stops. */
export function withinRun<T>(signal: AbortSignal, work: () => Promise<T>): Promise<T> {
  return current.run(signal, work);
}

/**
 * Runs `work` for no run: work shared by several runs (one call carrying the messages of many) is
 * not stopped with whichever run happened to start it; each run guards its own part.
 */
export function outsideRun<T>(work: () => Promise<T>): Promise<T> {
  return current.exit(work);
}

/**
 * The stop signal of the run the caller works for; undefined outside a run (a route, a report).
 * Read it before waiting at a gate: what runs after the gate may not be in the caller's scope.
 */
export function runSignal(): AbortSignal | undefined {
  return current.getStore();
}

/** Throws RunStoppedError if the run was stopped. Called synchronously right before a request is written. */
export function stillGoing(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new RunStoppedError();
}
