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
