import { systemClock } from '../../src/clock.js';
import { OpenLineStore } from '../../src/db/open-lines.js';
import { CONNECTOR_ID } from '../../src/open-channels/connector.js';
import { DEFAULT_LINE_OPTIONS } from '../../src/open-channels/lines.js';
import type { Stack } from './stack.js';

/**
 * A client's conversation in the portal's Open Channel line 1, started the way our connector starts
 * one (imconnector.send.messages with the app's token, after activating the line), then bound to a CRM
 * record as Bitrix24's Open Channels logic does. The fake makes no CRM records for Open Channel chats,
 * so the binding is its test API (linkOpenLineChatToCrm, docs/protocols.md B25). Needs the connector
 * registered: the portal in Open Channels mode. Returns the chat's Bitrix24 id (imOpenMessenger's `chat<id>`).
 */
export async function openChannelChatOf(
  stack: Pick<Stack, 'b24' | 'server'>,
  record: { entityTypeId: number; entityId: number },
  externalChatId = `c${record.entityTypeId}0${record.entityId}`,
): Promise<number> {
  const { memberId } = stack.b24;
  await stack.server.rest.call(memberId, 'imconnector.activate', { CONNECTOR: CONNECTOR_ID, LINE: 1, ACTIVE: 1 });
  await stack.server.rest.call(memberId, 'imconnector.send.messages', {
    CONNECTOR: CONNECTOR_ID,
    LINE: 1,
    MESSAGES: [
      { user: { id: externalChatId, name: 'Ana' }, message: { id: `m-${externalChatId}`, date: Math.floor(Date.now() / 1000), text: 'Hola' }, chat: { id: externalChatId } },
    ],
  });
  return stack.b24.linkOpenLineChatToCrm({ line: 1, externalChatId, ...record });
}

/**
 * Open Channel line `lineId` connected to the portal's Chat2Desk account as the connector's settings
 * page does: the line exists in the portal, the connector is activated on it, and our store holds it
 * with the default options. Needs the portal in Open Channels mode (the connector registered).
 */
export async function connectOpenLine(stack: Pick<Stack, 'b24' | 'server'>, lineId = 1): Promise<void> {
  if (!stack.b24.openLines.has(lineId)) stack.b24.openLines.set(lineId, { id: lineId, name: `Line ${lineId}`, active: true });
  await stack.server.rest.call(stack.b24.memberId, 'imconnector.activate', { CONNECTOR: CONNECTOR_ID, LINE: lineId, ACTIVE: 1 });
  await new OpenLineStore(stack.server.database, systemClock).save(stack.b24.memberId, lineId, DEFAULT_LINE_OPTIONS);
}
