// The app page's Chat section (templates/partials/chat.hbs): the dialogs "Mine", "Open", "All" from
// GET /api/workspace/dialogs (src/routes/workspace.ts), a search by name or phone, and the dialog
// chosen, drawn by the CRM tab's dialog view (public/dialog-view.js), so its actions and composer come
// with it. The views offered are those the server said this user may see; the API checks again on
// every request. Live updates (public/live.js) refresh the list and the dialog open. Everything from
// Chat2Desk or from clients reaches the DOM as text.
import { createDialogPanel, dialogMeta, el, formatTime } from './dialog-view.js';
import { debounce, startLive } from './live.js';

/** Dialogs per page of the API (src/dialogs/workspace.ts WORKSPACE_PAGE_SIZE): the next page's offset. */
const PAGE_SIZE = 50;

const data = JSON.parse(document.getElementById('page-data').textContent);
const t = data.chat.t;
const lang = data.lang || 'en';
// Set by public/app.js, which runs first: the page token, its renewal through the parent frame, the frame's height.
const page = window.c2dPage;
// The dialog view's calls take fetch's (path, init): a write sends its own body (JSON or a file upload).
const api = (path, init = {}) => page.api(init.method || 'GET', path, init.body, init.headers);

const section = document.getElementById('section-chat');
const viewButtons = Array.from(section.querySelectorAll('[data-view]'));
const searchForm = document.getElementById('chat-search');
const searchInput = document.getElementById('chat-q');
const status = document.getElementById('chat-status');
const list = document.getElementById('chat-list');
const moreButton = document.getElementById('chat-more');
const dialogPane = document.getElementById('chat-dialog');
const choose = document.getElementById('chat-choose');
const preview = document.getElementById('chat-preview');
const historyRoot = document.getElementById('chat-history');
const actionStatus = el('p', { class: 'c2d-status c2d-actions__status', role: 'status', 'aria-live': 'polite', 'data-field': 'action-status' });
preview.after(actionStatus);
// The same dialog view as the CRM tab: summary, actions bar, history and composer (public/dialog-view.js).
// In Open Channels mode (as the page's mode switch last left it) the dialog view offers the client's
// Open Channel chat, opened in the Bitrix24 messenger through the parent frame (which never answers
// imOpenMessenger: the SDK resolves on its own timer).
function openMessenger(dialogId) {
  const frame = page.frame();
  if (frame) frame.parent.imOpenMessenger(dialogId).catch(() => undefined);
  return Boolean(frame);
}
const panel = createDialogPanel({
  preview,
  history: historyRoot,
  api,
  t,
  lang,
  onChange: page.fit,
  actionStatus,
  meta: dialogMeta(api),
  openMessenger,
  openChannels: () => page.mode() === 'open_channels',
});

const state = { view: data.chat.views[0], q: '', dialogs: [], more: false, nextOffset: 0, generation: 0 };
/** The dialog shown on the right (drawn by `panel`). */
let shown = null;

async function readJson(response) {
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function say(text, isError) {
  status.textContent = text;
  status.classList.toggle('c2d-status--error', Boolean(isError));
}

function clientName(summary) {
  const client = summary.client;
  const name = client && (client.name || client.phone || client.clientPhone);
  return name ? (/^\d+$/.test(name) ? `+${name}` : name) : `${t.dialog} #${summary.id}`;
}

function itemNode(summary) {
  const last = summary.lastMessage;
  const when = (last && last.at) || summary.beginAt;
  const lastText = last ? last.text || t[last.type] || '' : t.chatNoMessages;
  const open = summary.state === 'open';
  const button = el(
    'button',
    { type: 'button', class: 'c2d-chat__item', 'data-dialog-id': summary.id, 'aria-current': shown && shown.summary.id === summary.id ? 'true' : null },
    el('span', { class: 'c2d-chat__name', 'data-field': 'client', text: clientName(summary) }),
    el('time', { class: 'c2d-chat__time', datetime: when, text: formatTime(when, lang) }),
    el('span', { class: 'c2d-chat__last', 'data-field': 'last', text: lastText }),
    el('span', { class: 'c2d-chat__who' }, el('span', { class: `c2d-badge${open ? ' c2d-badge--open' : ''}`, text: open ? t.open : t.closed }), el('span', { 'data-field': 'operator', text: summary.operator ? summary.operator.name : t.chatNoOperator })),
  );
  button.addEventListener('click', () => openDialog(summary, true));
  return el('li', {}, button);
}

function renderList() {
  // A refresh replaces the items: the keyboard stays on the dialog it was on.
  const focused = list.contains(document.activeElement) ? document.activeElement.dataset.dialogId : null;
  list.replaceChildren(...state.dialogs.map(itemNode));
  moreButton.hidden = !state.more;
  if (focused) {
    const again = list.querySelector(`[data-dialog-id="${focused}"]`);
    if (again) again.focus();
  }
  page.fit();
}

/** The first page of the view and search (`append`: the next page after what is listed). */
async function loadList(append) {
  const mine = ++state.generation;
  const offset = append ? state.nextOffset : 0;
  say(t.loading);
  list.setAttribute('aria-busy', 'true');
  moreButton.disabled = true;
  try {
    const query = new URLSearchParams({ view: state.view, offset: String(offset) });
    if (state.q) query.set('q', state.q);
    const answer = await readJson(await api(`/api/workspace/dialogs?${query}`));
    if (mine !== state.generation) return;
    const known = new Set(answer.dialogs.map((summary) => summary.id));
    state.dialogs = append ? [...state.dialogs.filter((summary) => !known.has(summary.id)), ...answer.dialogs] : answer.dialogs;
    state.more = answer.more;
    state.nextOffset = offset + PAGE_SIZE;
    renderList();
    say(state.dialogs.length ? '' : state.q ? t.chatNothingFound : t.chatEmpty);
  } catch (error) {
    if (mine === state.generation) say(t.error + error.message, true);
  } finally {
    if (mine === state.generation) {
      list.removeAttribute('aria-busy');
      moreButton.disabled = false;
    }
  }
}

/** Live updates: the first page again, the pages loaded after it kept as they are. */
async function refreshList() {
  // A list being loaded by the user's click reads the newest anyway.
  if (list.hasAttribute('aria-busy')) return;
  const mine = state.generation;
  try {
    const query = new URLSearchParams({ view: state.view, offset: '0' });
    if (state.q) query.set('q', state.q);
    const answer = await readJson(await api(`/api/workspace/dialogs?${query}`));
    if (mine !== state.generation) return;
    const known = new Set(answer.dialogs.map((summary) => summary.id));
    const pagedFurther = state.nextOffset > PAGE_SIZE;
    state.dialogs = [...answer.dialogs, ...(pagedFurther ? state.dialogs.slice(PAGE_SIZE).filter((summary) => !known.has(summary.id)) : [])];
    if (!pagedFurther) state.more = answer.more;
    renderList();
    say(state.dialogs.length ? '' : state.q ? t.chatNothingFound : t.chatEmpty);
  } catch {
    // The list shown stays; the next change or a click reads it again.
  }
}

function markCurrent() {
  for (const button of list.querySelectorAll('[data-dialog-id]')) {
    if (shown && button.dataset.dialogId === String(shown.summary.id)) button.setAttribute('aria-current', 'true');
    else button.removeAttribute('aria-current');
  }
}

function openDialog(summary, moveFocus) {
  choose.hidden = true;
  dialogPane.querySelector('#chat-not-available')?.remove();
  panel.open(summary, clientName(summary));
  shown = { summary };
  markCurrent();
  page.fit();
  if (moveFocus) {
    // On a narrow screen the dialog is below the list: take the reader there.
    const heading = preview.querySelector('h2');
    heading.setAttribute('tabindex', '-1');
    heading.focus();
    dialogPane.scrollIntoView({ block: 'nearest' });
  }
}

/** Live updates: the open dialog's summary and newest messages again. */
async function refreshOpen() {
  if (!shown) return;
  await panel.refresh();
  if (panel.current) shown.summary = panel.current;
}

/** A link from a notification (PLACEMENT_OPTIONS dialog → openDialogId): open it, or say it is not for this user. */
async function openLinked(dialogId) {
  try {
    const summary = await readJson(await api(`/api/dialogs/${dialogId}`));
    // The user chose a dialog from the list while the link's was read: theirs stays.
    if (!shown) openDialog(summary, false);
  } catch (error) {
    if (shown) return;
    choose.hidden = true;
    const text = error.status === 404 || error.status === 403 ? t.chatNotAvailable : t.error + error.message;
    dialogPane.prepend(el('p', { class: 'c2d-alert c2d-alert--error', id: 'chat-not-available', role: 'alert', text }));
  }
}

function chooseView(view) {
  state.view = view;
  for (const button of viewButtons) button.setAttribute('aria-pressed', String(button.dataset.view === view));
  return loadList(false);
}

for (const button of viewButtons) button.addEventListener('click', () => chooseView(button.dataset.view));
searchForm.addEventListener('submit', (event) => {
  event.preventDefault();
  state.q = searchInput.value.trim();
  loadList(false);
});
// The field's own clear button ("×") lists the view again.
searchInput.addEventListener('search', () => {
  if (searchInput.value.trim() === '' && state.q !== '') {
    state.q = '';
    loadList(false);
  }
});
moreButton.addEventListener('click', () => loadList(true));

const pending = [];
const refresh = debounce(() => {
  const changes = pending.splice(0);
  refreshList();
  const current = shown && shown.summary;
  if (current && changes.some((change) => change.dialogId === current.id || (change.clientId !== null && change.clientId === current.clientId))) refreshOpen();
}, 300);

async function start() {
  await Promise.all([chooseView(state.view), data.openDialogId ? openLinked(data.openDialogId) : undefined]);
  section.dataset.ready = 'yes';
  startLive({
    requestTicket: () => api('/api/live/ticket', { method: 'POST' }),
    onChange: (change) => {
      pending.push(change);
      refresh();
    },
    onResync: () => {
      refreshList();
      if (shown) refreshOpen();
    },
  });
}

start();
