/**
 * Who is waiting for a slot. `work` (robot runs, their results, registration) is always served
 * before `check` (proving who a caller is), so callers we know nothing about cannot delay a
 * workflow that is waiting for its result.
 */
export type BucketPriority = 'work' | 'check';

/**
 * Where the level lives when several processes share the upstream's budget (PostgreSQL,
 * src/db/upstream-budgets.ts): one slot is taken there, or the time until one fits comes back.
 */
export interface SharedLevel {
  /** 0 when a slot was taken, else how long (ms) until one fits. */
  take(): Promise<number>;
  /** The upstream refused for load: count the shared bucket full. */
  fill(): Promise<void>;
}

/**
 * A client-side leaky bucket mirroring the server's: each request adds one, the level drains at
 * `perSecond`, and a request that would overflow `burst` waits. Waiters are served by priority,
 * then in order. With a `shared` level the slots are taken there (every process's requests count)
 * and this bucket only orders its own process's waiters; should the database fail to answer, the
 * slot is taken from this process's own level instead, so robots do not stall on it.
 */
export class LeakyBucket {
  #level = 0;
  #updatedAt: number;
  readonly #waiting: Record<BucketPriority, Array<() => void>> = { work: [], check: [] };
  #serving = false;

  constructor(
    readonly perSecond: number,
    readonly burst: number,
    // Real elapsed time, not the injected clock: the bucket paces real requests with real sleeps, as
    // the portal's own bucket drains in real time, so a test moving the clock must not drain it.
    private readonly now: () => number = () => performance.now(),
    private readonly sleep: (ms: number) => Promise<void> = delay,
    private readonly shared?: SharedLevel,
  ) {
    this.#updatedAt = now();
  }

  acquire(priority: BucketPriority = 'work'): Promise<void> {
    return new Promise((resolve) => {
      this.#waiting[priority].push(resolve);
      void this.#serve();
    });
  }

  /** The server said we are over its limit: our estimate was low (other apps share the bucket), so fill it. */
  saturate(): void {
    this.#drain();
    this.#level = this.burst;
    this.shared?.fill().catch(() => undefined);
  }

  /** One loop hands out slots; the next waiter is chosen only when a slot is free, so work that
   *  arrives while checks wait still goes first. */
  async #serve(): Promise<void> {
    if (this.#serving) return;
    this.#serving = true;
    try {
      for (;;) {
        const queue = this.#waiting.work.length > 0 ? this.#waiting.work : this.#waiting.check;
        if (queue.length === 0) return;
        if (this.shared) {
          const wait = await this.shared.take().catch(() => undefined);
          if (wait === 0) {
            // Work that arrived while the slot was being taken still goes first.
            (this.#waiting.work.length > 0 ? this.#waiting.work : this.#waiting.check).shift()!();
            continue;
          }
          if (wait !== undefined) {
            await this.sleep(wait);
            continue;
          }
        }
        this.#drain();
        if (this.#level + 1 <= this.burst) {
          this.#level += 1;
          queue.shift()!();
          continue;
        }
        await this.sleep(Math.ceil(((this.#level + 1 - this.burst) / this.perSecond) * 1000));
      }
    } finally {
      this.#serving = false;
    }
  }

  #drain(): void {
    const now = this.now();
    this.#level = Math.max(0, this.#level - ((now - this.#updatedAt) / 1000) * this.perSecond);
    this.#updatedAt = now;
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Exponential backoff with full jitter, so retries from many jobs do not arrive together. */
export function backoffMs(attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
