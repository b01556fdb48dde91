import { randomBytes } from 'node:crypto';
import type { Browser, FrameLocator, Page } from 'playwright-core';
import type { FakeBitrix24 } from '../fakes/bitrix24.js';

/**
 * A fake Bitrix24 parent page that opens our app page the way the portal does
 * (docs/protocols.md B13; the recipe of pages-and-modes.md §3.7): it is served by the fake portal on
 * its own origin (127.0.0.1:<port>), holds an iframe named `DOMAIN|PROTOCOL|APP_SID`, POSTs the
 * §2.1 fields into it with a hidden form, and answers the frame protocol (§3.2–3.4): getInitData,
 * resizeWindow (the frame takes the asked height), refreshAuth (a fresh token minted by the fake),
 * setInstallFinish (no answer: recorded, the fake counts the app installed), reloadWindow (the form
 * is posted again with fresh tokens), selectUser and selectAccess (the test's `picks`), imOpenMessenger (no
 * answer, as the portal: recorded with its params, the messenger "opened"). Every message is recorded. The app page is opened at
 * `localhost`, so parent and app are different origins, as in production.
 */
export interface ParentFrame {
  page: Page;
  app: FrameLocator;
  /** Messages the app page sent to the parent, as received. */
  messages(): Promise<string[]>;
  /** The params of each imOpenMessenger the page sent (`{dialogId}`), which the portal never answers (pages-and-modes §3.3). */
  messengerOpened(): Promise<Array<Record<string, unknown>>>;
  /** The iframe's height in the parent, in CSS pixels. */
  frameHeight(): Promise<number>;
  /** The portal opens the app again (a reload): a new POST with fresh tokens; resolves when the page is ready. */
  reopen(): Promise<void>;
  ready(): Promise<void>;
  close(): Promise<void>;
}

export interface ParentFrameOptions {
  b24: FakeBitrix24;
  /** Our server's URL (http://127.0.0.1:<port>); the page is opened at http://localhost:<port>. */
  serverUrl: string;
  userId?: number;
  /** POST /install (install mode: INSTALL true in getInitData, installFinish expected) instead of /app. */
  install?: boolean;
  lang?: string;
  /** Replaces the portal's browser-side fields (a forged DOMAIN or SERVER_ENDPOINT). */
  overrides?: { domain?: string; serverEndpoint?: string };
  width?: number;
  /**
   * Open a placement instead of the app page: POST /tab with this PLACEMENT (e.g. CRM_DEAL_DETAIL_TAB)
   * and PLACEMENT_OPTIONS (a JSON string in the POST, an object in getInitData; docs/protocols.md B9, B13).
   */
  placement?: string;
  placementOptions?: Record<string, unknown>;
  /** Runs on the parent page before the app is opened (a test's request routes). */
  beforeOpen?: (page: Page) => Promise<void>;
  /** What the portal's pickers answer: selectUser `{mult: true}` (SelectedUser[]) and selectAccess (SelectedAccess[], ids such as `D7`, `DR7`, `U3`). */
  picks?: { users?: Array<{ id: string; name: string }>; access?: Array<{ id: string; name: string }> };
}

export async function openInParentFrame(browser: Browser, options: ParentFrameOptions): Promise<ParentFrame> {
  const { b24 } = options;
  const userId = options.userId ?? 1;
  const appOrigin = options.serverUrl.replace('127.0.0.1', 'localhost');
  const appSid = randomBytes(8).toString('hex');
  const frameName = `${b24.domain}|0|${appSid}`;
  const path = `/page/parent-${appSid}`;
  const query = new URLSearchParams({ DOMAIN: options.overrides?.domain ?? b24.domain, PROTOCOL: '0', LANG: options.lang ?? 'en', APP_SID: appSid });
  // PLACEMENT=DEFAULT is the app page itself (with PLACEMENT_OPTIONS from a link: docs/protocols.md B19).
  // SETTING_CONNECTOR is the connector's settings page (its PLACEMENT_HANDLER, README "Open Channels mode").
  const target = options.placement === 'SETTING_CONNECTOR' ? '/connector' : options.placement && options.placement !== 'DEFAULT' ? '/tab' : options.install ? '/install' : '/app';
  const action = `${appOrigin}${target}?${query}`;
  b24.servePage(path, parentHtml({ frameName, action, appOrigin, appSid }));

  const page = await browser.newPage({ viewport: { width: options.width ?? 1100, height: 900 } });
  const problems: string[] = [];
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') problems.push(`console ${message.type()}: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  const mint = () => {
    const auth = b24.issueAuth(userId);
    return {
      AUTH_ID: auth.access_token,
      AUTH_EXPIRES: auth.expires_in,
      REFRESH_ID: auth.refresh_token,
      SERVER_ENDPOINT: options.overrides?.serverEndpoint ?? auth.server_endpoint,
      APPLICATION_TOKEN: b24.applicationToken,
      APPLICATION_SCOPE: b24.scope,
      member_id: b24.memberId,
      status: 'L',
      PLACEMENT: options.placement ?? 'DEFAULT',
      // PHP json_encode escapes slashes (examples/placement-crm-deal-detail-tab.printr.txt).
      PLACEMENT_OPTIONS: options.placementOptions ? JSON.stringify(options.placementOptions).replace(/\//g, '\\/') : '',
      PLACEMENT_OBJECT: options.placementOptions ?? {},
    };
  };
  await page.exposeFunction('__portal', (what: string) => {
    if (what === 'auth') return { ...mint(), LANG: options.lang ?? 'en', DOMAIN: b24.domain, MEMBER_ID: b24.memberId, IS_ADMIN: userId === 1, INSTALL: Boolean(options.install) };
    if (what === 'installFinish') b24.installFinish();
    if (what === 'pickedUsers') return options.picks?.users ?? [];
    if (what === 'pickedAccess') return options.picks?.access ?? [];
    return null;
  });
  await options.beforeOpen?.(page);
  const app = page.frameLocator('#app-frame');
  const ready = async () => {
    try {
      await app.locator('body[data-ready="yes"]').waitFor({ timeout: 20_000 });
    } catch (error) {
      // What the browser said is the only clue to why a page in a frame never got ready.
      const frames = page.frames().map((frame) => frame.url());
      const html = await app
        .locator('body')
        .innerHTML({ timeout: 1000 })
        .catch(() => '(no body)');
      throw new Error(`the app page did not get ready: ${(error as Error).message}\nframes: ${frames.join(', ')}\n${problems.join('\n')}\n${html.slice(0, 1500)}`);
    }
  };
  await page.goto(`${b24.portalUrl}${path}`);
  await ready();
  return {
    page,
    app,
    messages: () => page.evaluate(() => (window as unknown as { __messages: string[] }).__messages.slice()),
    messengerOpened: () => page.evaluate(() => (window as unknown as { __messenger: Array<Record<string, unknown>> }).__messenger.slice()),
    frameHeight: () => page.evaluate(() => (document.getElementById('app-frame') as HTMLIFrameElement).getBoundingClientRect().height),
    async reopen() {
      await page.evaluate(() => (window as unknown as { __open: () => Promise<void> }).__open());
      await ready();
    },
    ready,
    close: () => page.close(),
  };
}

/** The parent page: runs in the browser, so it is plain script text. */
function parentHtml(input: { frameName: string; action: string; appOrigin: string; appSid: string }): string {
  const config = JSON.stringify(input).replace(/</g, '\\u003c');
  return `<!doctype html><html><head><meta charset="utf-8"><title>Fake Bitrix24</title>
<style>body{margin:0;font:14px sans-serif;background:#eef2f4} header{height:48px;background:#2fc6f6} #host{margin:16px}</style></head>
<body><header></header><div id="host"><iframe id="app-frame" name="${input.frameName}" style="width:100%;height:200px;border:0;display:block;background:#fff"></iframe></div>
<form id="open" method="POST" target="" style="display:none"></form>
<script>
const config = ${config};
const frame = document.getElementById('app-frame');
window.__messages = [];
window.__messenger = [];
let current = null;
async function open() {
  current = await window.__portal('auth');
  const form = document.getElementById('open');
  form.target = config.frameName;
  form.action = config.action;
  form.replaceChildren();
  for (const name of ['AUTH_ID','AUTH_EXPIRES','REFRESH_ID','SERVER_ENDPOINT','APPLICATION_TOKEN','APPLICATION_SCOPE','member_id','status','PLACEMENT','PLACEMENT_OPTIONS']) {
    const input = document.createElement('input');
    input.type = 'hidden'; input.name = name; input.value = current[name];
    form.append(input);
  }
  const loaded = new Promise((resolve) => frame.addEventListener('load', resolve, { once: true }));
  form.submit();
  await loaded;
}
window.__open = open;
function answer(callback, result) {
  frame.contentWindow.postMessage(callback + ':' + (result === undefined ? '' : JSON.stringify(result)), config.appOrigin);
}
window.addEventListener('message', async (event) => {
  if (event.origin !== config.appOrigin || typeof event.data !== 'string') return;
  window.__messages.push(event.data);
  const parts = event.data.split(':');
  const method = parts[0];
  const sid = parts[parts.length - 1];
  const callback = parts.length >= 3 ? parts[parts.length - 2] : '';
  const params = parts.length >= 4 ? JSON.parse(parts.slice(1, -2).join(':') || '{}') : {};
  if (sid !== config.appSid) return;
  if (method === 'getInitData') {
    answer(callback, { LANG: current.LANG, DOMAIN: current.DOMAIN, PROTOCOL: 0, PATH: '/rest/', AUTH_ID: current.AUTH_ID, AUTH_EXPIRES: current.AUTH_EXPIRES,
      REFRESH_ID: current.REFRESH_ID, MEMBER_ID: current.MEMBER_ID, FIRST_RUN: false, IS_ADMIN: current.IS_ADMIN, INSTALL: current.INSTALL,
      USER_OPTIONS: {}, APP_OPTIONS: {}, PLACEMENT: current.PLACEMENT, PLACEMENT_OPTIONS: current.PLACEMENT_OBJECT });
  } else if (method === 'resizeWindow') {
    if (typeof params.height === 'number') frame.style.height = params.height + 'px';
    answer(callback, { width: frame.clientWidth, height: frame.clientHeight });
  } else if (method === 'refreshAuth') {
    current = await window.__portal('auth');
    answer(callback, { AUTH_ID: current.AUTH_ID, AUTH_EXPIRES: current.AUTH_EXPIRES, REFRESH_ID: current.REFRESH_ID });
  } else if (method === 'setInstallFinish') {
    // The portal saves and reloads its own page; it never answers (pages-and-modes §3.3).
    await window.__portal('installFinish');
  } else if (method === 'reloadWindow') {
    open();
  } else if (method === 'imOpenMessenger') {
    // The portal opens its messenger on the dialog and never answers (pages-and-modes §3.3).
    window.__messenger.push(params);
  } else if (method === 'selectUser') {
    answer(callback, await window.__portal('pickedUsers'));
  } else if (method === 'selectAccess') {
    answer(callback, await window.__portal('pickedAccess'));
  } else if (callback) {
    answer(callback, undefined);
  }
});
open();
</script></body></html>`;
}
