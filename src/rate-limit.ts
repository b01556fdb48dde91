/**
 * A client-side leaky bucket mirroring the server's: each request adds one, the level drains at
 * `perSecond`, and a request that would overflow `burst` waits. Waiters are served in order.
 */
export class LeakyBucket {
  #level = 0;
  #updatedAt: number;
  #tail: Promise<void> = Promise.resolve();

  constructor(
    readonly perSecond: number,
    readonly burst: number,
    private readonly now: () => number = Date.now,
    private readonly sleep: (ms: number) => Promise<void> = delay,
  ) {
    this.#updatedAt = now();
  }

  acquire(): Promise<void> {
    const turn = this.#tail.then(() => this.#take());
    this.#tail = turn.catch(() => undefined);
    return turn;
  }

  /** The server said we are over its limit: our estimate was low (other apps share the bucket), so fill it. */
  saturate(): void {
    this.#drain();
    this.#level = this.burst;
  }

  async #take(): Promise<void> {
    for (;;) {
      this.#drain();
      if (this.#level + 1 <= this.burst) {
        this.#level += 1;
        return;
      }
      await this.sleep(Math.ceil(((this.#level + 1 - this.burst) / this.perSecond) * 1000));
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
