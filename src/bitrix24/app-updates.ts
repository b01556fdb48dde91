import type { BackgroundTasks } from '../background.js';
import type { Portal, PortalStore } from '../db/portals.js';
import type { CallerTokens } from './form-body.js';
import type { InstallerTokens } from './installer-tokens.js';
import type { AppRegistration } from './registration.js';

export interface AppUpdateDeps {
  portals: PortalStore;
  installerTokens: InstallerTokens;
  registration: AppRegistration;
  background: BackgroundTasks;
}

/** Registrations after updates of one portal start at most once in this long. */
const REREGISTER_EVERY_MS = 5 * 60_000;

/**
 * ONAPPUPDATE: an update drops the app's handlers (docs/protocols.md B1), so the app registers
 * again. Nothing in the event proves it came from Bitrix24 (the application token is on every page
 * of the app, B0), and a registration costs the portal two batch requests at work priority, so
 * registrations after updates of one portal start at most once per REREGISTER_EVERY_MS: an update
 * inside that time gets one registration when it ends, so a genuine update is never left without
 * its handlers.
 */
export class AppUpdates {
  readonly #lastRegisteredAt = new Map<string, number>();
  readonly #later = new Map<string, NodeJS.Timeout>();

  constructor(private readonly deps: AppUpdateDeps) {}

  updated(portal: Portal, tokens: CallerTokens | undefined): void {
    const memberId = portal.memberId;
    const last = this.#lastRegisteredAt.get(memberId);
    if (last === undefined || Date.now() - last >= REREGISTER_EVERY_MS) {
      this.#register(memberId, tokens);
      return;
    }
    if (this.#later.has(memberId)) return;
    const timer = setTimeout(
      () => {
        this.#later.delete(memberId);
        this.#register(memberId, undefined);
      },
      last + REREGISTER_EVERY_MS - Date.now(),
    );
    timer.unref();
    this.#later.set(memberId, timer);
  }

  /** Drops the registrations still waiting for their turn (shutdown). */
  stop(): void {
    for (const timer of this.#later.values()) clearTimeout(timer);
    this.#later.clear();
  }

  #register(memberId: string, tokens: CallerTokens | undefined): void {
    this.#lastRegisteredAt.set(memberId, Date.now());
    this.deps.background.run(
      're-registration after update',
      async () => {
        const portal = await this.deps.portals.get(memberId);
        if (!portal || portal.status === 'uninstalled') return;
        if (tokens) await this.deps.installerTokens.adoptFromUpdate(portal, tokens);
        await this.deps.registration.register(portal);
      },
      { memberId },
    );
  }
}
