// The CRM tab's script. The page is rendered by our server (templates/tab.hbs) with a tab token bound
// to the card's record and its phones; this talks to the Bitrix24 parent frame through the official
// b24jssdk (resize, refreshAuth), shows the phone switcher and mounts the dialog view
// (public/dialog-view.js), which reads our dialog API with the token as bearer. No cookies.
import { debounce, startLive } from './live.js';
import { createPhoneView, el } from './dialog-view.js';
import { frameSession } from './frame-session.js';

const data = JSON.parse(document.getElementById('page-data').textContent);
const t = data.t || {};
const lang = data.lang || 'en';
const session = frameSession({ token: data.token, renewPath: '/api/tab/renew', renewFailed: t.renewFailed });
const fit = session.fit;
const api = session.request;

function formatPhone(digits) {
  return `+${digits}`;
}

async function start() {
  const status = document.getElementById('tab-status');
  const phonesNav = document.getElementById('phones');
  const root = document.getElementById('dialog-view');
  if (window.ResizeObserver) new ResizeObserver(fit).observe(document.body);
  try {
    session.attach(await window.B24Js.initializeB24Frame());
  } catch {
    // Opened outside a Bitrix24 frame: the tab still reads with its token until it expires.
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
