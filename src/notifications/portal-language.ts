import type { Bitrix24Rest } from '../bitrix24/rest-client.js';
import type { Clock } from '../clock.js';
import { portalLanguage, type PortalLanguage } from '../triggers/triggers.js';

/** A portal's language changes rarely: asked again after this long. */
const LANGUAGE_TTL_MS = 3600_000;

/**
 * Each portal's language (app.info LANGUAGE_ID, docs/protocols.md B1), remembered in memory for an
 * hour: a notification or a timeline comment costs no extra request but the first one of the hour.
 * Runs asking together while it is not known share the one question (a thousand episodes closing
 * at once ask once); a question that failed is asked again by the next run.
 */
export class PortalLanguages {
  readonly #known = new Map<string, { language: Promise<PortalLanguage>; at: number }>();

  constructor(
    private readonly rest: Bitrix24Rest,
    private readonly clock: Clock,
  ) {}

  of(memberId: string): Promise<PortalLanguage> {
    const known = this.#known.get(memberId);
    if (known && this.clock.now() - known.at < LANGUAGE_TTL_MS) return known.language;
    const asked = { language: this.#ask(memberId), at: this.clock.now() };
    this.#known.set(memberId, asked);
    asked.language.catch(() => {
      if (this.#known.get(memberId) === asked) this.#known.delete(memberId);
    });
    return asked.language;
  }

  async #ask(memberId: string): Promise<PortalLanguage> {
    const info = await this.rest.call<Record<string, unknown>>(memberId, 'app.info', {}, { idempotent: true });
    return portalLanguage(info && typeof info === 'object' ? info.LANGUAGE_ID : undefined);
  }
}
