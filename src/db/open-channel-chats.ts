import { and, eq, lte } from 'drizzle-orm';
import type { DatabaseAccess } from './database.js';
import { changes } from './dialect.js';
import { openChannelChats } from './schema.js';

/** A client's latest Open Channel chat: the line and our connector's chat id, and Bitrix24's chat. */
export interface OpenChannelChatRow {
  lineId: number;
  chatId: string;
  imChatId: number;
  sentAt: number;
}

/**
 * Each Chat2Desk client's latest Open Channel chat in Bitrix24, per portal (Open Channels mode):
 * Bitrix24 names the chat in its answer to a message it took (`session.CHAT_ID`, docs/protocols.md
 * B22), and nothing else tells it by our connector's ids without a guess, so it is kept here for the
 * Chat workspace's dialog view (src/dialogs/dialog-reads.ts).
 */
export class OpenChannelChatStore {
  constructor(private readonly database: DatabaseAccess) {}

  async latest(memberId: string, clientId: number): Promise<OpenChannelChatRow | undefined> {
    const [row] = await this.database.db
      .select({ lineId: openChannelChats.lineId, chatId: openChannelChats.chatId, imChatId: openChannelChats.imChatId, sentAt: openChannelChats.sentAt })
      .from(openChannelChats)
      .where(and(eq(openChannelChats.memberId, memberId), eq(openChannelChats.clientId, clientId)));
    return row;
  }

  /**
   * The chat Bitrix24 named for a message of the client it took at `sentAt` (the message's own time,
   * ms). A message sent earlier than the one recorded (a retry finishing late, a held message
   * released after newer ones) does not replace it: the row is the chat of the client's latest message.
   * Whether the row was written (false: a later message's chat is remembered already).
   */
  async remember(memberId: string, clientId: number, chat: { lineId: number; chatId: string; imChatId: number; sentAt: number }): Promise<boolean> {
    const values = { lineId: chat.lineId, chatId: chat.chatId, imChatId: chat.imChatId, sentAt: chat.sentAt };
    const result = await this.database.db
      .insert(openChannelChats)
      .values({ memberId, clientId, ...values })
      .onConflictDoUpdate({ target: [openChannelChats.memberId, openChannelChats.clientId], set: values, setWhere: lte(openChannelChats.sentAt, chat.sentAt) });
    return changes(result) > 0;
  }
}
