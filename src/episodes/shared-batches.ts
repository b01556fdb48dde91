import type { PortalRest } from '../activities/activity.js';
import type { BatchCommandError } from '../bitrix24/batch-errors.js';
import { commandError } from '../bitrix24/crm.js';
import { BATCH_LIMIT, type BatchCommand, type BatchOutcome, type Bitrix24Rest, type CallOptions } from '../bitrix24/rest-client.js';
import { outsideRun, RunStoppedError, runSignal } from '../run-scope.js';

interface Pending {
  command: BatchCommand;
  idempotent: boolean;
  /** The run the command is for (src/run-scope.ts): stopped while it waits, it stays out of the batch. */
  run: AbortSignal | undefined;
  resolve(outcome: { result?: unknown; error?: BatchCommandError }): void;
  reject(error: unknown): void;
}

/** How long a command waits by default for others of its portal before its batch goes. */
const DEFAULT_LINGER_MS = 25;

export interface SharedBatchesOptions {
  /** How long a command waits for others of its portal before its batch goes. */
  lingerMs?: number;
  /**
   * The least time between two partial batches of a portal, so that they take at most a share of
   * its steady rate (src/server.ts: half). A batch of 50 goes at once.
   */
  partialEveryMs?: number;
}

/**
 * Closed episodes of one portal that run together share Bitrix24 `batch` requests (docs/protocols.md
 * B3: up to 50 commands, counted once by the portal's rate limit, B4): every call an episode makes
 * (look-ups, creations, comments, the trigger it fires) waits for the others', and they go as one
 * batch. A full batch goes at once; a partial one after the linger, and no sooner than its share of
 * the portal's steady rate allows after the last partial one, and never while another partial one is on its way
 * (or waiting in the portal's bucket). So a flood sends full batches instead of spending the portal's
 * burst on a few commands each, the bucket never holds more than one partial batch of ours ahead
 * of robot work, and a lone call on a quiet portal still goes after the linger. A command's own
 * error comes back as the error a single call would have thrown. A batch holding a non-idempotent
 * command (an add) is never repeated after a lost answer; the ledger settles each of its effects.
 */
export class SharedBatches {
  readonly #pending = new Map<string, Pending[]>();
  readonly #timers = new Map<string, NodeJS.Timeout>();
  /** Portals with a partial batch on its way, and whether the next one's time came meanwhile. */
  readonly #inFlight = new Map<string, { due: boolean }>();
  /** When each portal's last partial batch went (performance.now()). */
  readonly #lastPartialAt = new Map<string, number>();
  readonly #lingerMs: number;
  readonly #partialEveryMs: number;
  #sequence = 0;

  constructor(
    private readonly rest: Bitrix24Rest,
    options: SharedBatchesOptions = {},
    // Real elapsed time, as the portal's bucket drains in real time (src/rate-limit.ts LeakyBucket):
    // this paces real requests with real timers, and a test moving the clock must not speed it up.
    private readonly now: () => number = () => performance.now(),
  ) {
    this.#lingerMs = options.lingerMs ?? DEFAULT_LINGER_MS;
    this.#partialEveryMs = options.partialEveryMs ?? 0;
  }

  /** The portal's REST as a run sees it, with every call going through the shared batches. */
  forPortal(memberId: string): PortalRest {
    return {
      call: async <T>(method: string, params: Record<string, unknown> = {}, options: CallOptions = {}) => {
        const [outcome] = await Promise.all(this.#enqueue(memberId, [{ key: 'one', method, params }], options));
        if (outcome?.error) throw commandError(method, outcome.error);
        return outcome?.result as T;
      },
      batch: async (commands, options = {}) => {
        const outcomes = await Promise.all(this.#enqueue(memberId, commands, options));
        const batch: BatchOutcome = { results: {}, errors: {} };
        commands.forEach((command, index) => {
          const outcome = outcomes[index];
          if (outcome?.error) batch.errors[command.key] = outcome.error;
          else batch.results[command.key] = outcome?.result;
        });
        return batch;
      },
    };
  }

  #enqueue(memberId: string, commands: BatchCommand[], options: CallOptions): Array<Promise<{ result?: unknown; error?: BatchCommandError }>> {
    const queue = this.#pending.get(memberId) ?? [];
    this.#pending.set(memberId, queue);
    const run = runSignal();
    const promises = commands.map(
      (command) =>
        new Promise<{ result?: unknown; error?: BatchCommandError }>((resolve, reject) => {
          queue.push({ command: { ...command, key: `e${++this.#sequence}` }, idempotent: options.idempotent === true, run, resolve, reject });
        }),
    );
    while (queue.length >= BATCH_LIMIT) void this.#send(memberId, queue.splice(0, BATCH_LIMIT));
    if (queue.length > 0 && !this.#timers.has(memberId)) this.#schedule(memberId, this.#lingerMs);
    return promises;
  }

  #schedule(memberId: string, lingerMs: number): void {
    const paced = (this.#lastPartialAt.get(memberId) ?? Number.NEGATIVE_INFINITY) + this.#partialEveryMs - this.now();
    this.#timers.set(
      memberId,
      setTimeout(() => this.#timeCame(memberId), Math.max(lingerMs, paced)),
    );
  }

  /** A partial batch's time came: it goes, or goes next if one is on its way, or waits for the pace. */
  #timeCame(memberId: string): void {
    this.#timers.delete(memberId);
    const inFlight = this.#inFlight.get(memberId);
    if (inFlight) inFlight.due = true;
    else if ((this.#lastPartialAt.get(memberId) ?? Number.NEGATIVE_INFINITY) + this.#partialEveryMs > this.now()) this.#schedule(memberId, 0);
    else this.#flushPartial(memberId);
  }

  #flushPartial(memberId: string): void {
    const queue = this.#pending.get(memberId) ?? [];
    this.#pending.delete(memberId);
    if (queue.length === 0) return;
    this.#lastPartialAt.set(memberId, this.now());
    const inFlight = { due: false };
    this.#inFlight.set(memberId, inFlight);
    void this.#send(memberId, queue).finally(() => {
      this.#inFlight.delete(memberId);
      if (inFlight.due) this.#flushPartial(memberId);
    });
  }

  async #send(memberId: string, waiting: Pending[]): Promise<void> {
    // A command of a run stopped while it waited stays out: its job went to another process, which
    // settles its effect (src/run-scope.ts). The others go.
    const items = waiting.filter((item) => {
      if (item.run?.aborted) item.reject(new RunStoppedError());
      return !item.run?.aborted;
    });
    if (items.length === 0) return;
    try {
      // Outside the scope of whichever run started the batch: it carries the commands of several.
      const outcome = await outsideRun(() =>
        this.rest.batch(
          memberId,
          items.map((item) => item.command),
          { idempotent: items.every((item) => item.idempotent) },
        ),
      );
      for (const item of items) {
        const error = outcome.errors[item.command.key];
        item.resolve(error ? { error } : { result: outcome.results[item.command.key] });
      }
    } catch (error) {
      for (const item of items) item.reject(error);
    }
  }
}
