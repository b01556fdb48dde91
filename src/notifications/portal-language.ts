import type { Bitrix24Rest } from '../bitrix24/rest-client.js';
import type { Clock } from '../clock.js';
import { portalLanguage, type PortalLanguage } from '../triggers/triggers.js';

/** A portal's language changes rarely: asked again after this long. */
const LANGUAGE_TTL_MS = 3600_000;

/**
 * Each portal's language (app.info LANGUAGE_ID, docs/protocols.md B1), remembered in memory for an
 * hour: a notification costs no extra request but the first one of the hour.
 */
export class PortalLanguages {
  readonly #known = new Map<string, { language: PortalLanguage; at: number }>();

  constructor(
    private readonly rest: Bitrix24Rest,
    private readonly clock: Clock,
  ) {}

  async of(memberId: string): Promise<PortalLanguage> {
    const known = this.#known.get(memberId);
    if (known && this.clock.now() - known.at < LANGUAGE_TTL_MS) return known.language;
    const info = await this.rest.call<Record<string, unknown>>(memberId, 'app.info', {}, { idempotent: true });
    const language = portalLanguage(info && typeof info === 'object' ? info.LANGUAGE_ID : undefined);
    this.#known.set(memberId, { language, at: this.clock.now() });
    return language;
  }
}
