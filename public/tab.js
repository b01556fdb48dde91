// The CRM tab's script. The page is rendered by our server (templates/tab.hbs) with a tab token bound
// to the card's record and its phones; this talks to the Bitrix24 parent frame through the official
// b24jssdk (resize, refreshAuth, imOpenMessenger), shows the record's Open Channel chat (Open Channels
// mode), the phone switcher and mounts the dialog view (public/dialog-view.js), which reads our
// dialog API with the token as bearer. No cookies.
import { debounce, startLive } from './live.js';
import { createPhoneView, el } from './dialog-view.js';
import { frameSession } from './frame-session.js';

const data = JSON.parse(document.getElementById('page-data').textContent);
const t = data.t || {};
const lang = data.lang || 'en';
const session = frameSession({ token: data.token, renewPath: '/api/tab/renew', renewFailed: t.renewFailed, onRenewed: (answer) => showOpenChannel(answer.openChannelChat) });
const fit = session.fit;
const api = session.request;

// In Open Channels mode the server says which Open Channel chat is the record's latest (read with the
// user's rights, again on every renewal): "Open chat" opens it in the Bitrix24 messenger through the
// parent frame, which never answers imOpenMessenger (the SDK resolves on its own timer). No chat yet:
// a hint instead of a button that would open nothing. Not in Open Channels mode: nothing.
function showOpenChannel(chat) {
  const box = document.getElementById('open-channel');
  if (!box) return;
  box.replaceChildren();
  box.hidden = !chat;
  if (!chat) return;
  if (chat.state === 'found') {
    const dialogId = `chat${chat.chatId}`;
    const note = el('span', { class: 'c2d-muted', role: 'status', 'aria-live': 'polite' });
    const button = el('button', { type: 'button', class: 'ui-btn --air ui-btn-sm --style-filled', id: 'open-chat', 'data-dialog-id': dialogId, text: t.openChat });
    button.addEventListener('click', () => {
      const frame = session.frame();
      note.textContent = frame ? '' : t.openChatOutside;
      if (frame) frame.parent.imOpenMessenger(dialogId).catch(() => undefined);
    });
    box.append(el('span', { class: 'c2d-openchat__text' }, el('strong', { text: t.openChannel }), el('span', { class: 'c2d-muted', text: t.openChannelLatest })), button, note);
  } else {
    const words = chat.state === 'none' ? t.noOpenChannelChat : `${t.openChannelUnknown}${chat.reason || ''}`;
    box.append(el('span', { class: 'c2d-muted', id: 'no-open-chat', text: words }));
  }
  fit();
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
    session.attach(await window.B24Js.initializeB24Frame());
  } catch {
    // Opened outside a Bitrix24 frame: the tab still reads with its token until it expires.
  }
  showOpenChannel(data.openChannelChat);
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
