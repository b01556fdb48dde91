import { RobotFailure } from '../run-failure.js';
import type { Clock } from '../clock.js';
import { attemptOwner, type EffectStore } from '../db/effects.js';
import { RunStoppedError, runSignal, stillGoing } from '../run-scope.js';

/** What a claim left behind: when its first attempt began and what it meant to do. */
export interface Claim {
  attemptAt: number;
  intent: Record<string, unknown>;
}

/** The claim an act holds. */
export interface ActingClaim extends Claim {
  /**
   * For a `deferred` effect: the act is about to reach the outside world. Until it is called, a claim
   * left behind by a crash is known not to have acted (see `Effect.deferred`).
   */
  dispatching(): Promise<void>;
}

/** Written into a deferred effect's stored intent until its act dispatches; never part of what `settle` sees. */
const UNDISPATCHED = '__undispatched';

/**
 * What looking for an effect in doubt found: the effect itself, its certain absence (acting
 * again is safe), or nothing conclusive.
 */
export type Settled<T> = { found: T } | 'absent' | 'unknown';

/** How to look for an effect whose outcome is unknown. */
export interface EffectCheck<T> {
  /**
   * Unique per portal. `run:<run id>:…` makes the effect the run's own (pruned with its job,
   * src/db/effects.ts); any other key is shared by every run that names it.
   */
  key: string;
  settle(claim: Claim): Promise<Settled<T>>;
  /** The failure when looking settles nothing, e.g. "… it may already have been sent, so it is not sent again". */
  inDoubt: string;
  /** The failure when the look itself fails at give-up (the reason follows in brackets). */
  unreachable: string;
}

/** An effect that must happen at most once. */
export interface Effect<T> extends EffectCheck<T> {
  /** Stored with a new claim: what `settle` needs to recognise the effect later. */
  intent: Record<string, unknown>;
  /** Does it. Called only while holding the claim, and never again once it may have happened. */
  act(claim: ActingClaim): Promise<T>;
  /**
   * The act waits before it reaches the outside world (a message queued for a call it shares with
   * others, src/open-channels/inbound-sends.ts) and calls `claim.dispatching()` right before it does.
   * A claim taken over that never dispatched did not act: it is acted on again without settling,
   * instead of counting as in doubt. Without it, a claim means the act may have happened.
   */
  deferred?: boolean;
  /** True when an error from `act` proves nothing happened (refused before acting): the claim is given back. */
  refused(error: unknown): boolean;
  /** Said while another live run holds the claim; the run retries later. */
  busy: string;
}

/** Another run is acting on the same effect right now: this attempt ends and the job retries later. */
export class EffectBusyError extends Error {
  override name = 'EffectBusyError';
}

/** The effect's outcome cannot be told: the run fails saying what may already have happened. */
export class EffectInDoubtError extends RobotFailure {
  override name = 'EffectInDoubtError';
}

export type Recorded<T> = { state: 'done'; value: T } | { state: 'claimed' };

/** The ledger as a run sees it: bound to its portal, its job and the clock. */
export interface Ledger {
  /**
   * Claims the effect, acts, records the result; returns the result and whether it came from
   * before (recorded, or found by settling). A claim in doubt is settled before anything is done
   * again; one held by another live run throws EffectBusyError.
   */
  once<T>(effect: Effect<T>): Promise<{ value: T; earlier: boolean }>;
  /**
   * For a run being given up: the effect's result if it happened, undefined if it was never claimed
   * or surely did not happen (or another live run holds it); EffectInDoubtError if it cannot tell.
   */
  settle<T>(check: EffectCheck<T>): Promise<T | undefined>;
  /** Keys of this run's claims whose outcome is not recorded: what a run given up must settle. */
  held(): Promise<string[]>;
  /** What the ledger holds under the key, without acting or settling. */
  peek<T>(key: string): Promise<Recorded<T> | undefined>;
}

export interface LedgerBinding {
  memberId: string;
  /** The job's public id: its claims from an earlier attempt are settled, never waited for. */
  owner: string;
  /**
   * The job's attempt (jobs.attempts), written on each claim: an attempt that lost its job's lease
   * cannot take over the claim of the attempt that took the job up while it acts (src/db/effects.ts).
   * Without it every call of the owner counts as the same attempt.
   */
  attempt?: number;
  clock: Clock;
  /** How long a claim's owner may act before the claim counts as abandoned (longer than any single act). */
  leaseMs?: number;
}

/**
 * Longer than any act, and than a job's lease (`JOB_LEASE_SECONDS`, src/jobs/dispatcher.ts): a later
 * attempt of the same job takes an earlier one's claim whatever this says (src/db/effects.ts
 * `takeOver`), so a process killed mid-act delays its job's taker by the job's lease only.
 */
const DEFAULT_LEASE_MS = 10 * 60_000;

const parse = (json: string | null): Record<string, unknown> => (json ? (JSON.parse(json) as Record<string, unknown>) : {});

/** A stored claim as `settle` sees it, and whether its deferred act never dispatched. */
function claimOf(row: { attemptAt: number; intent: string | null }): { claim: Claim; undispatched: boolean } {
  const { [UNDISPATCHED]: undispatched, ...intent } = parse(row.intent);
  return { claim: { attemptAt: row.attemptAt, intent }, undispatched: undispatched === true };
}

export function bindLedger(store: EffectStore, binding: LedgerBinding): Ledger {
  const job = { id: binding.owner, attempt: binding.attempt ?? 0 };
  const { memberId } = binding;
  const owner = binding.attempt === undefined ? binding.owner : attemptOwner(binding.owner, binding.attempt);
  const leaseMs = binding.leaseMs ?? DEFAULT_LEASE_MS;

  async function act<T>(effect: Effect<T>, claim: Claim): Promise<T> {
    let value: T;
    // Read now: a deferred act may be dispatched from work shared with other runs, outside this run's scope.
    const run = runSignal();
    const dispatching = async () => {
      // A run stopped while its act waited leaves the act to the attempt taking its job over.
      stillGoing(run);
      if (effect.deferred && !(await store.dispatched(memberId, effect.key, owner, JSON.stringify(effect.intent)))) {
        // Another attempt took the claim over while this act waited, saw it undispatched and acts itself.
        throw new EffectBusyError(effect.busy);
      }
    };
    try {
      value = await effect.act({ ...claim, dispatching });
    } catch (error) {
      // The run was stopped and its job went to another process, whose attempt settles the claim
      // (src/run-scope.ts): the claim is left as it is, and the store, maybe closed, untouched.
      if (error instanceof RunStoppedError) throw error;
      if (effect.refused(error)) await store.release(memberId, effect.key, owner);
      else await store.markInDoubt(memberId, effect.key, owner);
      throw error;
    }
    // False only if this run's lease ran out while acting and another run took the claim; the act
    // happened all the same, and that run settles it by finding it.
    await store.record(memberId, effect.key, owner, JSON.stringify(value));
    return value;
  }

  /** Looks for the effect of a claim this run took over; a failed look leaves the claim in doubt for the next attempt. */
  async function look<T>(check: EffectCheck<T>, claim: Claim, undispatched: boolean): Promise<Settled<T>> {
    if (undispatched) return 'absent';
    try {
      return await check.settle(claim);
    } catch (error) {
      await store.markInDoubt(memberId, check.key, owner);
      throw error;
    }
  }

  return {
    async once<T>(effect: Effect<T>) {
      // Two passes: a claim given back or taken between our read and our write is read again once.
      for (let pass = 0; pass < 2; pass++) {
        const row = await store.find(memberId, effect.key);
        if (row?.state === 'done') return { value: parse(row.result) as T, earlier: true };
        if (!row) {
          const stored = effect.deferred ? { ...effect.intent, [UNDISPATCHED]: true } : effect.intent;
          if (await store.claim(memberId, effect.key, owner, leaseMs, JSON.stringify(stored))) {
            return { value: await act(effect, { attemptAt: binding.clock.now(), intent: effect.intent }), earlier: false };
          }
          continue;
        }
        const taken = await store.takeOver(memberId, effect.key, owner, leaseMs, job);
        if (!taken) {
          if ((await store.find(memberId, effect.key))?.state === 'claimed') throw new EffectBusyError(effect.busy);
          continue;
        }
        const { claim, undispatched } = claimOf(taken);
        const settled = await look(effect, claim, undispatched);
        if (settled === 'unknown') {
          await store.markInDoubt(memberId, effect.key, owner);
          throw new EffectInDoubtError(effect.inDoubt);
        }
        if (settled !== 'absent') {
          await store.record(memberId, effect.key, owner, JSON.stringify(settled.found));
          return { value: settled.found, earlier: true };
        }
        // Looked for and surely absent: acting now is the first time it happens.
        return { value: await act(effect, claim), earlier: false };
      }
      throw new EffectBusyError(effect.busy);
    },

    async settle<T>(check: EffectCheck<T>) {
      const row = await store.find(memberId, check.key);
      if (!row) return undefined;
      if (row.state === 'done') return parse(row.result) as T;
      const taken = await store.takeOver(memberId, check.key, owner, leaseMs, job);
      if (!taken) return undefined;
      let settled: Settled<T>;
      try {
        const { claim, undispatched } = claimOf(taken);
        settled = await look(check, claim, undispatched);
      } catch (error) {
        throw new EffectInDoubtError(`${check.unreachable} (${error instanceof Error ? error.message : String(error)})`);
      }
      if (settled === 'unknown') {
        await store.markInDoubt(memberId, check.key, owner);
        throw new EffectInDoubtError(check.inDoubt);
      }
      if (settled === 'absent') {
        await store.release(memberId, check.key, owner);
        return undefined;
      }
      await store.record(memberId, check.key, owner, JSON.stringify(settled.found));
      return settled.found;
    },

    held: () => store.heldBy(memberId, job.id),

    async peek<T>(key: string) {
      const row = await store.find(memberId, key);
      if (!row) return undefined;
      return row.state === 'done' ? { state: 'done', value: parse(row.result) as T } : { state: 'claimed' };
    },
  };
}
