// The dialog view: a plain ES module (no framework) that renders a dialog summary, a dialog list and a
// message history into a given element. The CRM tab (public/tab.js) uses it today; the app page's Chat
// workspace and the actions, composer and live updates of later slices build on it through the mount
// points it leaves empty: `[data-mount="actions"]` (the preview's action bar) and
// `[data-mount="composer"]` (below the history). Everything from Chat2Desk or from clients (names,
// messages, file names) reaches the DOM as text; links are http(s) only.

// Every function takes `api(path)`: it returns a fetch Response, the viewer's bearer (and its renewal) already handled.

export function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) if (child !== undefined && child !== null) node.append(child);
  return node;
}

/** A link only when it is http(s); anything else (javascript:, data:) becomes plain text. */
export function safeLink(url, text, attributes) {
  let parsed = null;
  try {
    parsed = new URL(url);
  } catch {
    parsed = null;
  }
  if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) return el('span', { text });
  return el('a', Object.assign({ href: parsed.href, target: '_blank', rel: 'noopener noreferrer', text }, attributes || {}));
}

export function formatTime(iso, lang) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  return date.toLocaleString(lang, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

async function readJson(response) {
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function clientTitle(summary, t) {
  return (summary.client && (summary.client.name || summary.client.phone || summary.client.clientPhone)) || `${t.dialog} #${summary.id}`;
}

/** The preview of one dialog: client and contacts, tags, channel, messenger, last action, responsible, status. */
export function renderSummary(container, summary, { t, lang, heading }) {
  container.replaceChildren();
  const card = el('section', { class: 'c2d-card', 'aria-labelledby': `dialog-${summary.id}-title`, 'data-dialog-id': summary.id });
  const status = el('span', { class: `c2d-badge${summary.state === 'open' ? ' c2d-badge--open' : ''}`, 'data-field': 'status', text: summary.state === 'open' ? t.open : t.closed });
  const open = safeLink(summary.chat2deskUrl, t.openInChat2Desk, { class: 'ui-btn --air ui-btn-sm --style-outline', 'data-field': 'chat2desk', 'aria-label': `${t.openInChat2Desk} ${t.newTab}` });
  card.append(el('div', { class: 'c2d-card__head' }, el('h2', { id: `dialog-${summary.id}-title`, text: heading || t.preview }), status, open));

  const facts = el('dl', { class: 'c2d-facts' });
  const fact = (label, field, value) => facts.append(el('dt', { text: label }), el('dd', { 'data-field': field }, value));
  const client = summary.client;
  fact(t.client, 'client', el('span', { text: clientTitle(summary, t) }));
  // Chat2Desk keeps numbers as international digits (a "+" makes them read as phones); pseudo-ids ("[tg] 807892") as they are.
  const contacts = client ? [client.phone, client.clientPhone].filter((value, index, all) => value && all.indexOf(value) === index).map((value) => (/^\d+$/.test(value) ? `+${value}` : value)) : [];
  fact(t.contacts, 'contacts', el('span', { text: contacts.join(', ') || '—' }));
  const tags = client && client.tags && client.tags.length ? el('ul', { class: 'c2d-tags' }, ...client.tags.map((tag) => el('li', { text: tag.label }))) : el('span', { class: 'c2d-muted', text: t.noTags });
  fact(t.tags, 'tags', tags);
  fact(t.channel, 'channel', el('span', { text: summary.channel ? summary.channel.name : '—' }));
  fact(t.messenger, 'messenger', el('span', { text: summary.transport || '—' }));
  const last = summary.lastMessage;
  const lastText = last ? [t[last.type] || last.type, last.text, formatTime(last.at, lang)].filter(Boolean).join(' · ') : '—';
  fact(t.lastAction, 'last-action', el('span', { text: lastText }));
  const operator = summary.operator
    ? el('span', { text: summary.operator.bitrixUserId ? `${summary.operator.name} (${t.bitrixUser} #${summary.operator.bitrixUserId})` : summary.operator.name })
    : el('span', { class: 'c2d-muted', text: t.noOperator });
  fact(t.operator, 'operator', operator);
  card.append(facts);
  // Wave 2 puts the dialog's actions (tags, close/reopen, assign, write) here; nothing that does not work yet.
  card.append(el('div', { class: 'c2d-actions', 'data-mount': 'actions' }));
  container.append(card);
  return card;
}

/** A list of dialogs; choosing one calls `onOpen(summary)`. */
export function renderDialogList(container, summaries, { t, lang, onOpen, currentId }) {
  container.replaceChildren();
  if (!summaries.length) {
    container.append(el('p', { class: 'c2d-muted', text: t.noOtherDialogs }));
    return;
  }
  const list = el('ul', { class: 'c2d-list' });
  for (const summary of summaries) {
    const last = summary.lastMessage;
    const when = last && last.at ? formatTime(last.at, lang) : summary.beginAt ? `${t.started} ${formatTime(summary.beginAt, lang)}` : '';
    const meta = [summary.channel && summary.channel.name, summary.transport, last && last.text, when].filter(Boolean).join(' · ');
    const button = el(
      'button',
      { type: 'button', class: 'c2d-item__open', 'data-dialog-id': summary.id, 'aria-current': summary.id === currentId ? 'true' : null },
      el('span', { class: 'c2d-item__title', text: `${clientTitle(summary, t)} — ${t.dialog} #${summary.id}` }),
      el('span', { class: `c2d-badge${summary.state === 'open' ? ' c2d-badge--open' : ''}`, text: summary.state === 'open' ? t.open : t.closed }),
      el('span', { class: 'c2d-item__meta', text: meta }),
    );
    button.addEventListener('click', () => onOpen(summary));
    list.append(el('li', { class: 'c2d-item' }, button));
  }
  container.append(list);
}

function messageNode(message, { t, lang }) {
  const kind = message.type === 'from_client' ? 'in' : message.type === 'to_client' || message.type === 'autoreply' ? 'out' : 'note';
  const node = el('li', { class: `c2d-msg c2d-msg--${kind}`, 'data-message-id': message.id });
  node.append(el('span', { class: 'c2d-msg__meta', text: [t[message.type] || message.type, formatTime(message.at, lang)].filter(Boolean).join(' · ') }));
  if (message.text) node.append(el('p', { class: 'c2d-msg__text', text: message.text }));
  if (message.attachments && message.attachments.length) {
    const files = el('ul', { class: 'c2d-msg__files', 'aria-label': t.attachment });
    for (const file of message.attachments) files.append(el('li', {}, safeLink(file.url, file.name || t.attachment)));
    node.append(files);
  }
  return node;
}

/** A dialog's messages oldest → newest, with "Load older" paging back; `[data-mount="composer"]` waits below. */
export function createHistory(container, { api, dialogId, t, lang, onChange }) {
  container.replaceChildren();
  const section = el('section', { class: 'c2d-card', 'aria-labelledby': `history-${dialogId}` });
  const heading = el('h2', { id: `history-${dialogId}`, text: t.history });
  const status = el('p', { class: 'c2d-status', role: 'status', 'aria-live': 'polite', text: t.loading });
  const older = el('button', { type: 'button', class: 'ui-btn --air ui-btn-sm --style-outline c2d-older', id: 'load-older', hidden: true, text: t.loadOlder });
  const list = el('ol', { class: 'c2d-history', 'aria-label': t.history });
  section.append(heading, status, older, list, el('div', { class: 'c2d-composer', 'data-mount': 'composer' }));
  container.append(section);
  let oldestId = null;

  async function load() {
    older.disabled = true;
    status.classList.remove('c2d-status--error');
    status.textContent = t.loading;
    try {
      const query = new URLSearchParams({ limit: '20' });
      if (oldestId !== null) query.set('before', String(oldestId));
      const page = await readJson(await api(`/api/dialogs/${dialogId}/messages?${query}`));
      const nodes = page.messages.map((message) => messageNode(message, { t, lang }));
      list.prepend(...nodes);
      if (page.messages.length) oldestId = page.messages[0].id;
      older.hidden = !page.older;
      status.textContent = list.children.length ? '' : t.noMessages;
    } catch (error) {
      status.classList.add('c2d-status--error');
      status.textContent = t.error + error.message;
    } finally {
      older.disabled = false;
      if (onChange) onChange();
    }
  }
  older.addEventListener('click', () => {
    load().then(() => {
      // Keep the keyboard where it was: on "Load older" while there is more, else on the history.
      if (!older.hidden) {
        older.focus();
      } else {
        heading.setAttribute('tabindex', '-1');
        heading.focus();
      }
    });
  });
  // Live updates: the newest page again; messages not shown yet join the end (all of them after a long gap).
  async function refresh() {
    try {
      const page = await readJson(await api(`/api/dialogs/${dialogId}/messages?limit=20`));
      const shown = new Set(Array.from(list.children, (node) => node.dataset.messageId));
      const fresh = page.messages.filter((message) => !shown.has(String(message.id)));
      if (fresh.length === page.messages.length && shown.size) {
        list.replaceChildren();
        older.hidden = !page.older;
        if (page.messages.length) oldestId = page.messages[0].id;
      }
      list.append(...fresh.map((message) => messageNode(message, { t, lang })));
      status.textContent = list.children.length ? '' : t.noMessages;
    } catch (error) {
      status.classList.add('c2d-status--error');
      status.textContent = t.error + error.message;
    }
    if (onChange) onChange();
  }
  return { loaded: load(), section, refresh };
}

/**
 * The tab's view of one phone: the latest dialog's preview and history, "Show more" with the other
 * dialogs (of this phone, then of the record's other phones), each openable. `phones` = all of the
 * record's phones; the first render asks only for `phone`.
 */
export function createPhoneView(root, { api, t, lang, onChange }) {
  const status = el('p', { class: 'c2d-status', role: 'status', 'aria-live': 'polite' });
  const preview = el('div', { id: 'preview' });
  const more = el('div', { class: 'c2d-card', id: 'more', hidden: true });
  const toggle = el('button', { type: 'button', class: 'ui-btn --air ui-btn-sm --style-plain', id: 'show-more', 'aria-expanded': 'false', 'aria-controls': 'more', hidden: true, text: t.showMore });
  const history = el('div', { id: 'history' });
  root.replaceChildren(status, preview, toggle, more, history);
  let current = null;
  let others = [];
  let otherPhones = [];
  let generation = 0;
  let shownPhone = null;
  let shownHistory = null;
  let shownHeading;

  function open(summary, heading) {
    current = summary;
    shownHeading = heading;
    renderSummary(preview, summary, { t, lang, heading });
    shownHistory = createHistory(history, { api, dialogId: summary.id, t, lang, onChange });
    if (!more.hidden) renderMore();
    if (onChange) onChange();
  }

  async function otherPhonesDialogs() {
    const lists = await Promise.all(otherPhones.map((phone) => api(`/api/dialogs/by-phone?phone=${encodeURIComponent(phone)}`).then(readJson)));
    return lists.flatMap((answer) => (answer.latest ? [answer.latest, ...answer.others] : []));
  }

  let morePhones = null;
  async function renderMore() {
    const heading = el('h2', { text: t.otherDialogs });
    const body = el('div');
    more.replaceChildren(heading, body);
    if (morePhones === null && otherPhones.length) {
      body.append(el('p', { class: 'c2d-status', role: 'status', text: t.loading }));
      try {
        morePhones = await otherPhonesDialogs();
      } catch (error) {
        body.replaceChildren(el('p', { class: 'c2d-status c2d-status--error', role: 'alert', text: t.error + error.message }));
        return;
      }
    }
    const all = [...others, ...(morePhones || [])];
    const seen = new Set();
    const unique = all.filter((summary) => !seen.has(summary.id) && seen.add(summary.id));
    renderDialogList(body, unique, { t, lang, currentId: current && current.id, onOpen: (summary) => open(summary, `${t.dialog} #${summary.id}`) });
    if (onChange) onChange();
  }

  toggle.addEventListener('click', () => {
    const expanded = toggle.getAttribute('aria-expanded') === 'true';
    toggle.setAttribute('aria-expanded', String(!expanded));
    toggle.textContent = expanded ? t.showMore : t.showLess;
    more.hidden = expanded;
    if (!expanded) renderMore();
    if (onChange) onChange();
  });

  async function show(phone, allPhones) {
    const mine = ++generation;
    shownPhone = phone;
    current = null;
    otherPhones = (allPhones || []).filter((other) => other !== phone);
    morePhones = null;
    status.classList.remove('c2d-status--error');
    status.textContent = t.loading;
    preview.replaceChildren();
    history.replaceChildren();
    more.replaceChildren();
    more.hidden = true;
    toggle.hidden = true;
    toggle.setAttribute('aria-expanded', 'false');
    toggle.textContent = t.showMore;
    try {
      const answer = await readJson(await api(`/api/dialogs/by-phone?phone=${encodeURIComponent(phone)}`));
      if (mine !== generation) return;
      others = answer.others;
      if (!answer.latest) {
        status.textContent = '';
        preview.append(el('div', { class: 'c2d-alert', id: 'not-found' }, el('strong', { text: t.notFound }), el('p', { class: 'c2d-muted', text: t.notFoundHint })));
        toggle.hidden = otherPhones.length === 0;
      } else {
        status.textContent = '';
        toggle.hidden = false;
        open(answer.latest);
      }
    } catch (error) {
      if (mine !== generation) return;
      status.classList.add('c2d-status--error');
      status.textContent = t.error + error.message;
    }
    if (onChange) onChange();
  }

  // Live updates: a change of the dialog shown or of this phone's dialogs reads the phone again and
  // redraws the dialog shown (the latest, or the one opened from "Show more") in place.
  // `changes`: the live events ({dialogId, clientId}) heard; none = read again whatever they were.
  async function refresh(changes) {
    const known = [current, ...others].filter(Boolean);
    const touches = (change) => known.some((summary) => summary.id === change.dialogId || (change.clientId !== null && summary.clientId === change.clientId));
    const concerns = !changes || !current || changes.some(touches);
    if (!concerns || !shownPhone) return;
    const mine = generation;
    let answer;
    try {
      answer = await readJson(await api(`/api/dialogs/by-phone?phone=${encodeURIComponent(shownPhone)}`));
    } catch {
      return;
    }
    if (mine !== generation) return;
    if (!current) return show(shownPhone, [shownPhone, ...otherPhones]);
    others = answer.others;
    const all = answer.latest ? [answer.latest, ...answer.others] : answer.others;
    const fresh = all.find((summary) => summary.id === current.id) || current;
    current = fresh;
    renderSummary(preview, fresh, { t, lang, heading: shownHeading });
    if (shownHistory) await shownHistory.refresh();
    if (!more.hidden) renderMore();
  }

  return { show, refresh };
}
