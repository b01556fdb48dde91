import type { Bitrix24Rest } from '../bitrix24/rest-client.js';
import type { Clock } from '../clock.js';
import { portalLanguage, type PortalLanguage } from '../triggers/triggers.js';

/** A portal's language changes rarely: asked again after this long. */
const LANGUAGE_TTL_MS = 3600_000;

/** What we keep of the portal's app.info (docs/protocols.md B1). */
interface AppInfo {
  language: PortalLanguage;
  /** The app's ID in this portal (app.info ID): its page's address is /marketplace/app/<ID>/ (B19). */
  appId: string | undefined;
}

/**
 * Each portal's language (app.info LANGUAGE_ID, docs/protocols.md B1) and the app's ID there,
 * remembered in memory for an hour: a notification or a timeline comment costs no extra request
 * but the first one of the hour. Runs asking together while it is not known share the one question
 * (a thousand episodes closing at once ask once); a question that failed is asked again by the next run.
 */
export class PortalLanguages {
  readonly #known = new Map<string, { info: Promise<AppInfo>; at: number }>();

  constructor(
    private readonly rest: Bitrix24Rest,
    private readonly clock: Clock,
  ) {}

  async of(memberId: string): Promise<PortalLanguage> {
    return (await this.#info(memberId)).language;
  }

  /** The app's ID in the portal, for links to its page; undefined when app.info does not say. */
  async appIdOf(memberId: string): Promise<string | undefined> {
    return (await this.#info(memberId)).appId;
  }

  #info(memberId: string): Promise<AppInfo> {
    const known = this.#known.get(memberId);
    if (known && this.clock.now() - known.at < LANGUAGE_TTL_MS) return known.info;
    const asked = { info: this.#ask(memberId), at: this.clock.now() };
    this.#known.set(memberId, asked);
    asked.info.catch(() => {
      if (this.#known.get(memberId) === asked) this.#known.delete(memberId);
    });
    return asked.info;
  }

  async #ask(memberId: string): Promise<AppInfo> {
    const info = await this.rest.call<Record<string, unknown>>(memberId, 'app.info', {}, { idempotent: true });
    const record = info && typeof info === 'object' ? info : {};
    const id = record.ID;
    return {
      language: portalLanguage(record.LANGUAGE_ID),
      appId: (typeof id === 'number' && Number.isInteger(id) && id > 0) || (typeof id === 'string' && /^\d{1,12}$/.test(id)) ? String(id) : undefined,
    };
  }
}
