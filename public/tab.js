// The CRM tab's script. The page is rendered by our server (templates/tab.hbs) with a tab token bound
// to the card's record and its phones; this talks to the Bitrix24 parent frame through the official
// b24jssdk (resize, refreshAuth), shows the phone switcher and mounts the dialog view
// (public/dialog-view.js), which reads our dialog API with the token as bearer. No cookies.
import { debounce, startLive } from './live.js';
import { createPhoneView, el } from './dialog-view.js';

const data = JSON.parse(document.getElementById('page-data').textContent);
const t = data.t || {};
const lang = data.lang || 'en';
let token = data.token;
let b24 = null;

// The frame follows its content both ways. fitWindow sends width "100%" with the document's
// scrollHeight, which never falls below the frame's own height: the frame could only grow. Content
// shorter than the frame is first given its own height at the frame's present width (resizeWindow
// takes numbers only: b24jssdk frame/parent.mjs), then fitWindow gives the portal back "100%".
function contentHeight() {
  const style = getComputedStyle(document.body);
  return Math.ceil(document.body.getBoundingClientRect().height + Number.parseFloat(style.marginTop) + Number.parseFloat(style.marginBottom));
}

let fitPending = false;
function fit() {
  if (!b24 || fitPending) return;
  fitPending = true;
  requestAnimationFrame(async () => {
    fitPending = false;
    const height = contentHeight();
    const frame = document.documentElement;
    if (height > 0 && height < frame.clientHeight) await b24.parent.resizeWindow(frame.clientWidth, height).catch(() => undefined);
    b24.parent.fitWindow().catch(() => undefined);
  });
}

// A fresh AUTH_ID from the parent (refreshAuth) buys a new tab token: the server reads the record again.
let renewing = null;
function renew() {
  if (!renewing) {
    renewing = (async () => {
      if (!b24) throw new Error(t.renewFailed);
      const auth = await b24.auth.refreshAuth();
      const response = await fetch('/api/tab/renew', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ authId: auth && auth.access_token }),
      });
      if (!response.ok) throw new Error(t.renewFailed);
      token = (await response.json()).token;
    })().finally(() => {
      renewing = null;
    });
  }
  return renewing;
}

// Reads and writes alike: a 401 {renew} is renewed once and the same request (the same idempotency key) sent again.
async function api(path, init) {
  const request = init || {};
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(path, { ...request, headers: { ...(request.headers || {}), authorization: `Bearer ${token}` } });
    if (response.status === 401 && attempt === 0) {
      const refusal = await response
        .clone()
        .json()
        .catch(() => ({}));
      if (refusal.renew) {
        await renew();
        continue;
      }
    }
    return response;
  }
}

function formatPhone(digits) {
  return `+${digits}`;
}

async function start() {
  const status = document.getElementById('tab-status');
  const phonesNav = document.getElementById('phones');
  const root = document.getElementById('dialog-view');
  if (window.ResizeObserver) new ResizeObserver(fit).observe(document.body);
  try {
    b24 = await window.B24Js.initializeB24Frame();
  } catch {
    // Opened outside a Bitrix24 frame: the tab still reads with its token until it expires.
    b24 = null;
  }
  const phones = data.phones || [];
  if (!phones.length) {
    status.textContent = '';
    root.append(el('div', { class: 'c2d-alert', id: 'no-phones', role: 'note', text: t.noPhones }));
    document.body.dataset.ready = 'yes';
    fit();
    return;
  }
  status.textContent = '';
  const view = createPhoneView(root, { api, t, lang, onChange: fit });
  const buttons = [];
  const choose = (phone) => {
    for (const button of buttons) button.setAttribute('aria-pressed', String(button.dataset.phone === phone));
    return view.show(phone, phones);
  };
  if (phones.length > 1) {
    for (const phone of phones) {
      const button = el('button', { type: 'button', class: 'c2d-phone', 'data-phone': phone, 'aria-pressed': 'false', text: formatPhone(phone) });
      button.addEventListener('click', () => choose(phone));
      buttons.push(button);
    }
    phonesNav.append(...buttons);
    phonesNav.hidden = false;
  }
  await choose(phones[0]);
  document.body.dataset.ready = 'yes';
  fit();
  // A burst of changes (a message, then its transfer) is read once; changes of other records never arrive (the server filters).
  const refresh = debounce(() => view.refresh(), 300);
  startLive({
    requestTicket: () => api('/api/live/ticket', { method: 'POST' }),
    onChange: refresh,
    onResync: () => view.refresh(),
  });
}

start();
