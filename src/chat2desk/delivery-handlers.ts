import type { HeldWake, NewJob } from '../db/jobs.js';
import { InvalidJobInput } from '../jobs/pipeline.js';
import type { StoredSettings } from '../db/portals.js';

/** Everything about a job but its kind, portal and input (the same as src/jobs/pipeline.ts `JobOptions`). */
type JobOptions = Omit<NewJob, 'kind' | 'memberId' | 'input' | 'awaitsConfirmation'>;

/** A Chat2Desk webhook delivery from a known portal, as the handlers see it. */
export interface Chat2DeskDelivery {
  memberId: string;
  /** The Chat2Desk account the webhook was registered for (src/db/webhooks.ts `accountKey`): message ids are unique per account. */
  accountKey: string;
  /** Chat2Desk's `hook_type` (docs/protocols.md C7). */
  hookType: string;
  /** The delivery key (src/chat2desk/webhook-events.ts `deliveryKey`): a Chat2Desk retry has the same one. */
  deliveryKey: string;
  event: Record<string, unknown>;
  /** The portal's stored settings when the delivery arrived (what a handler may depend on, e.g. a feature switch). */
  settings: StoredSettings;
}

/**
 * A job a delivery starts. By default its dedup key is derived from the delivery key, so a retried
 * delivery cannot start it twice. A handler whose job is named by something the event carries
 * (an episode's request id, which close_dialog and close_request both name) sets `dedupKey`
 * itself, so two deliveries about the same thing start one job.
 */
export interface DeliveryJob {
  kind: string;
  input: unknown;
  options: Omit<JobOptions, 'dedupKey'>;
  dedupKey?: string;
}

/** What one hook type starts; a handler that has nothing to do for this delivery returns []. */
export interface DeliveryHandler {
  hookType: string;
  jobs(delivery: Chat2DeskDelivery): DeliveryJob[];
  /**
   * Held jobs this delivery may release (a tag added, an operator joined): made due now in the
   * transaction that stores the delivery (src/db/jobs.ts `wakeHeldJobs`), after its cache
   * invalidation, so they run at once and read fresh data.
   */
  wakes?(delivery: Chat2DeskDelivery): Array<Omit<HeldWake, 'memberId'>>;
}

/** Builds the job a store writes, its input checked against its kind (src/jobs/pipeline.ts `Pipeline.job`). */
export type JobBuilder = (kind: string, memberId: string, input: unknown, options: JobOptions) => NewJob;

/**
 * The outbox of Chat2Desk deliveries: the jobs each hook type starts, stored by
 * `WebhookStore.recordDelivery` in the transaction that stores the delivery, so an acknowledged
 * delivery never loses its work and a retried one starts nothing again. Several handlers may
 * share a hook type; a hook type without one only updates the cache.
 */
export class DeliveryHandlers {
  readonly #byHookType = new Map<string, DeliveryHandler[]>();

  constructor(
    handlers: DeliveryHandler[],
    private readonly build: JobBuilder,
  ) {
    for (const handler of handlers) this.#byHookType.set(handler.hookType, [...(this.#byHookType.get(handler.hookType) ?? []), handler]);
  }

  /**
   * The delivery's jobs, validated. A job whose input its kind refuses is left out and named in
   * `refused` (the handlers are pure: a retry of the delivery would be refused the same way), so the
   * delivery's other jobs are not lost with it.
   */
  jobsFor(delivery: Chat2DeskDelivery): { jobs: NewJob[]; refused: string[] } {
    const wanted = (this.#byHookType.get(delivery.hookType) ?? []).flatMap((handler) => handler.jobs(delivery));
    const jobs: NewJob[] = [];
    const refused: string[] = [];
    // The position keeps two jobs of one delivery apart; it is stable because handlers are pure.
    for (const [position, job] of wanted.entries()) {
      try {
        jobs.push(this.build(job.kind, delivery.memberId, job.input, { ...job.options, dedupKey: job.dedupKey ?? `chat2desk:${delivery.deliveryKey}#${position}` }));
      } catch (error) {
        if (!(error instanceof InvalidJobInput)) throw error;
        refused.push(error.message);
      }
    }
    return { jobs, refused };
  }

  /** The held jobs the delivery may release. */
  wakesFor(delivery: Chat2DeskDelivery): HeldWake[] {
    return (this.#byHookType.get(delivery.hookType) ?? []).flatMap((handler) => handler.wakes?.(delivery) ?? []).map((wake) => ({ ...wake, memberId: delivery.memberId }));
  }
}
