/**
 * How Bitrix24 spells values, read in one place: booleans, PHP lists and maps, and the workflow's
 * document id (docs/protocols.md B0, B7, B10).
 */

/** Bitrix24's list methods answer pages of 50, asked for by `start` (docs/protocols.md B3). */
export const LIST_PAGE_SIZE = 50;

/**
 * Bitrix24 sends booleans as Y/N from robots, 1/0 from form encodings, and true/false or 1/0 in
 * JSON answers (docs/protocols.md B0). Anything else, `N` and `0` included, is false.
 */
export function isYes(value: unknown): boolean {
  if (value === true || value === 1) return true;
  return typeof value === 'string' && (value === 'Y' || value === '1' || value.toLowerCase() === 'true');
}

/** How we write a boolean to Bitrix24 (robot property flags). */
export function yesNo(value: boolean | undefined): 'Y' | 'N' {
  return value ? 'Y' : 'N';
}

/**
 * PHP serialises a list with gaps in its indices, and qs parses it, as an object keyed by index;
 * an empty map comes as `[]` (docs/protocols.md B0). A list is read from either shape.
 */
export function phpList(value: unknown): unknown[] {
  if (Array.isArray(value)) return value;
  if (value && typeof value === 'object') return Object.values(value);
  return [];
}

/** A PHP map; `[]` (PHP's empty map) and anything that is not an object read as an empty map. */
export function phpMap<T = unknown>(value: unknown): Record<string, T> {
  return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, T>) : {};
}

/** The timeline a CRM document's comments go to: crm.timeline.comment.add's ENTITY_TYPE and ENTITY_ID. */
export interface TimelineOwner {
  entityType: string;
  entityId: number;
}

/**
 * A workflow's `document_id` is `[module, entity class, document]`. For CRM, `document` is LEAD_n,
 * DEAL_n, CONTACT_n, COMPANY_n, or DYNAMIC_<type>_<id> for a smart process (docs/protocols.md
 * B7), whose timeline ENTITY_TYPE is `dynamic_<type>` (B10). Undefined for anything else.
 */
export function timelineOwner(documentId: readonly string[]): TimelineOwner | undefined {
  const [module, , document = ''] = documentId;
  if (module !== 'crm') return undefined;
  const plain = /^(LEAD|DEAL|CONTACT|COMPANY)_(\d+)$/.exec(document);
  if (plain) return { entityType: plain[1]!.toLowerCase(), entityId: Number(plain[2]) };
  const dynamic = /^DYNAMIC_(\d+)_(\d+)$/.exec(document);
  if (dynamic) return { entityType: `dynamic_${dynamic[1]}`, entityId: Number(dynamic[2]) };
  return undefined;
}
