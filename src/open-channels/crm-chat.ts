import { type BatchCommandError, describeCommandError } from '../bitrix24/batch-errors.js';

/**
 * A CRM record's latest Open Channel chat, as `imopenlines.crm.chat.getLastId` answers it
 * (docs/protocols.md B25): the chat Bitrix24's Open Channels logic bound to the record last, of any
 * connector. The CRM tab asks it in the batch that reads the record's phones, with the user's token.
 * - `found`: the chat's id; the page opens it in the messenger (`imOpenMessenger` `chat<id>`);
 * - `none`: Bitrix24 knows no chat for the record (or the user may not see it: the same answer);
 * - `unknown`: Bitrix24 would not say (the app lacks `imopenlines`, a transient failure…), with its words.
 */
export type OpenChannelChat = { state: 'found'; chatId: number } | { state: 'none' } | { state: 'unknown'; reason: string };

/** The method takes only these four types, by name (upper-cased on the portal's side); smart processes have none. */
const CRM_ENTITY_TYPES: Record<number, string> = { 1: 'lead', 2: 'deal', 3: 'contact', 4: 'company' };

/** The batch command for the record's latest Open Channel chat; undefined for a type the method does not take. */
export function lastChatCommand(record: { entityTypeId: number; entityId: number }): string | undefined {
  const type = CRM_ENTITY_TYPES[record.entityTypeId];
  return type ? `imopenlines.crm.chat.getLastId?CRM_ENTITY_TYPE=${type}&CRM_ENTITY=${record.entityId}` : undefined;
}

/**
 * The command's outcome inside a batch (docs/protocols.md B3): `result` is the chat id; no chat is an
 * error, 400 `CRM_CHAT_EMPTY_CRM_DATA` ("Could not find CRM entity"), which a batch reports in
 * `result_error` like any other, so it is told apart by its code.
 */
export function readLastChat(result: unknown, error: unknown): OpenChannelChat {
  if (error !== undefined) {
    const refusal = (error && typeof error === 'object' ? error : {}) as Partial<BatchCommandError>;
    if (refusal.error === 'CRM_CHAT_EMPTY_CRM_DATA') return { state: 'none' };
    return { state: 'unknown', reason: describeCommandError({ error: String(refusal.error ?? ''), error_description: String(refusal.error_description ?? '') }) };
  }
  const chatId = typeof result === 'string' && /^\d{1,15}$/.test(result) ? Number(result) : result;
  if (typeof chatId === 'number' && Number.isSafeInteger(chatId) && chatId > 0) return { state: 'found', chatId };
  return { state: 'unknown', reason: `Bitrix24 answered ${JSON.stringify(result)?.slice(0, 40)} instead of a chat id` };
}
