import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../clock.js';
import type { CacheStore } from '../db/cache.js';
import type { NewJob } from '../db/jobs.js';
import type { Portal, PortalStore } from '../db/portals.js';
import type { WebhookStore } from '../db/webhooks.js';
import type { Logger } from '../log.js';
import type { DeliveryHandlers } from './delivery-handlers.js';
import type { DialogDirectory } from './directory.js';
import { Chat2DeskError } from './errors.js';
import { parseChat2DeskTime } from './times.js';
import { WEBHOOK_EVENTS, deliveryKey, invalidationFor } from './webhook-events.js';

/**
 * Header names of the signature are a gap in the protocol notes (docs/protocols.md C7
 * Signature): the plausible spellings are all read, in this one place.
 */
export const SIGNATURE_HEADERS = ['x-signature', 'x-chat2desk-signature', 'x-webhook-signature', 'signature'];
export const TIMESTAMP_HEADERS = ['x-timestamp', 'x-chat2desk-timestamp', 'x-webhook-timestamp', 'timestamp'];

/** Chat2Desk retries for about 2 h; delivery keys are kept a day. */
const DELIVERY_KEY_RETENTION_MS = 24 * 3600_000;

export interface WebhookDeps {
  webhooks: WebhookStore;
  cache: CacheStore;
  portals: PortalStore;
  publicUrl: string;
  directoryFor(portal: Portal): Promise<DialogDirectory | undefined>;
  /** The jobs each hook type starts, stored with the delivery (the outbox). */
  deliveryHandlers: DeliveryHandlers;
  /** Called after the commit for each job a delivery stored, so the worker looks for it (src/jobs/pipeline.ts `jobsStored`). */
  jobsStored(job: NewJob): void;
  /** Called after the commit when a delivery made held jobs due now, so the worker looks for them. */
  jobsWoken(): void;
  /**
   * The check noticed a gap (the webhook was disabled or gone, or Chat2Desk lists failed
   * deliveries): what was missed since `lastDeliveryAt` is looked for (src/chat2desk/closed-episodes.ts).
   */
  gapNoticed?(portal: Portal, lastDeliveryAt: number): Promise<void>;
  /**
   * A delivery's first receipt, stored and its cache invalidation done: open pages hear of it
   * (src/live/hub.ts). Returns at once; a retried delivery is not published again.
   */
  published?(memberId: string, delivery: Record<string, unknown>): void;
  clock: Clock;
  log: Logger;
}

export type DeliveryOutcome = { status: 200; result: 'applied' | 'duplicate' } | { status: 400 | 401 | 404; error: string };

/**
 * The Chat2Desk webhook: registered once per portal, received on an unguessable URL (and its HMAC
 * checked when Chat2Desk sends one), stored and applied to the cache before the 2xx, watched for
 * being disabled, and followed by reconciliation after a gap.
 */
export class Chat2DeskWebhooks {
  constructor(private readonly deps: WebhookDeps) {}

  urlFor(secret: string): string {
    return `${this.deps.publicUrl}/chat2desk/webhook/${secret}`;
  }

  /** Makes sure the portal's webhook exists in Chat2Desk and is enabled. */
  async ensure(portal: Portal): Promise<{ webhookId: number }> {
    const directory = await this.deps.directoryFor(portal);
    if (!directory) throw new Error('Chat2Desk is not configured for this portal');
    // One secret per portal and account, claimed in the database before anything is created: saves
    // running at once (here or in another process) and a retry after a lost answer all register
    // the same URL, and Chat2Desk takes a URL once (five webhooks per account, docs/protocols.md C7).
    const secret = await this.deps.webhooks.claimSecret(portal.memberId, directory.accountKey, randomBytes(24).toString('base64url'));
    const url = this.urlFor(secret);
    let webhook = (await directory.api.webhooks()).find((item) => item.url === url);
    if (!webhook) {
      try {
        webhook = await directory.api.createWebhook({ name: `Bitrix24 ${portal.domain}`.slice(0, 60), url, events: [...WEBHOOK_EVENTS] });
      } catch (error) {
        // Another save created it meanwhile, or a create whose answer was lost worked: adopt it.
        if (!(error instanceof Chat2DeskError && error.texts.some((text) => /already used/i.test(text)))) throw error;
        webhook = (await directory.api.webhooks()).find((item) => item.url === url);
        if (!webhook) throw error;
      }
    } else if (webhook.status && webhook.status !== 'enable') {
      webhook = await directory.api.updateWebhook(webhook.id, { status: 'enable' });
    }
    // A webhook an older version registered lacks the events added since (outbox_status, for the triggers).
    const events = webhook.events;
    if (Array.isArray(events) && WEBHOOK_EVENTS.some((event) => !events.includes(event))) {
      webhook = await directory.api.updateWebhook(webhook.id, { events: [...WEBHOOK_EVENTS] });
    }
    await this.deps.webhooks.save({ memberId: portal.memberId, accountKey: directory.accountKey, webhookId: webhook.id, secret, status: 'enable' });
    this.deps.log.info({ memberId: portal.memberId, webhookId: webhook.id }, 'chat2desk webhook registered');
    return { webhookId: webhook.id };
  }

  /**
   * One delivery. Stored, applied to the cache and turned into its jobs in one transaction before
   * the answer, so a 2xx means "applied and queued"; any failure is a 5xx and Chat2Desk retries.
   */
  async receive(secret: string, rawBody: string, header: (name: string) => string | undefined): Promise<DeliveryOutcome> {
    const registration = await this.deps.webhooks.bySecret(secret);
    const portal = registration ? await this.deps.portals.get(registration.memberId) : undefined;
    if (!registration || !portal || portal.status !== 'active') return { status: 404, error: 'Unknown webhook' };
    const signature = firstHeader(header, SIGNATURE_HEADERS);
    if (signature !== undefined) {
      const token = await this.deps.portals.chat2deskToken(portal.memberId);
      const timestamp = firstHeader(header, TIMESTAMP_HEADERS) ?? '';
      if (!token || !signatureMatches(token, rawBody, timestamp, signature)) return { status: 401, error: 'Signature does not match' };
    }
    let body: unknown;
    try {
      body = JSON.parse(rawBody);
    } catch {
      return { status: 400, error: 'The body is not JSON' };
    }
    if (!body || typeof body !== 'object' || Array.isArray(body) || typeof (body as { hook_type?: unknown }).hook_type !== 'string') {
      return { status: 400, error: 'The body has no hook_type' };
    }
    const event = body as Record<string, unknown>;
    const hookType = String(event.hook_type);
    const dedupKey = deliveryKey(event);
    const delivery = { memberId: portal.memberId, accountKey: registration.accountKey, hookType, deliveryKey: dedupKey, event, settings: portal.settings };
    // Handlers are pure functions of the delivery: input their kind refuses is this delivery's fault.
    const { jobs, refused } = this.deps.deliveryHandlers.jobsFor(delivery);
    if (refused.length > 0) {
      const reason = refused.join('; ');
      // Nothing of it can start: refused, so Chat2Desk's retries show the trouble. Some can: they are
      // kept (a retry would be refused the same way) and the refused ones are logged.
      if (jobs.length === 0) {
        this.deps.log.warn({ memberId: portal.memberId, hookType, err: reason }, 'chat2desk webhook delivery refused: its jobs are invalid');
        return { status: 400, error: `The ${hookType} delivery cannot start its work: ${reason}` };
      }
      this.deps.log.warn({ memberId: portal.memberId, hookType, err: reason }, 'chat2desk webhook delivery: some of its jobs are invalid and were left out');
    }
    const recorded = await this.deps.webhooks.recordDelivery(
      { memberId: portal.memberId, accountKey: registration.accountKey, dedupKey, hookType, body: rawBody },
      invalidationFor(event),
      jobs,
      this.deps.deliveryHandlers.wakesFor(delivery),
    );
    if (recorded.jobsStored > 0) for (const job of jobs) this.deps.jobsStored(job);
    if (recorded.jobsWoken > 0) this.deps.jobsWoken();
    if (recorded.fresh) this.deps.published?.(portal.memberId, event);
    this.deps.log.debug({ memberId: portal.memberId, hookType, duplicate: !recorded.fresh, jobsStored: recorded.jobsStored }, 'chat2desk webhook delivery');
    return { status: 200, result: recorded.fresh ? 'applied' : 'duplicate' };
  }

  /**
   * Chat2Desk disables a webhook after 5 h of failed deliveries (docs/protocols.md C7 Retries). Finds ours
   * disabled or gone, turns it back on, and reconciles: everything cached for the account becomes
   * stale and the cache is filled again from the API.
   */
  async check(portal: Portal): Promise<'healthy' | 'reconciled'> {
    const registration = await this.deps.webhooks.get(portal.memberId);
    const directory = await this.deps.directoryFor(portal);
    if (!registration || !directory) return 'healthy';
    const listed = await directory.api.webhooks();
    const ours = listed.find((item) => item.id === registration.webhookId && item.url === this.urlFor(registration.secret));
    if (ours && (!ours.status || ours.status === 'enable') && registration.accountKey === directory.accountKey) {
      // Deliveries Chat2Desk gave up on since the last check are events we never saw.
      const checkedAt = registration.lastCheckAt ?? 0;
      // Error times have whole seconds: a second of overlap errs on the side of reconciling.
      const missed = (ours.errors ?? []).some((failure) => errorTime(failure.created_at) >= checkedAt - 1000);
      await this.deps.webhooks.markChecked(portal.memberId, 'enable');
      if (!missed) return 'healthy';
      this.deps.log.warn({ memberId: portal.memberId }, 'chat2desk reports failed webhook deliveries; reconciling');
      // Stored first (a durable job): a reconciliation that fails must not lose the gap.
      await this.deps.gapNoticed?.(portal, registration.lastDeliveryAt ?? 0);
      await this.reconcile(portal);
      return 'reconciled';
    }
    this.deps.log.warn({ memberId: portal.memberId, found: Boolean(ours), status: ours?.status }, 'chat2desk webhook disabled or missing; re-enabling and reconciling');
    await this.ensure(portal);
    await this.deps.gapNoticed?.(portal, registration.lastDeliveryAt ?? 0);
    await this.reconcile(portal);
    return 'reconciled';
  }

  /**
   * Uninstall: Chat2Desk allows only 5 webhooks per account, so ours is removed rather than left to
   * fail for 5 hours. Returns the removal to run once the portal's secrets are gone (it keeps the
   * API client it needs, built now while the token is still stored), or undefined when Chat2Desk
   * is not configured. The registration itself is forgotten with the secrets (PortalStore.uninstall).
   */
  async prepareRemoval(portal: Portal): Promise<((webhookId: number) => Promise<void>) | undefined> {
    const directory = await this.deps.directoryFor(portal);
    if (!directory) return undefined;
    return async (webhookId) => {
      await directory.api.deleteWebhook(webhookId);
      this.deps.log.info({ memberId: portal.memberId, webhookId }, 'chat2desk webhook removed');
    };
  }

  /**
   * A portal moving to another Chat2Desk account (token or host): the removal of its webhook in
   * the old account, built now with the old token; the registration is replaced by the next ensure.
   */
  async prepareAccountChange(portal: Portal): Promise<(() => Promise<void>) | undefined> {
    const webhookId = (await this.deps.webhooks.get(portal.memberId))?.webhookId;
    const remove = await this.prepareRemoval(portal);
    if (!remove || !webhookId) return undefined;
    return () => remove(webhookId);
  }

  async reconcile(portal: Portal): Promise<void> {
    const directory = await this.deps.directoryFor(portal);
    if (!directory) return;
    await this.deps.cache.invalidateAccount(directory.accountKey, this.deps.clock.now());
    await directory.sync();
  }

  /** Checks every registered portal; one portal's failure does not stop the others. */
  async checkAll(): Promise<void> {
    // Every connected portal, registered or not: a registration that failed at settings save is retried here.
    for (const portal of await this.deps.portals.connectedToChat2Desk()) {
      try {
        if (!(await this.deps.webhooks.get(portal.memberId))) await this.ensure(portal);
        else await this.check(portal);
      } catch (error) {
        this.deps.log.warn({ memberId: portal.memberId, err: error instanceof Error ? error.message : String(error) }, 'webhook check failed');
      }
    }
  }

  pruneDeliveries(): Promise<number> {
    return this.deps.webhooks.pruneDeliveries(this.deps.clock.now() - DELIVERY_KEY_RETENTION_MS);
  }

  /** Runs checkAll every `everyMs`; returns the stop function. */
  startMonitor(everyMs: number): () => Promise<void> {
    let running: Promise<void> | undefined;
    const timer = setInterval(() => {
      running ??= this.checkAll().finally(() => {
        running = undefined;
      });
    }, everyMs);
    timer.unref();
    // Stopping waits for a check in progress: the server closes the database next.
    return async () => {
      clearInterval(timer);
      await running;
    };
  }
}

/** hex(HMAC_SHA256(key = md5(api_token), raw_body + timestamp)) — docs/protocols.md C7, verified against the vendor vector. */
export function webhookSignature(apiToken: string, rawBody: string, timestamp: string): string {
  const key = createHash('md5').update(apiToken).digest('hex');
  return createHmac('sha256', key)
    .update(rawBody + timestamp)
    .digest('hex');
}

function signatureMatches(apiToken: string, rawBody: string, timestamp: string, presented: string): boolean {
  const expected = Buffer.from(webhookSignature(apiToken, rawBody, timestamp));
  const given = Buffer.from(presented.trim().toLowerCase());
  return expected.length === given.length && timingSafeEqual(expected, given);
}

/** Webhook error times come as unix seconds (docs/protocols.md C7); text dates are read too. */
function errorTime(value: number | string | undefined): number {
  if (typeof value === 'number') return value * 1000;
  if (typeof value === 'string' && /^\d+$/.test(value)) return Number(value) * 1000;
  return (typeof value === 'string' ? parseChat2DeskTime(value) : undefined) ?? 0;
}

function firstHeader(header: (name: string) => string | undefined, names: string[]): string | undefined {
  for (const name of names) {
    const value = header(name);
    if (value !== undefined && value !== '') return value;
  }
  return undefined;
}
