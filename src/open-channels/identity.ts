// The conversation identity we give Bitrix24 (contracts-10 "Conversation identity"):
// the connector user is the Chat2Desk client (`c<client id>`); the Open Channel chat is the
// client (`c<client id>`, chatPer client) or one Chat2Desk request (`r<request id>`, chatPer request).
// Bitrix24 echoes `[chat][id]` back in OnImConnectorMessage* (docs/protocols.md B22), so the outbound
// side maps it back with parseChatId().

export type ChatIdentity = { kind: 'client'; clientId: number } | { kind: 'request'; requestId: number };

export function clientUserId(clientId: number): string {
  return `c${clientId}`;
}

export function clientChatId(clientId: number): string {
  return `c${clientId}`;
}

export function requestChatId(requestId: number): string {
  return `r${requestId}`;
}

export function chatIdFor(identity: ChatIdentity): string {
  return identity.kind === 'client' ? clientChatId(identity.clientId) : requestChatId(identity.requestId);
}

/** `c123` → client 123, `r45` → request 45; anything else (not ours, or malformed) → null. */
export function parseChatId(chatId: string): ChatIdentity | null {
  const match = /^([cr])([1-9][0-9]{0,15})$/.exec(chatId.trim());
  if (!match) return null;
  const id = Number(match[2]);
  if (!Number.isSafeInteger(id)) return null;
  return match[1] === 'c' ? { kind: 'client', clientId: id } : { kind: 'request', requestId: id };
}

/**
 * The ordering key of one conversation, shared by both directions (ol_inbound, ol_outbound):
 * `ol:<memberId>:c<client id>` under the jobs table's held prefix (src/db/jobs.ts HELD_ORDERING_PREFIX),
 * so a message waiting between attempts (Bitrix24 down, held until an operator joins) keeps the
 * later ones of its conversation behind it however long it waits: nothing overtakes it.
 */
export function conversationOrderingKey(memberId: string, clientId: number): string {
  return `held:ol:${memberId}:c${clientId}`;
}

/**
 * The Chat2Desk `external_id` (docs/protocols.md C2: echoed back in webhooks and GET /messages) of a
 * message an Open Channel operator wrote, sent by the outbound side: `b24ol:<Bitrix24 im message id>`.
 * Its `outbox` echo is not sent back into the Open Channel (it is there already).
 */
export const OPEN_CHANNEL_EXTERNAL_ID_PREFIX = 'b24ol:';

export function openChannelExternalId(imMessageId: number | string): string {
  return `${OPEN_CHANNEL_EXTERNAL_ID_PREFIX}${imMessageId}`;
}

export function isOpenChannelExternalId(externalId: unknown): boolean {
  return typeof externalId === 'string' && externalId.startsWith(OPEN_CHANNEL_EXTERNAL_ID_PREFIX);
}
