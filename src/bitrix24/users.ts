import type { Bitrix24Rest } from './rest-client.js';

export interface BitrixUser {
  ID: string;
  EMAIL?: string | null;
  NAME?: string | null;
  LAST_NAME?: string | null;
  ACTIVE?: boolean | string;
}

/**
 * Bitrix24 users looked up by e-mail or id, remembered for a while per portal. Robots that map
 * operators to users run in bulk, and a `user.get` per run would spend the portal's REST budget
 * (2 requests/s) on the same few answers.
 */
export class BitrixUsers {
  readonly #cache = new Map<string, { user: BitrixUser | undefined; until: number }>();

  constructor(
    private readonly rest: Bitrix24Rest,
    private readonly ttlMs = 10 * 60_000,
    private readonly now: () => number = Date.now,
  ) {}

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
    const hit = this.#cache.get(key);
    if (hit && hit.until > this.now()) return hit.user;
    const user = await load();
    this.#cache.set(key, { user, until: this.now() + this.ttlMs });
    if (this.#cache.size > 10_000) this.#cache.delete(this.#cache.keys().next().value!);
    return user;
  }
}
