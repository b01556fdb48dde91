import type { PortalRest } from '../activities/activity.js';
import type { BatchCommandError } from '../bitrix24/batch-errors.js';
import { commandError } from '../bitrix24/crm.js';
import { BATCH_LIMIT, type BatchCommand, type BatchOutcome, type Bitrix24Rest, type CallOptions } from '../bitrix24/rest-client.js';

interface Pending {
  command: BatchCommand;
  idempotent: boolean;
  resolve(outcome: { result?: unknown; error?: BatchCommandError }): void;
  reject(error: unknown): void;
}

/** How long a command waits for others of its portal before its batch goes. */
const DEFAULT_LINGER_MS = 25;

/**
 * Closed episodes of one portal that run together share Bitrix24 `batch` requests (docs/protocols.md
 * B3: up to 50 commands, counted once by the portal's rate limit): every call an episode makes (look-ups,
 * creations, comments) waits a few milliseconds for the others', and they go as one batch. A command's
 * own error comes back as the error a single call would have thrown. A batch holding a non-idempotent
 * command (an add) is never repeated after a lost answer; the ledger settles each of its effects.
 */
export class SharedBatches {
  readonly #pending = new Map<string, Pending[]>();
  readonly #timers = new Map<string, NodeJS.Timeout>();
  #sequence = 0;

  constructor(
    private readonly rest: Bitrix24Rest,
    private readonly lingerMs = DEFAULT_LINGER_MS,
  ) {}

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
    const promises = commands.map(
      (command) =>
        new Promise<{ result?: unknown; error?: BatchCommandError }>((resolve, reject) => {
          queue.push({ command: { ...command, key: `e${++this.#sequence}` }, idempotent: options.idempotent === true, resolve, reject });
        }),
    );
    if (queue.length >= BATCH_LIMIT) this.#flush(memberId);
    else if (!this.#timers.has(memberId))
      this.#timers.set(
        memberId,
        setTimeout(() => this.#flush(memberId), this.lingerMs),
      );
    return promises;
  }

  #flush(memberId: string): void {
    const timer = this.#timers.get(memberId);
    if (timer) clearTimeout(timer);
    this.#timers.delete(memberId);
    const queue = this.#pending.get(memberId) ?? [];
    this.#pending.delete(memberId);
    for (let start = 0; start < queue.length; start += BATCH_LIMIT) void this.#send(memberId, queue.slice(start, start + BATCH_LIMIT));
  }

  async #send(memberId: string, items: Pending[]): Promise<void> {
    try {
      const outcome = await this.rest.batch(
        memberId,
        items.map((item) => item.command),
        { idempotent: items.every((item) => item.idempotent) },
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
