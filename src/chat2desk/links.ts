/**
 * The dialog in Chat2Desk's web app. Protocol assumption (docs/protocols.md C1 lists the
 * hosts, not the page): the web app lives on the API host with `api.` replaced by `web.`
 * (api.chat2desk.com → web.chat2desk.com, api.chat2desk.com.mx → web.chat2desk.com.mx,
 * api.chat24.io → web.chat24.io), and `/chat/all?dialogID=<id>` opens a dialog there.
 */
export function dialogUrl(apiUrl: string, dialogId: number): string {
  const api = new URL(apiUrl);
  return `${api.protocol}//${api.host.replace(/^api\./, 'web.')}/chat/all?dialogID=${dialogId}`;
}
