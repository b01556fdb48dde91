import type { BackgroundTasks } from '../background.js';
import type { Clock } from '../clock.js';
import type { Chat2DeskWebhooks } from '../chat2desk/webhooks.js';
import type { JobStore } from '../db/jobs.js';
import type { Portal, PortalStore } from '../db/portals.js';
import type { Logger } from '../log.js';
import { Bitrix24Error, PortalUnavailableError } from './errors.js';
import type { Bitrix24Rest } from './rest-client.js';

/**
 * `uninstalled`: secrets wiped, jobs stopped. `not confirmed`: the portal still accepts our tokens,
 * so it did not uninstall the app; nothing changed. `pending`: the portal could not be asked yet.
 */
export type UninstallDecision = 'uninstalled' | 'not confirmed' | 'pending';

export interface UninstallDeps {
  portals: PortalStore;
  jobs: JobStore;
  rest: Bitrix24Rest;
  chat2deskWebhooks: Chat2DeskWebhooks;
  /** The portal's Chat2Desk account (its cache's key), while its token is stored; undefined when it has none. */
  accountKeyOf(portal: Portal): Promise<string | undefined>;
  background: BackgroundTasks;
  log: Logger;
  clock: Clock;
  /** How long the event handler waits for the portal's answer before it answers "pending". */
  answerWithinMs?: number;
}

/** A portal that could not be asked is asked again after this long at first, then less often. */
const FIRST_RECHECK_MS = 5_000;
const MAX_RECHECK_MS = 3600_000;
const MONITOR_IDLE_MS = 60_000;
/** The longest the monitor's timer sleeps before it looks at the clock again. */
const CLOCK_FOLLOW_MS = 1_000;
/** After the portal accepted our tokens, how long an ONAPPUNINSTALL is answered from that verdict without asking again. */
const ACCEPTS_REMEMBERED_MS = 5 * 60_000;

/**
 * What the portal answers for our tokens once the app is uninstalled (docs/protocols.md B1 "API access is already
 * revoked", B2): the access token is unknown (401 NO_AUTH_FOUND / invalid_token) and a refresh is
 * refused with invalid_grant. Every other refusal (ACCESS_DENIED on a lapsed plan, user_access_error,
 * INVALID_CREDENTIALS, insufficient_scope, or invalid_client for our own wrong client secret) says
 * nothing about an uninstall.
 */
const REVOKED_TOKEN_CODES = new Set(['NO_AUTH_FOUND', 'invalid_token']);

/** The uninstall monitor's next pass: when it is due by the clock, and the timer that looks. */
interface MonitorState {
  timer: NodeJS.Timeout | undefined;
  at: number;
  /** The pass in progress, awaited when the monitor stops. */
  passing?: Promise<void>;
}

/**
 * ONAPPUNINSTALL carries nothing but the application token (docs/protocols.md B1), and Bitrix24
 * also puts that token into every page it opens for the app (B0): the event alone proves nothing.
 * Bitrix24 revokes the app's API access before it sends the event (B1), so the portal is asked with
 * our stored tokens (`app.info`): still accepted → not the portal's uninstall, nothing changes;
 * refused the way a revoked app is refused (REVOKED_TOKEN_CODES) → secrets wiped, jobs stopped,
 * webhook removed. When the portal cannot be reached, or refuses for another reason, the request
 * stays on the portal row and is asked again later, also after a restart.
 */
export class Uninstalls {
  readonly #checking = new Map<string, Promise<UninstallDecision>>();
  /** When each portal last accepted our tokens during a check: forged events meanwhile cost no REST call. */
  readonly #acceptedAt = new Map<string, number>();
  /** The monitor's next pass, while it runs. */
  #monitor: MonitorState | undefined;

  constructor(private readonly deps: UninstallDeps) {}

  /**
   * An ONAPPUNINSTALL from a known portal: recorded first, then decided if the portal answers in
   * time. `clean`: the event's `data[CLEAN]` (docs/protocols.md B1), delete the app's data with it.
   */
  async request(memberId: string, clean: boolean): Promise<UninstallDecision> {
    const acceptedAt = this.#acceptedAt.get(memberId);
    const rememberedUntil = acceptedAt === undefined ? 0 : acceptedAt + ACCEPTS_REMEMBERED_MS;
    if (this.deps.clock.now() < rememberedUntil) {
      // Anyone with a page's application token can send these (docs/protocols.md B0), and each check costs the portal
      // a REST call: answered from the last verdict. Still recorded, to be asked about once the
      // verdict is old, so that a genuine uninstall in this window is acted on then.
      await this.deps.portals.deferUninstallRequest(memberId, rememberedUntil, clean);
      this.#passAt(rememberedUntil);
      return 'not confirmed';
    }
    await this.deps.portals.requestUninstall(memberId, clean);
    const check = this.check(memberId);
    // The check goes on after we answer; shutdown waits for it like for any background task.
    this.deps.background.run('uninstall check', () => check, { memberId });
    // Bitrix24 deprioritises slow event handlers (docs/protocols.md B0): a slow portal is decided after the answer.
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<UninstallDecision>((resolve) => {
      timer = setTimeout(() => resolve('pending'), this.deps.answerWithinMs ?? 10_000);
    });
    try {
      return await Promise.race([check, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Asks the portal about its pending uninstall; one check at a time per portal. */
  check(memberId: string): Promise<UninstallDecision> {
    let running = this.#checking.get(memberId);
    if (!running) {
      running = this.#decide(memberId).finally(() => this.#checking.delete(memberId));
      this.#checking.set(memberId, running);
    }
    return running;
  }

  /** Checks due uninstalls now and whenever the next falls due; the first pass checks every pending one. */
  startMonitor(): () => Promise<void> {
    this.#monitor = { timer: undefined, at: Infinity };
    void this.#pass(true);
    // Stopping waits for a pass in progress (it reads the database, which the server closes next).
    return async () => {
      const monitor = this.#monitor;
      clearTimeout(monitor?.timer);
      this.#monitor = undefined;
      await monitor?.passing;
    };
  }

  /** Resolves once the monitor's pass in progress, if any, has started its checks (the server's idle). */
  async passed(): Promise<void> {
    await this.#monitor?.passing;
  }

  #pass(everyPending: boolean): Promise<void> {
    const monitor = this.#monitor;
    const passing = this.#passOnce(everyPending, monitor);
    if (monitor) monitor.passing = passing;
    return passing;
  }

  async #passOnce(everyPending: boolean, monitor: MonitorState | undefined): Promise<void> {
    let next: number | undefined;
    try {
      const due = await this.deps.portals.uninstallChecksDue(everyPending);
      // Stopped meanwhile: the server is shutting down and starts no more checks.
      if (this.#monitor !== monitor) return;
      for (const memberId of due) this.deps.background.run('uninstall check', () => this.check(memberId), { memberId });
      next = await this.deps.portals.nextUninstallCheckAt();
    } catch (error) {
      this.deps.log.error({ err: error instanceof Error ? error.message : String(error) }, 'uninstall checks could not be scheduled');
    }
    const now = this.deps.clock.now();
    this.#passAt(Math.max(now + 1_000, next ?? now + MONITOR_IDLE_MS), true);
  }

  /**
   * Moves the monitor's next pass to `at` if that is sooner (or, after a pass, sets it). The timer
   * wakes at least every CLOCK_FOLLOW_MS to compare `at` with the clock again: the clock may move
   * (a test's clock, or the system's), and the pass is due by the clock, not by the timer.
   */
  #passAt(at: number, afterPass = false): void {
    const monitor = this.#monitor;
    if (!monitor || (!afterPass && monitor.at <= at)) return;
    clearTimeout(monitor.timer);
    monitor.at = Math.min(at, this.deps.clock.now() + MONITOR_IDLE_MS);
    this.#wakeForPass(monitor);
  }

  #wakeForPass(monitor: MonitorState): void {
    const wait = monitor.at - this.deps.clock.now();
    monitor.timer = setTimeout(
      () => {
        if (this.#monitor !== monitor) return;
        if (this.deps.clock.now() >= monitor.at) void this.#pass(false);
        else this.#wakeForPass(monitor);
      },
      Math.max(0, Math.min(wait, CLOCK_FOLLOW_MS)),
    );
    monitor.timer.unref();
  }

  async #decide(memberId: string): Promise<UninstallDecision> {
    const { portals, log, clock } = this.deps;
    const portal = await portals.get(memberId);
    if (!portal || portal.status === 'uninstalled') return 'uninstalled';
    const requestedAt = await portals.uninstallRequestedAt(memberId);
    if (requestedAt === undefined) return 'not confirmed'; // decided meanwhile (a reinstall, another check)
    const answer = await this.#askPortal(memberId);
    if (answer === 'accepts') {
      this.#acceptedAt.set(memberId, clock.now());
      log.warn({ memberId }, 'ONAPPUNINSTALL not acted on: the portal still accepts our tokens, so it did not come from Bitrix24');
      if (await portals.dropUninstallRequest(memberId, requestedAt)) return 'not confirmed';
      // Another ONAPPUNINSTALL came while the portal was being asked: it is asked about afresh.
      this.#passAt(clock.now());
      return 'pending';
    }
    if (answer === 'refuses') {
      if ((await this.#wipe(memberId, requestedAt)) || (await portals.get(memberId))?.status === 'uninstalled') return 'uninstalled';
      // Reinstalled while the portal was being asked, or another request came: that one is asked about.
      if ((await portals.uninstallRequestedAt(memberId)) === undefined) return 'not confirmed';
      this.#passAt(clock.now());
      return 'pending';
    }
    const delay = Math.min(MAX_RECHECK_MS, Math.max(FIRST_RECHECK_MS, clock.now() - requestedAt));
    await portals.scheduleUninstallCheck(memberId, clock.now() + delay);
    this.#passAt(clock.now() + delay);
    log.warn({ memberId, err: answer.error, retryInMs: delay }, 'ONAPPUNINSTALL not decided yet: the portal could not be asked; asking again later');
    return 'pending';
  }

  async #askPortal(memberId: string): Promise<'accepts' | 'refuses' | { error: string }> {
    // A portal waiting for reauthorisation has no tokens to ask with, and the refusal that put it
    // there (maybe our own wrong client secret) proves nothing about this request: it stays pending
    // until the portal has tokens again (recovered or reinstalled).
    if ((await this.deps.portals.get(memberId))?.status !== 'active') return { error: 'the portal waits for reauthorisation: no tokens to ask it with' };
    try {
      // `check`: a forged event must not take the portal's budget from robot work.
      await this.deps.rest.call(memberId, 'app.info', {}, { idempotent: true, priority: 'check' });
      return 'accepts';
    } catch (error) {
      if (error instanceof PortalUnavailableError && error.refreshRefusedWith === 'invalid_grant') return 'refuses';
      if (error instanceof Bitrix24Error && error.httpStatus === 401 && REVOKED_TOKEN_CODES.has(error.code)) return 'refuses';
      return { error: error instanceof Error ? error.message : String(error) };
    }
  }

  /** False when the request of `requestedAt` is no longer the pending one: nothing changed then. */
  async #wipe(memberId: string, requestedAt: number): Promise<boolean> {
    const { portals, jobs, chat2deskWebhooks, background, log } = this.deps;
    const portal = await portals.get(memberId);
    if (!portal || portal.status === 'uninstalled') return false;
    // Built while the Chat2Desk token is still stored; used only if the wipe happens.
    const removeWebhook = await chat2deskWebhooks.prepareRemoval(portal);
    const wiped = await portals.uninstall(memberId, requestedAt, await this.deps.accountKeyOf(portal));
    if (!wiped) return false;
    const { webhookId, dataDeleted } = wiped;
    if (removeWebhook && webhookId !== null) background.run('remove chat2desk webhook', () => removeWebhook(webhookId), { memberId });
    // With the data deleted there is nothing left to cancel; a run still in flight finds its job gone.
    const cancelled = await jobs.cancelPortal(memberId);
    log.info({ memberId, cancelled, dataDeleted }, dataDeleted ? "portal uninstalled: secrets and the app's data deleted" : 'portal uninstalled: secrets wiped, jobs stopped');
    return true;
  }
}
