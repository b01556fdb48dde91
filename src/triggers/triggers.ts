import type { Localized } from '../activities/activity.js';
import type { BatchCommand } from '../bitrix24/rest-client.js';
import { phpList } from '../bitrix24/values.js';

/** Our app triggers in CRM automation (docs/protocols.md B16), by what fires them. */
export const TRIGGER_CODES = {
  clientWrote: 'c2d_client_wrote',
  dialogClosed: 'c2d_dialog_closed',
  notDelivered: 'c2d_not_delivered',
} as const;

export type TriggerCode = (typeof TRIGGER_CODES)[keyof typeof TRIGGER_CODES];

export const TRIGGERS: ReadonlyArray<{ code: TriggerCode; name: Localized }> = [
  {
    code: TRIGGER_CODES.clientWrote,
    name: { en: 'Client wrote in Chat2Desk', ru: 'Клиент написал в Chat2Desk', es: 'El cliente escribió en Chat2Desk' },
  },
  {
    code: TRIGGER_CODES.dialogClosed,
    name: { en: 'Chat2Desk dialog closed', ru: 'Диалог в Chat2Desk закрыт', es: 'Diálogo de Chat2Desk cerrado' },
  },
  {
    code: TRIGGER_CODES.notDelivered,
    name: { en: 'Chat2Desk message not delivered', ru: 'Сообщение Chat2Desk не доставлено', es: 'Mensaje de Chat2Desk no entregado' },
  },
];

export type PortalLanguage = keyof Localized;

/**
 * The portal's language from Bitrix24's LANGUAGE_ID (app.info, docs/protocols.md B1): Russian for
 * the CIS portals, Spanish for `la` (Bitrix24's id for it) and `es`, English otherwise.
 */
export function portalLanguage(languageId: unknown): PortalLanguage {
  const code = typeof languageId === 'string' ? languageId.toLowerCase() : '';
  if (code === 'ru' || code === 'ua' || code === 'by' || code === 'kz') return 'ru';
  if (code === 'la' || code === 'es') return 'es';
  return 'en';
}

/**
 * The commands that make the portal's triggers match ours: crm.automation.trigger.add for each one
 * missing or named otherwise (a repeated add with the same CODE renames it, docs/protocols.md B16),
 * nothing for the rest, so registering again is safe and cheap. A trigger's NAME is one string,
 * not a language map like a robot's, so it is written in the portal's language.
 */
export function triggerCommands(listed: unknown, language: PortalLanguage): BatchCommand[] {
  const names = new Map<string, string>();
  for (const item of phpList(listed)) {
    if (item && typeof item === 'object') names.set(String((item as Record<string, unknown>).CODE), String((item as Record<string, unknown>).NAME ?? ''));
  }
  return TRIGGERS.filter((trigger) => names.get(trigger.code) !== trigger.name[language]).map((trigger) => ({
    key: `trigger_${trigger.code}`,
    method: 'crm.automation.trigger.add',
    params: { CODE: trigger.code, NAME: trigger.name[language] },
  }));
}

/** crm.enum.ownertype ids of the records a trigger fires on (docs/protocols.md B16). */
export const OWNER_TYPE_ID = { lead: 1, deal: 2, contact: 3, company: 4 } as const;
