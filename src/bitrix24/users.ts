import { LRUCache } from 'lru-cache';
import type { Clock } from '../clock.js';
import type { Bitrix24Rest } from './rest-client.js';

export interface BitrixUser {
  ID: string;
  EMAIL?: string | null;
  NAME?: string | null;
  LAST_NAME?: string | null;
  ACTIVE?: boolean | string;
  /** The user's department ids (numbers; some portals send strings). */
  UF_DEPARTMENT?: Array<number | string> | null;
}

export interface BitrixUsersOptions {
  /** How long an answer, a missing user included, is trusted; 10 minutes by default. */
  ttlMs?: number;
  /** How many answers are kept, over every portal; the least recently used go first. */
  max?: number;
}

/** An answer to remember: the cache cannot hold `undefined`, and "no such user" is an answer too. */
interface Lookup {
  user: BitrixUser | undefined;
}

/**
 * Bitrix24 users looked up by e-mail or id, remembered for a while per portal. Robots that map
 * operators to users run in bulk, and a `user.get` per run would spend the portal's REST budget
 * (2 requests/s) on the same few answers: runs that need the same user at once share one request.
 */
export class BitrixUsers {
  readonly #cache: LRUCache<string, Lookup, () => Promise<BitrixUser | undefined>>;

  constructor(
    private readonly rest: Bitrix24Rest,
    clock: Clock,
    options: BitrixUsersOptions = {},
  ) {
    this.#cache = new LRUCache({
      // Answers age by the injected clock, so a test moves time instead of waiting out the TTL.
      perf: clock,
      // Read the clock on every check rather than once a millisecond: a clock moved forward counts at once.
      ttlResolution: 0,
      max: options.max ?? 10_000,
      ttl: options.ttlMs ?? 10 * 60_000,
      // A lookup evicted while in flight still answers the runs waiting for it.
      ignoreFetchAbort: true,
      fetchMethod: async (_key, _stale, { context: load }) => ({ user: await load() }),
    });
  }

  byEmail(memberId: string, email: string): Promise<BitrixUser | undefined> {
    const normalized = email.trim().toLowerCase();
    return this.#lookup(`${memberId} email ${normalized}`, async () => {
      const users = await this.rest.call<BitrixUser[]>(memberId, 'user.get', { FILTER: { EMAIL: email.trim() } }, { idempotent: true });
      return users.find((user) => user.EMAIL?.trim().toLowerCase() === normalized);
    });
  }

  byId(memberId: string, id: number): Promise<BitrixUser | undefined> {
    return this.#lookup(`${memberId} id ${id}`, async () => {
      const users = await this.rest.call<BitrixUser[]>(memberId, 'user.get', { FILTER: { ID: id } }, { idempotent: true });
      return users.find((user) => Number(user.ID) === id);
    });
  }

  async #lookup(key: string, load: () => Promise<BitrixUser | undefined>): Promise<BitrixUser | undefined> {
    return (await this.#cache.fetch(key, { context: load }))?.user;
  }
}
