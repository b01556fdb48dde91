import { LRUCache } from 'lru-cache';
import { operatorName } from '../activities/operators.js';
import type { BitrixUsers } from '../bitrix24/users.js';
import type { Chat2DeskAccess } from '../chat2desk/access.js';
import { type Chat2DeskChannel, type Chat2DeskFullMessage, type Chat2DeskOperator, PAGE_LIMIT } from '../chat2desk/client.js';
import { type CachedClient, type CachedDialog, type DialogDirectory, latestFirst } from '../chat2desk/directory.js';
import { Chat2DeskError } from '../chat2desk/errors.js';
import { dialogUrl } from '../chat2desk/links.js';
import { parseChat2DeskTime } from '../chat2desk/times.js';
import type { Clock } from '../clock.js';
import type { OpenChannelChatStore } from '../db/open-channel-chats.js';
import type { Portal } from '../db/portals.js';
import type { Logger } from '../log.js';
import type { PortalSettings } from '../portal-settings.js';
import type { DialogViewer } from './scope.js';
import type { OperatorOfUser } from './viewer.js';
import { NOT_HERE, clientVisible, dialogVisible } from './visibility.js';

/** One dialog as every dialog API answers it (contracts-9 "The read API"): the CRM tab's and the workspace's lists, built by DialogReads.summaries. */
export interface DialogSummary {
  id: number;
  state: 'open' | 'closed';
  clientId: number | null;
  client: { id: number; name: string | null; phone: string | null; clientPhone: string | null; assignedName: string | null; tags: Array<{ id: number; label: string }> } | null;
  channel: { id: number; name: string } | null;
  transport: string | null;
  lastMessage: { text: string | null; at: string | null; type: string | null } | null;
  operator: { id: number; name: string; bitrixUserId: number | null } | null;
  lastRequestId: number | null;
  beginAt: string | null;
  endAt: string | null;
  chat2deskUrl: string;
}

export interface MessageView {
  id: number;
  type: string;
  text: string | null;
  at: string;
  operatorId: number | null;
  /** http(s) links only: anything else (javascript:, data:) is dropped. */
  attachments: Array<{ name: string; url: string }>;
  status: string | null;
}

export interface DialogsByPhone {
  phone: string;
  latest: DialogSummary | null;
  others: DialogSummary[];
}

/** Why a read could not be answered: 404 outside the viewer's scope (existence not revealed), 503 when Chat2Desk cannot be used, 502 when it failed. */
export class DialogReadError extends Error {
  override name = 'DialogReadError';
  constructor(
    message: string,
    readonly httpStatus: 400 | 404 | 502 | 503,
  ) {
    super(message);
  }
}

/** Messages per page unless asked otherwise, and the most one page may hold. */
export const DEFAULT_MESSAGE_PAGE = 20;
export const MAX_MESSAGE_PAGE = 50;
/** Chat2Desk pages read at most to find the messages before a given one (without an offset hint). */
const MAX_PAGES_BACK = 5;

export interface DialogReadsDeps {
  chat2desk: Chat2DeskAccess;
  users: Pick<BitrixUsers, 'byEmail' | 'byId'>;
  clock: Clock;
  log: Logger;
  /** Each client's latest Open Channel chat (Open Channels mode): one dialog's answer says it. */
  openChannelChats: Pick<OpenChannelChatStore, 'latest'>;
}

/**
 * In Open Channels mode, one dialog's answer also says its client's latest Open Channel chat in
 * Bitrix24, which the Chat workspace offers to open in the messenger: `found` with Bitrix24's chat id
 * and line, or `none` while no chat is known for the client (no message of theirs reached an Open
 * Channel since this was remembered: none yet, only before this version, or a line's filters kept
 * them out). Absent in Chat2Desk mode.
 */
export type DialogOpenChannelChat = { state: 'found'; chatId: number; lineId: number } | { state: 'none' };

/**
 * The read side of the dialog APIs (the CRM tab and, later, the Chat workspace): dialogs by phone,
 * one dialog, a dialog's history. Clients and dialogs come through the account's cached directory
 * (src/chat2desk/directory.ts), so a cold phone costs Chat2Desk "clients by phone" and "the client's
 * dialogs", and the history's first page one more request; operators and channels are account lists
 * cached beside them. Every answer is filtered by the viewer's scope (src/dialogs/visibility.ts).
 */
export class DialogReads implements OperatorOfUser {
  /**
   * Where the page after a given message starts in Chat2Desk's newest-first list, learned when that
   * message was served: "Load older" then costs one request. Messages arriving meanwhile shift the
   * offsets, so a page is filtered by id (docs/protocols.md B18) and read further when short.
   */
  readonly #olderOffsets = new LRUCache<string, number>({ max: 20_000 });

  constructor(private readonly deps: DialogReadsDeps) {}

  async byPhone(viewer: DialogViewer, phone: string): Promise<DialogsByPhone> {
    const digits = phone.replace(/\D/g, '');
    if (!/^\d{6,15}$/.test(digits)) throw new DialogReadError('phone must be the international number in digits', 400);
    if (viewer.scope.kind === 'record' && !viewer.scope.phones.includes(digits)) throw new DialogReadError(NOT_HERE, 404);
    const { directory, settings } = await this.#connection(viewer.portal);
    const pairs: Array<{ dialog: CachedDialog; client: CachedClient }> = [];
    await this.#chat2desk(async () => {
      const clients = (await directory.clientsByPhone(digits)).filter((client) => viewer.scope.kind !== 'record' || clientVisible(viewer, client));
      for (const client of clients) {
        for (const dialog of await directory.dialogsOfClient(client.id)) if (dialogVisible(viewer, dialog, client)) pairs.push({ dialog, client });
      }
    });
    pairs.sort((a, b) => latestFirst(a.dialog, b.dialog));
    const summaries = await this.#summaries(viewer.portal, directory, settings, pairs);
    return { phone: digits, latest: summaries[0] ?? null, others: summaries.slice(1) };
  }

  async dialog(viewer: DialogViewer, dialogId: number): Promise<DialogSummary & { openChannelChat?: DialogOpenChannelChat }> {
    const { directory, settings } = await this.#connection(viewer.portal);
    const pair = await this.#visibleDialog(viewer, directory, dialogId);
    const summary = (await this.#summaries(viewer.portal, directory, settings, [pair]))[0]!;
    if (settings.integrationType !== 'open_channels') return summary;
    const chat = summary.clientId === null ? undefined : await this.deps.openChannelChats.latest(viewer.portal.memberId, summary.clientId);
    return { ...summary, openChannelChat: chat ? { state: 'found', chatId: chat.imChatId, lineId: chat.lineId } : { state: 'none' } };
  }

  /** A page of the dialog's messages, oldest first; `before` = the oldest message the page already shows. */
  async messages(viewer: DialogViewer, dialogId: number, page: { before?: number; limit: number }): Promise<{ messages: MessageView[]; older: boolean }> {
    const { directory } = await this.#connection(viewer.portal);
    await this.#visibleDialog(viewer, directory, dialogId);
    const limit = Math.max(1, Math.min(MAX_MESSAGE_PAGE, page.limit));
    const hintKey = (messageId: number) => `${directory.accountKey} ${dialogId} ${messageId}`;
    const hint = page.before === undefined ? 0 : this.#olderOffsets.get(hintKey(page.before));
    let offset = hint ?? 0;
    // Reading one more than asked tells whether anything older is left without another request; without
    // a hint (the server restarted) the message is searched for in Chat2Desk's largest pages.
    const pageSize = hint === undefined ? PAGE_LIMIT : limit + 1;
    const found: Array<{ message: Chat2DeskFullMessage; offset: number }> = [];
    for (let read = 0; read < MAX_PAGES_BACK && found.length <= limit; read++) {
      const batch = await this.#chat2desk(() => directory.api.dialogMessagesPage(dialogId, { limit: pageSize, offset }));
      batch.forEach((message, index) => {
        if (message.dialog_id !== undefined && message.dialog_id !== dialogId) return;
        if (page.before !== undefined && message.id >= page.before) return;
        if (found.some((seen) => seen.message.id === message.id)) return;
        found.push({ message, offset: offset + index });
      });
      if (batch.length < pageSize) break;
      offset += batch.length;
    }
    found.sort((a, b) => b.message.id - a.message.id);
    const shown = found.slice(0, limit);
    const older = found.length > limit;
    const oldest = shown[shown.length - 1];
    if (oldest) this.#olderOffsets.set(hintKey(oldest.message.id), oldest.offset + 1);
    return { messages: shown.reverse().map(({ message }) => messageView(message)), older };
  }

  /**
   * DialogSummary of each dialog, in order (the workspace's lists): clients, channels and operators
   * from the cache, one Chat2Desk request per cold client; a client Chat2Desk no longer has leaves
   * its dialog without one. The caller has checked the viewer's scope.
   */
  async summaries(portal: Portal, directory: DialogDirectory, settings: PortalSettings, dialogs: CachedDialog[]): Promise<DialogSummary[]> {
    const clientIds = [...new Set(dialogs.map((dialog) => dialog.clientId))];
    const clients = new Map(await this.#chat2desk(() => Promise.all(clientIds.map(async (id) => [id, await clientOf(directory, id)] as const))));
    const pairs = dialogs.map((dialog) => ({ dialog, client: clients.get(dialog.clientId) ?? null }));
    return this.#summaries(portal, directory, settings, pairs);
  }

  /** OperatorOfUser: the operator mapped to this Bitrix24 user in the settings, else the one with the user's e-mail. */
  async operatorOf(portal: Portal, userId: number): Promise<number | undefined> {
    const connection = await this.deps.chat2desk.connect(portal);
    const mapped = Object.entries(connection.settings.operatorMap).find(([, user]) => user === userId)?.[0];
    if (mapped !== undefined) return Number(mapped);
    if (!connection.usable) return undefined;
    try {
      const user = await this.deps.users.byId(portal.memberId, userId);
      const email = user?.EMAIL?.trim().toLowerCase();
      if (!email) return undefined;
      const operators = await connection.directory.operators();
      return operators.find((operator) => operator.email?.trim().toLowerCase() === email && operator.role !== 'deleted' && operator.role !== 'disabled')?.id;
    } catch (error) {
      // Reading stays possible when the e-mail match cannot be made; only writes need the operator.
      this.deps.log.warn({ memberId: portal.memberId, err: error instanceof Error ? error.message : String(error) }, 'operator of a user not found by e-mail');
      return undefined;
    }
  }

  async #connection(portal: Portal): Promise<{ directory: DialogDirectory; settings: PortalSettings }> {
    const connection = await this.deps.chat2desk.connect(portal);
    if (!connection.usable) throw new DialogReadError(connection.reason, 503);
    return { directory: connection.directory, settings: connection.settings };
  }

  async #visibleDialog(viewer: DialogViewer, directory: DialogDirectory, dialogId: number): Promise<{ dialog: CachedDialog; client: CachedClient | null }> {
    const pair = await this.#chat2desk(
      async () => {
        const dialog = await directory.dialog(dialogId);
        return { dialog, client: await clientOf(directory, dialog.clientId) };
      },
      { notFoundIsHidden: true },
    );
    if (!dialogVisible(viewer, pair.dialog, pair.client)) throw new DialogReadError(NOT_HERE, 404);
    return pair;
  }

  async #summaries(
    portal: Portal,
    directory: DialogDirectory,
    settings: PortalSettings,
    pairs: Array<{ dialog: CachedDialog; client: CachedClient | null }>,
  ): Promise<DialogSummary[]> {
    if (pairs.length === 0) return [];
    const [operators, channels] = await this.#chat2desk(() => Promise.all([directory.operators(), directory.channels()]));
    const operatorIds = [...new Set(pairs.map(({ dialog }) => dialog.operatorId).filter((id): id is number => id !== null))];
    // A workspace page names many operators: their users are looked up together (each cached by src/bitrix24/users.ts).
    const bitrixUsers = new Map(await Promise.all(operatorIds.map(async (operatorId) => [operatorId, await this.#bitrixUserOf(portal, settings, operators, operatorId)] as const)));
    return pairs.map(({ dialog, client }) => summary(dialog, client, operators, channels, bitrixUsers, settings.chat2deskApiUrl));
  }

  /** The Bitrix24 user of an operator: operatorMap, then the same e-mail; unknown when the portal cannot say. */
  async #bitrixUserOf(portal: Portal, settings: PortalSettings, operators: Chat2DeskOperator[], operatorId: number): Promise<number | null> {
    const mapped = settings.operatorMap[String(operatorId)];
    if (mapped !== undefined) return mapped;
    const email = operators.find((operator) => operator.id === operatorId)?.email?.trim();
    if (!email) return null;
    try {
      const user = await this.deps.users.byEmail(portal.memberId, email);
      return user ? Number(user.ID) : null;
    } catch {
      return null; // the preview shows the operator's name without their Bitrix24 user
    }
  }

  /** Chat2Desk failures as read errors: its "not found" is our 404 where asked, anything else 502. */
  async #chat2desk<T>(read: () => Promise<T>, options: { notFoundIsHidden?: boolean } = {}): Promise<T> {
    try {
      return await read();
    } catch (error) {
      if (error instanceof DialogReadError) throw error;
      if (error instanceof Chat2DeskError && options.notFoundIsHidden && error.kind === 'not_found') throw new DialogReadError(NOT_HERE, 404);
      throw new DialogReadError(`Chat2Desk could not be read: ${error instanceof Error ? error.message : String(error)}`, 502);
    }
  }
}

/** A dialog's client; null when it has none yet or Chat2Desk no longer has it (the dialog is then shown without one, and no record scope sees it). */
async function clientOf(directory: DialogDirectory, clientId: number | null): Promise<CachedClient | null> {
  if (clientId === null) return null;
  try {
    return await directory.client(clientId);
  } catch (error) {
    if (error instanceof Chat2DeskError && error.kind === 'not_found') return null;
    throw error;
  }
}

function iso(value: string | null | undefined): string | null {
  const ms = parseChat2DeskTime(value);
  return ms === undefined ? null : new Date(ms).toISOString();
}

function summary(
  dialog: CachedDialog,
  client: CachedClient | null,
  operators: Chat2DeskOperator[],
  channels: Chat2DeskChannel[],
  bitrixUsers: Map<number, number | null>,
  apiUrl: string,
): DialogSummary {
  const operator = dialog.operatorId === null ? undefined : operators.find((item) => item.id === dialog.operatorId);
  const channel = dialog.channelId === null ? undefined : channels.find((item) => item.id === dialog.channelId);
  return {
    id: dialog.id,
    state: dialog.state === 'closed' ? 'closed' : 'open',
    clientId: dialog.clientId,
    client: client && { id: client.id, name: client.name, phone: client.phone, clientPhone: client.clientPhone, assignedName: client.assignedName, tags: client.tags },
    channel: dialog.channelId === null ? null : { id: dialog.channelId, name: channel?.name ?? `#${dialog.channelId}` },
    transport: dialog.transport,
    lastMessage:
      dialog.lastMessageAt === null && dialog.lastMessageText === null ? null : { text: dialog.lastMessageText, at: iso(dialog.lastMessageAt), type: dialog.lastMessageType },
    operator:
      dialog.operatorId === null
        ? null
        : { id: dialog.operatorId, name: operatorName(operator) || `#${dialog.operatorId}`, bitrixUserId: bitrixUsers.get(dialog.operatorId) ?? null },
    lastRequestId: dialog.lastRequestId,
    beginAt: iso(dialog.beginAt),
    endAt: iso(dialog.endAt),
    chat2deskUrl: dialogUrl(apiUrl, dialog.id),
  };
}

/** Only http(s) links reach the page: a `javascript:` or `data:` link from a stranger must never be clickable. */
export function safeLink(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  try {
    const url = new URL(value.trim());
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.toString() : undefined;
  } catch {
    return undefined;
  }
}

function messageView(message: Chat2DeskFullMessage): MessageView {
  const attachments: MessageView['attachments'] = [];
  for (const attachment of message.attachments ?? []) {
    const url = safeLink(attachment?.link);
    if (url) attachments.push({ name: typeof attachment.name === 'string' && attachment.name ? attachment.name : (url.split('/').pop() ?? url), url });
  }
  // Older messages carry one file in a field of its own (docs/protocols.md C8).
  for (const legacy of [message.photo, message.video, message.audio, message.pdf]) {
    const url = safeLink(legacy);
    if (url && !attachments.some((item) => item.url === url)) attachments.push({ name: decodeURIComponent(url.split('/').pop() || url), url });
  }
  const status = (message as { status?: unknown }).status;
  return {
    id: message.id,
    type: message.type ?? 'system',
    text: message.text ?? null,
    at: iso(message.created) ?? new Date(0).toISOString(),
    operatorId: message.operator_id ?? null,
    attachments,
    status: typeof status === 'string' ? status : null,
  };
}
