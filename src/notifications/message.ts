import { bbcodeLink, escapeBbcode } from '../episodes/comment.js';
import type { PortalLanguage } from '../triggers/triggers.js';

export interface IncomingNotice {
  /** Incoming messages since the last notification of this dialog (at least one). */
  count: number;
  /** The client as Chat2Desk names them; plain text, escaped here. */
  client: string;
  dialogUrl: string;
  /** Where `dialogUrl` opens (settings `openLinksIn`): the link's words say so. */
  opensIn: 'chat2desk' | 'app';
}

const WORDS: Record<PortalLanguage, { messages: (count: number) => string; from: string; open: string; openInApp: string }> = {
  en: { messages: (n) => (n === 1 ? '1 new message' : `${n} new messages`), from: 'from', open: 'Open the dialog in Chat2Desk', openInApp: 'Open the dialog in the app' },
  ru: {
    messages: (n) => {
      const form = new Intl.PluralRules('ru').select(n);
      return `${n} ${form === 'one' ? 'новое сообщение' : form === 'few' ? 'новых сообщения' : 'новых сообщений'}`;
    },
    from: 'от',
    open: 'Открыть диалог в Chat2Desk',
    openInApp: 'Открыть диалог в приложении',
  },
  es: {
    messages: (n) => (n === 1 ? '1 mensaje nuevo' : `${n} mensajes nuevos`),
    from: 'de',
    open: 'Abrir el diálogo en Chat2Desk',
    openInApp: 'Abrir el diálogo en la aplicación',
  },
};

/**
 * The notification's text, e.g. "Chat2Desk: 3 new messages from Anna" and a link to the dialog.
 * Bitrix24 notifications take BBCode (docs/protocols.md B17): the client's name has its brackets
 * made harmless like a timeline comment's text, and the link is http(s) only.
 */
export function renderIncomingNotice(notice: IncomingNotice, language: PortalLanguage): string {
  const t = WORDS[language];
  return `[b]Chat2Desk[/b]: ${t.messages(notice.count)} ${t.from} ${escapeBbcode(notice.client)}\n${bbcodeLink(notice.dialogUrl, notice.opensIn === 'app' ? t.openInApp : t.open)}`;
}

/**
 * Our app page in the portal, opening this dialog. Protocol assumption (docs/protocols.md B19): an
 * app's page is `https://<portal>/marketplace/app/<app ID>/`, and Bitrix24 hands the address's query
 * to the page as PLACEMENT_OPTIONS of the DEFAULT placement, where POST /app reads `dialog`.
 */
export function appDialogUrl(portalDomain: string, appId: string, dialogId: number): string {
  return `https://${portalDomain}/marketplace/app/${encodeURIComponent(appId)}/?dialog=${dialogId}`;
}
