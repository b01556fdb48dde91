import type { Bitrix24Rest } from '../bitrix24/rest-client.js';
import { CONNECTOR_ID } from './connector.js';
import { outsideRun } from '../run-scope.js';

/**
 * The most messages one `imconnector.send.messages` carries. The docs give none (docs/protocols.md
 * B26): the 50 of a `batch` request, so one call never asks Bitrix24 for more work than the batches
 * it already takes from us.
 */
export const SEND_MESSAGES_LIMIT = 50;

/** How long the first message to an idle line waits for the others of its burst before the call goes. */
const DEFAULT_LINGER_MS = 10;

/** Bitrix24's answer had no entry for a message of the call: whether it took it is unknown. */
export class MessageEntryMissing extends Error {
  override name = 'MessageEntryMissing';
}

interface Pending {
  message: Record<string, unknown>;
  /** Called right before the call carrying the message goes (the ledger marks its claim dispatched). */
  dispatching?: () => Promise<void>;
  resolve(entry: Record<string | number, unknown>): void;
  reject(error: unknown): void;
}

interface LineQueue {
  memberId: string;
  line: number;
  waiting: Pending[];
  /** A partial call of this line is on its way (or waiting in the portal's bucket). */
  inFlight: boolean;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Inbound messages of one portal and one line share `imconnector.send.messages` calls (MESSAGES is an
 * array, and every message has its own entry in the answer: bitrix24.md §12.5, docs/protocols.md B26):
 * while a call of the line is on its way, the messages that come meanwhile wait, and the next call
 * takes them all (up to SEND_MESSAGES_LIMIT; a full call goes at once). So a burst costs a call per
 * many messages, the more so the longer the portal's bucket holds a call, and a lone message on a
 * quiet line waits only the linger. Each message settles from its own entry; a call that fails (an
 * error, a lost answer) fails every message it carried alike, so each job's ledger entry records the
 * same as for a call of its own. A conversation has one message in flight at a time (its ordering
 * key), so sharing a call never reorders a conversation.
 */
export class InboundSends {
  readonly #lines = new Map<string, LineQueue>();
  readonly #lingerMs: number;

  constructor(
    private readonly rest: Pick<Bitrix24Rest, 'call'>,
    options: { lingerMs?: number } = {},
  ) {
    this.#lingerMs = options.lingerMs ?? DEFAULT_LINGER_MS;
  }

  /**
   * Sends one message (the MESSAGES item) to the line; resolves with its entry of Bitrix24's answer.
   * `dispatching` runs right before the call that carries it goes: a message still waiting here when
   * the process dies was never sent, and its ledger claim says so (src/jobs/ledger.ts, `deferred`).
   */
  send(memberId: string, line: number, message: Record<string, unknown>, dispatching?: () => Promise<void>): Promise<Record<string | number, unknown>> {
    const key = `${memberId} ${line}`;
    let queue = this.#lines.get(key);
    if (!queue) {
      queue = { memberId, line, waiting: [], inFlight: false, timer: undefined };
      this.#lines.set(key, queue);
    }
    const entry = new Promise<Record<string | number, unknown>>((resolve, reject) => queue.waiting.push({ message, dispatching, resolve, reject }));
    const current = queue;
    while (current.waiting.length >= SEND_MESSAGES_LIMIT) void this.#call(current, current.waiting.splice(0, SEND_MESSAGES_LIMIT), false);
    if (current.waiting.length > 0 && !current.inFlight && current.timer === undefined) {
      current.timer = setTimeout(() => {
        current.timer = undefined;
        this.#flush(current);
      }, this.#lingerMs);
    }
    return entry;
  }

  /** The partial call goes with what waits; the next one when it is back. */
  #flush(queue: LineQueue): void {
    if (queue.inFlight) return;
    if (queue.waiting.length === 0) {
      if (queue.timer === undefined) this.#lines.delete(`${queue.memberId} ${queue.line}`);
      return;
    }
    void this.#call(queue, queue.waiting.splice(0, SEND_MESSAGES_LIMIT), true);
  }

  async #call(queue: LineQueue, items: Pending[], partial: boolean): Promise<void> {
    if (partial) queue.inFlight = true;
    const MESSAGES = items.map((item) => item.message);
    // What the call carries once every message was marked dispatched (a message whose mark failed, or
    // whose claim another attempt took meanwhile, is left out and fails alone: it was not sent).
    let carried = items;
    const beforeSend = async () => {
      const marks = await Promise.allSettled(items.map((item) => item.dispatching?.()));
      carried = items.filter((item, index) => {
        const mark = marks[index]!;
        if (mark.status === 'rejected') item.reject(mark.reason);
        return mark.status === 'fulfilled';
      });
      MESSAGES.splice(0, MESSAGES.length, ...carried.map((item) => item.message));
      if (carried.length === 0) throw new NothingDispatched();
    };
    try {
      // Outside the scope of the run whose message started the call: each message's own `dispatching`
      // keeps a stopped run's message out (src/jobs/ledger.ts), the others go.
      const answer = await outsideRun(() => this.rest.call(queue.memberId, 'imconnector.send.messages', { CONNECTOR: CONNECTOR_ID, LINE: queue.line, MESSAGES }, { beforeSend }));
      const entries = Object.values(record(record(record(answer).DATA).RESULT));
      carried.forEach((item, index) => {
        const entry = entries[index];
        if (entry && typeof entry === 'object') item.resolve(record(entry));
        else item.reject(new MessageEntryMissing(`Bitrix24's answer to imconnector.send.messages had no entry for message ${index + 1} of ${carried.length}`));
      });
    } catch (error) {
      for (const item of carried) item.reject(error);
    } finally {
      if (partial) {
        queue.inFlight = false;
        this.#flush(queue);
      }
    }
  }
}

/** Every message of a call failed its dispatch mark: the call is not made (each message already failed with its own reason). */
class NothingDispatched extends Error {
  override name = 'NothingDispatched';
}

const record = (value: unknown): Record<string | number, unknown> => (value && typeof value === 'object' ? (value as Record<string, unknown>) : {});
