import type { BatchCommand, BatchOutcome } from '../bitrix24/rest-client.js';
import { phpList } from '../bitrix24/values.js';
import type { PortalLanguage } from '../triggers/triggers.js';

/** The CRM card tabs we bind (docs/protocols.md B9), by the entity type id each one shows. */
export const CRM_TAB_PLACEMENTS: ReadonlyArray<{ placement: string; entityTypeId: number }> = [
  { placement: 'CRM_LEAD_DETAIL_TAB', entityTypeId: 1 },
  { placement: 'CRM_DEAL_DETAIL_TAB', entityTypeId: 2 },
  { placement: 'CRM_CONTACT_DETAIL_TAB', entityTypeId: 3 },
  { placement: 'CRM_COMPANY_DETAIL_TAB', entityTypeId: 4 },
];

/** A smart process's card tab: `CRM_DYNAMIC_<entityTypeId>_DETAIL_TAB` (docs/protocols.md B9). */
export function dynamicTabPlacement(entityTypeId: number): string {
  return `CRM_DYNAMIC_${entityTypeId}_DETAIL_TAB`;
}

/**
 * The entity type a tab was opened for: only in PLACEMENT (docs/protocols.md B9); PLACEMENT_OPTIONS
 * names the record id alone. Undefined for any other placement.
 */
export function entityTypeOfPlacement(placement: string): number | undefined {
  const fixed = CRM_TAB_PLACEMENTS.find((tab) => tab.placement === placement.toUpperCase());
  if (fixed) return fixed.entityTypeId;
  const dynamic = /^CRM_DYNAMIC_(\d{1,9})_DETAIL_TAB$/i.exec(placement);
  if (!dynamic) return undefined;
  const entityTypeId = Number(dynamic[1]);
  return entityTypeId > 0 ? entityTypeId : undefined;
}

/** The tab's title, in the portal's language; LANG_ALL names it in all three (Bitrix24's Spanish id is `la`). */
const TAB_TITLES: Record<PortalLanguage, string> = { en: 'Chat2Desk chats', ru: 'Чаты Chat2Desk', es: 'Chats de Chat2Desk' };

/** The listing commands the registration batch adds: what is bound, and which smart processes the portal has. */
export const PLACEMENT_LISTING: BatchCommand[] = [
  { key: 'placements', method: 'placement.get' },
  { key: 'smart_processes', method: 'crm.type.list' },
];

/**
 * placement.bind for each card tab not yet bound to our handler with today's title, and for each
 * smart process. A tab bound with another title (the portal's language changed) is unbound first:
 * re-binding the same handler answers "Handler already binded" and changes nothing (docs/protocols.md
 * B9), which also makes a repeated or concurrent registration harmless.
 */
export function placementCommands(listed: BatchOutcome['results'], handler: string, language: PortalLanguage): BatchCommand[] {
  const bound = new Map<string, string>();
  for (const item of phpList(listed.placements)) {
    if (!item || typeof item !== 'object') continue;
    const binding = item as { placement?: unknown; handler?: unknown; title?: unknown };
    if (binding.handler === handler) bound.set(String(binding.placement).toUpperCase(), String(binding.title ?? ''));
  }
  const title = TAB_TITLES[language];
  const langAll = { en: { TITLE: TAB_TITLES.en }, ru: { TITLE: TAB_TITLES.ru }, la: { TITLE: TAB_TITLES.es } };
  const wanted = [...CRM_TAB_PLACEMENTS.map((tab) => tab.placement), ...smartProcessTypes(listed.smart_processes).map(dynamicTabPlacement)];
  const commands: BatchCommand[] = [];
  for (const placement of wanted) {
    const boundTitle = bound.get(placement);
    if (boundTitle === title) continue;
    if (boundTitle !== undefined) commands.push({ key: `unbind_${placement}`, method: 'placement.unbind', params: { PLACEMENT: placement, HANDLER: handler } });
    commands.push({ key: `placement_${placement}`, method: 'placement.bind', params: { PLACEMENT: placement, HANDLER: handler, TITLE: title, LANG_ALL: langAll } });
  }
  return commands;
}

/** crm.type.list → `{types: [{entityTypeId, …}]}` (docs/protocols.md B18). */
function smartProcessTypes(value: unknown): number[] {
  const types = value && typeof value === 'object' ? (value as { types?: unknown }).types : undefined;
  return phpList(types)
    .map((type) => Number(type && typeof type === 'object' ? (type as { entityTypeId?: unknown }).entityTypeId : Number.NaN))
    .filter((id) => Number.isInteger(id) && id > 0);
}
