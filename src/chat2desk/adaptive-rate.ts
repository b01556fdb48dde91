import type { LearnedRate } from '../db/chat2desk-rates.js';
import type { PaceState } from '../db/upstream-budgets.js';
import { delay } from '../rate-limit.js';

/**
 * Chat2Desk publishes no rate limit (docs/protocols.md C1 Rate limits), so each account's rate
 * is learned from its answers instead of trusted to a guess. Requests are paced at the current rate
 * (a leaky bucket with a twentieth of a second of burst), and:
 *
 *  - A refusal for load (429 / "Number of API requests exceeded") estimates Chat2Desk's limit as what
 *    it accepted from us in the last second, and cuts the rate to 95% of that: an overshoot is
 *    corrected in one step. Nothing more is sent until the oldest of those accepted requests is a
 *    second old, and refusals within a second of a cut belong to the same overshoot.
 *  - While requests queue for the pace and Chat2Desk answers, the rate grows, by how far it is from
 *    the limit learned at the last refusal: ×e⁴ a second while Chat2Desk never refused, +65% a second
 *    below 95% of the limit, 1% a second around it (one refusal per ~5 s at the limit), 5% a second
 *    once 10% above it without a refusal (the limit was raised, or misjudged).
 *  - The rate stays within [floor, ceiling], and what was learned is handed to `onLearned` at most
 *    every `saveEveryMs`, to be stored per account and resumed after a restart.
 */
export interface AdaptiveRateOptions {
  /** Where to start: what was learned before, else the configured rate with no limit known. */
  start: LearnedRate;
  floorPerMinute: number;
  ceilingPerMinute: number;
  onLearned?: (learned: LearnedRate) => void;
  saveEveryMs?: number;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** Several processes share the account (PostgreSQL): the pace and what is learned live in the database. */
  shared?: SharedPace;
}

/**
 * The account's pace kept where every process sees it (src/db/upstream-budgets.ts Chat2DeskPaceStore):
 * a take hands over what this process learned since its last take (rate growth, accepted answers)
 * and gets the shared rate back, so a cut by one process slows all of them at their next request.
 */
export interface SharedPace {
  take(report: { growth: number; accepted: number; floor: number; ceiling: number }): Promise<PaceState | undefined>;
  cut(cut: { perSecond: number; limitPerSecond: number; pauseMs: number }): Promise<void>;
}

/**
 * Requests/s added per answer. Under pressure answers arrive at the rate itself, so adding a fixed
 * step per answer multiplies the rate by e^step each second. With no limit known the ramp is steep
 * (×e⁴): the first refusal is answered by one cut to what was accepted, whatever the overshoot, while
 * each second spent ramping is most of a second of the limit lost.
 */
const STEP = { noLimitKnown: 4, belowLimit: 0.5, aroundLimit: 0.01, aboveLimit: 0.05 };
/** A refusal cuts the rate to this share of the limit it reveals. */
export const BACKOFF = 0.95;
/** The window Chat2Desk's own limit is presumed to count in; what we got accepted within it estimates the limit. */
const ACCEPTED_WINDOW_MS = 1_000;
/** A refusal this soon after a cut comes from the same overshoot: the server's window is still full. */
const CUT_SPACING_MS = 1_000;
/** The rate only grows while the pace held a request back this recently: no demand, no evidence. */
const PRESSURE_MEMORY_MS = 1_000;
const DEFAULT_SAVE_EVERY_MS = 5_000;

export class AdaptiveRate {
  #perSecond: number;
  #limitPerSecond: number | null;
  readonly #floor: number;
  readonly #ceiling: number;
  #level = 0;
  #drainedAt: number;
  #tail: Promise<unknown> = Promise.resolve();
  #cutAt = Number.NEGATIVE_INFINITY;
  #pausedUntil = Number.NEGATIVE_INFINITY;
  #pressedAt = Number.NEGATIVE_INFINITY;
  /** Times of accepted answers within ACCEPTED_WINDOW_MS, oldest first. */
  readonly #accepted: number[] = [];
  #savedAt = Number.NEGATIVE_INFINITY;
  #unsaved = false;
  readonly #now: () => number;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #saveEveryMs: number;
  readonly #onLearned: (learned: LearnedRate) => void;
  readonly #shared: SharedPace | undefined;
  /** Shared pace: rate growth (requests/s) and accepted answers not yet handed over, the last cut still being written. */
  #growth = 0;
  #acceptedUnreported = 0;
  #sharedAccepted = 0;
  #cutting: Promise<void> = Promise.resolve();

  constructor(options: AdaptiveRateOptions) {
    // Real elapsed time, not the injected clock: the rate paces real requests with real sleeps, and
    // a test moving the clock forward must not empty the bucket Chat2Desk still counts as full.
    this.#now = options.now ?? (() => performance.now());
    this.#sleep = options.sleep ?? delay;
    this.#saveEveryMs = options.saveEveryMs ?? DEFAULT_SAVE_EVERY_MS;
    this.#onLearned = options.onLearned ?? (() => undefined);
    this.#floor = options.floorPerMinute / 60;
    this.#ceiling = Math.max(this.#floor, options.ceilingPerMinute / 60);
    this.#perSecond = this.#clamp(options.start.perMinute / 60);
    this.#limitPerSecond = options.start.limitPerMinute === null ? null : options.start.limitPerMinute / 60;
    this.#drainedAt = this.#now();
    this.#shared = options.shared;
  }

  get perMinute(): number {
    return this.#perSecond * 60;
  }

  get learned(): LearnedRate {
    return { perMinute: this.#perSecond * 60, limitPerMinute: this.#limitPerSecond === null ? null : this.#limitPerSecond * 60 };
  }

  /** Waits for this request's turn at the current rate; waiters go in order. */
  acquire(): Promise<void> {
    const turn = this.#tail.then(() => this.#take());
    this.#tail = turn.catch(() => undefined);
    return turn;
  }

  /** Chat2Desk answered (a success, or a refusal that is not about load): the rate held. */
  accepted(): void {
    const now = this.#now();
    this.#accepted.push(now);
    this.#forgetAcceptedBefore(now - ACCEPTED_WINDOW_MS);
    if (this.#shared) this.#acceptedUnreported += 1;
    if (now - this.#pressedAt > PRESSURE_MEMORY_MS || this.#perSecond >= this.#ceiling) return;
    if (this.#shared) this.#growth += this.#step();
    else this.#set(this.#perSecond + this.#step());
  }

  /** Chat2Desk refused a request for load. */
  refused(): void {
    const now = this.#now();
    this.#drain();
    // Chat2Desk's window is full: the next request waits for a slot whatever else happens.
    this.#level = this.#burst();
    if (now - this.#cutAt < CUT_SPACING_MS) return;
    this.#cutAt = now;
    this.#forgetAcceptedBefore(now - ACCEPTED_WINDOW_MS);
    const shared = this.#shared;
    // Shared: what every process got accepted (as of this process's last take, plus its own since).
    const acceptedPerSecond = shared ? this.#sharedAccepted + this.#acceptedUnreported : this.#accepted.length / (ACCEPTED_WINDOW_MS / 1000);
    // A quarter of the rate at the least: a refusal after a quiet spell (little accepted) is no proof of a tiny limit.
    this.#limitPerSecond = Math.max(this.#perSecond / 4, Math.min(this.#perSecond, acceptedPerSecond));
    this.#set(BACKOFF * this.#limitPerSecond);
    // What filled Chat2Desk's window may have come in a burst: until the oldest of it leaves the window,
    // any request would be refused too, whatever the new pace.
    const oldest = this.#accepted[0];
    if (oldest !== undefined) this.#pausedUntil = oldest + ACCEPTED_WINDOW_MS;
    if (shared) {
      this.#growth = 0;
      const cut = { perSecond: this.#perSecond, limitPerSecond: this.#limitPerSecond, pauseMs: Math.max(0, this.#pausedUntil - now) };
      // Written before this process's next take (which waits for it); a lost write only means the
      // other processes learn of the overshoot from their own refusals.
      this.#cutting = this.#cutting.then(() => shared.cut(cut)).catch(() => undefined);
    }
  }

  /** Hands over a change not yet saved, whatever the interval (at shutdown). */
  flush(): void {
    if (!this.#unsaved) return;
    this.#unsaved = false;
    this.#savedAt = this.#now();
    this.#onLearned(this.learned);
  }

  #step(): number {
    const limit = this.#limitPerSecond;
    if (limit === null) return STEP.noLimitKnown;
    if (this.#perSecond < BACKOFF * limit) return STEP.belowLimit;
    if (this.#perSecond <= limit * 1.1) return STEP.aroundLimit;
    return STEP.aboveLimit;
  }

  async #take(): Promise<void> {
    if (this.#shared && (await this.#takeShared(this.#shared))) return;
    for (;;) {
      const paused = this.#pausedUntil - this.#now();
      if (paused > 0) {
        await this.#sleep(paused);
        continue;
      }
      this.#drain();
      if (this.#level + 1 <= this.#burst()) {
        this.#level += 1;
        return;
      }
      this.#pressedAt = this.#now();
      await this.#sleep(Math.ceil(((this.#level + 1 - this.#burst()) / this.#perSecond) * 1000));
    }
  }

  /**
   * One slot at the shared pace; the shared rate and limit replace this process's own. False when
   * the database did not answer: the slot is then taken at this process's own pace instead.
   */
  async #takeShared(shared: SharedPace): Promise<boolean> {
    for (;;) {
      await this.#cutting;
      const report = { growth: this.#growth, accepted: this.#acceptedUnreported, floor: this.#floor, ceiling: this.#ceiling };
      const state = await shared.take(report).catch(() => undefined);
      if (!state) return false;
      this.#growth -= report.growth;
      this.#acceptedUnreported -= report.accepted;
      this.#drain();
      this.#perSecond = state.perSecond;
      this.#limitPerSecond = state.limitPerSecond;
      this.#sharedAccepted = state.acceptedLastSecond;
      if (state.waitMs === 0) return true;
      this.#pressedAt = this.#now();
      await this.#sleep(state.waitMs);
    }
  }

  /** A twentieth of a second of burst: whatever window Chat2Desk counts in, burst + pace stay within 5% of the rate. */
  #burst(): number {
    return Math.max(1, Math.round(this.#perSecond / 20));
  }

  #drain(): void {
    const now = this.#now();
    this.#level = Math.max(0, this.#level - ((now - this.#drainedAt) / 1000) * this.#perSecond);
    this.#drainedAt = now;
  }

  #forgetAcceptedBefore(instant: number): void {
    while (this.#accepted.length > 0 && this.#accepted[0]! <= instant) this.#accepted.shift();
  }

  #clamp(perSecond: number): number {
    return Math.min(this.#ceiling, Math.max(this.#floor, perSecond));
  }

  #set(perSecond: number): void {
    // The level drained so far drained at the old rate.
    this.#drain();
    this.#perSecond = this.#clamp(perSecond);
    this.#unsaved = true;
    if (this.#now() - this.#savedAt >= this.#saveEveryMs) this.flush();
  }
}
