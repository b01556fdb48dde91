// The dialog view: a plain ES module (no framework) that renders a dialog summary, a dialog list, a
// message history and the write controls (actions bar, composer, Write first) into a given element.
// The CRM tab (public/tab.js) uses it through createPhoneView; the app page's Chat workspace reuses the
// pieces. The write controls fill the mount points `[data-mount="actions"]` (the preview's action bar)
// and `[data-mount="composer"]` (below the history), only for a viewer mapped to a Chat2Desk operator
// (GET /api/dialogs/meta). Everything from Chat2Desk or from clients (names, messages, file names)
// reaches the DOM as text; links are http(s) only.

// Every function takes `api(path, init?)`: it returns a fetch Response, the viewer's bearer (and its renewal,
// resending the same request) already handled.

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

/**
 * The client's latest Open Channel chat (Open Channels mode; GET /api/dialogs/:id `openChannelChat`),
 * the last line of a summary's facts, put in or replaced on its own: "Open chat" opens it in the
 * Bitrix24 messenger through the parent frame (`openMessenger` says whether there is one); none
 * known yet, a note.
 */
function setOpenChannelRow(facts, chat, t, openMessenger) {
  for (const node of facts.querySelectorAll('[data-row="open-channel"]')) node.remove();
  let value;
  if (chat.state === 'found') {
    const dialogId = `chat${chat.chatId}`;
    const note = el('span', { class: 'c2d-muted', role: 'status' });
    const button = el('button', { type: 'button', class: 'ui-btn --air ui-btn-sm --style-outline', 'data-open-chat': dialogId, text: t.openChat });
    button.addEventListener('click', () => {
      note.textContent = openMessenger(dialogId) ? '' : t.openChatOutsideApp;
    });
    value = el('span', { class: 'c2d-openchat-inline' }, button, note);
  } else {
    value = el('span', { class: 'c2d-muted', 'data-field': 'no-open-chat', text: t.noOpenChannelChatYet });
  }
  facts.append(el('dt', { 'data-row': 'open-channel', text: t.openChannel }), el('dd', { 'data-row': 'open-channel', 'data-field': 'open-channel' }, value));
}

/** The preview of one dialog: client and contacts, tags, channel, messenger, last action, responsible, status. */
export function renderSummary(container, summary, { t, lang, heading, openMessenger }) {
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
  if (openMessenger && summary.openChannelChat) setOpenChannelRow(facts, summary.openChannelChat, t, openMessenger);
  card.append(facts);
  // The actions bar (createDialogActions) or the note for a viewer who may not write goes here.
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

  async function load(fresh) {
    older.disabled = true;
    status.classList.remove('c2d-status--error');
    status.textContent = t.loading;
    try {
      const query = new URLSearchParams({ limit: '20' });
      if (!fresh && oldestId !== null) query.set('before', String(oldestId));
      const page = await readJson(await api(`/api/dialogs/${dialogId}/messages?${query}`));
      const nodes = page.messages.map((message) => messageNode(message, { t, lang }));
      const kept = fresh ? olderThan(page.messages) : [];
      if (fresh) list.replaceChildren(...kept, ...nodes);
      else list.prepend(...nodes);
      // The older pages the user loaded, kept by a refresh, still decide where "Load older" goes on.
      if (!kept.length) {
        if (page.messages.length) oldestId = page.messages[0].id;
        older.hidden = !page.older;
      }
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
  /**
   * The messages shown older than a fresh newest page, kept when that page reaches back to what is
   * shown (message ids grow; the API pages by them): the user reading older pages keeps them. With a
   * gap between (more new messages than a page), only the newest page.
   */
  function olderThan(messages) {
    const shown = Array.from(list.children);
    if (!messages.length || !shown.length) return [];
    const first = messages[0].id;
    const newestShown = Number(shown[shown.length - 1].getAttribute('data-message-id'));
    if (newestShown < first) return [];
    return shown.filter((node) => Number(node.getAttribute('data-message-id')) < first);
  }

  /** After an action or a live update: the newest page again, the older pages loaded and the composer mount left as they are. */
  function refresh() {
    return load(true);
  }
  return { loaded: load(), section, refresh };
}

/** GET /api/dialogs/meta (tags, operators, channels, the viewer's operator), read once per page; a failed read is asked again. */
export function dialogMeta(api) {
  let load = null;
  return () => {
    load = load || api('/api/dialogs/meta').then(readJson);
    // A failed read is asked again next time (Chat2Desk may be back).
    load.catch(() => {
      load = null;
    });
    return load;
  };
}

/**
 * One dialog with what its viewer may do: the summary with its actions bar (the write controls for a
 * mapped viewer, a note saying how to get mapped for others) and the history with its composer. The CRM
 * tab (createPhoneView) and the Chat workspace (public/workspace.js) both draw dialogs with it.
 * `actionStatus`: an aria-live element that outlives the bar, which is drawn again after each action.
 * `openMessenger(dialogId)` (the workspace): the page opens a Bitrix24 chat in the messenger (false
 * outside a frame); with it the summary shows the client's Open Channel chat when the dialog's answer
 * names one, read on opening while `openChannels()` says the portal is in that mode (the lists'
 * summaries do not carry it).
 * Returns `{ open(summary, heading), refresh(focused), clear(), current, meta }`.
 */
export function createDialogPanel({ preview, history, api, t, lang, onChange, actionStatus, meta, openMessenger, openChannels }) {
  let current = null;
  let currentHistory = null;
  // The actions bar is drawn again on every live update and after every action: its controls' keys
  // live here, per dialog, so clicking a redrawn control while (or after) its action was on its way
  // is the same action on the server, not a second one.
  let barKeys = new Map();
  let keysDialogId = null;
  function keysFor(name) {
    if (!barKeys.has(name)) barKeys.set(name, actionKeys());
    return barKeys.get(name);
  }

  /**
   * What the user is doing in the actions bar: the control they are on and the choices they changed
   * (an operator or a tag picked, not yet applied). A redraw of the same dialog (a live update, another
   * action's outcome) puts them back, so a change elsewhere never takes the user's place away.
   */
  function barPlace() {
    const active = document.activeElement;
    return {
      focused: active && preview.contains(active) ? active.getAttribute('data-action') : null,
      chosen: Array.from(preview.querySelectorAll('select[data-touched]')).map((node) => [node.getAttribute('data-action'), node.value]),
    };
  }

  function restoreBarPlace(place) {
    for (const [action, value] of place.chosen) {
      const node = preview.querySelector(`select[data-action="${action}"]`);
      if (!node || !Array.from(node.options).some((option) => option.value === value && !option.disabled)) continue;
      node.value = value;
      node.setAttribute('data-touched', '');
    }
    if (!place.focused) return;
    // The control may have changed (Close became Reopen): the bar's first control then.
    const again = preview.querySelector(`[data-action="${place.focused}"]`) || preview.querySelector('[data-action]');
    if (again) again.focus();
  }

  async function renderPreview(summary, heading, place) {
    renderSummary(preview, summary, { t, lang, heading, openMessenger });
    const mount = preview.querySelector('[data-mount="actions"]');
    let choices;
    try {
      choices = await meta();
    } catch (error) {
      mount.append(el('p', { class: 'c2d-status c2d-status--error', role: 'alert', text: t.error + error.message }));
      return;
    }
    if (current !== summary) return;
    if (choices.operatorId === null) {
      mount.append(notMappedNote(t));
      return;
    }
    createDialogActions(mount, { api, t, meta: choices, summary, onDone: refresh, status: actionStatus, isShown: (id) => Boolean(current) && current.id === id, keysFor });
    if (place) restoreBarPlace(place);
  }

  function mountComposer(dialogId) {
    const mount = history.querySelector('[data-mount="composer"]');
    meta()
      .then((choices) => {
        if (!current || current.id !== dialogId || choices.operatorId === null) return;
        createComposer(mount, { api, t, dialogId, onDone: refresh });
        if (onChange) onChange();
      })
      .catch(() => undefined); // the actions bar says why
  }

  function open(summary, heading) {
    if (current && current.id !== summary.id) actionStatus.textContent = '';
    if (keysDialogId !== summary.id) {
      barKeys = new Map();
      keysDialogId = summary.id;
    }
    current = summary;
    current.heading = heading;
    renderPreview(summary, heading).then(() => onChange && onChange());
    currentHistory = createHistory(history, { api, dialogId: summary.id, t, lang, onChange });
    mountComposer(summary.id);
    if (openMessenger && !summary.openChannelChat && openChannels && openChannels()) readOpenChannelChat(summary);
    if (onChange) onChange();
  }

  /**
   * The dialog as GET /api/dialogs/:id answers it, for its Open Channel chat: only that line is put in,
   * so the keyboard's place and the actions bar stay as they are. The summary shown is not changed:
   * the next refresh reads the dialog with its chat anyway.
   */
  async function readOpenChannelChat(shown) {
    let answer;
    try {
      answer = await readJson(await api(`/api/dialogs/${shown.id}`));
    } catch {
      return; // the summary shown stays; a live update or an action reads it again
    }
    // Another dialog was chosen meanwhile, or a refresh drew this one with its chat already.
    if (current !== shown || !answer.openChannelChat) return;
    const facts = preview.querySelector('.c2d-facts');
    if (!facts) return;
    setOpenChannelRow(facts, answer.openChannelChat, t, openMessenger);
    if (onChange) onChange();
  }

  /**
   * After an action or a live update: the dialog's summary and its newest messages read again. `focused`:
   * the data-action of the actions bar's control that acted, focused again once the bar is redrawn.
   */
  async function refresh(focused) {
    if (!current) return;
    const shown = current;
    try {
      const summary = await readJson(await api(`/api/dialogs/${shown.id}`));
      if (current !== shown) return;
      current = summary;
      current.heading = shown.heading;
      const place = barPlace();
      // After an action the keyboard goes back to the control that acted (disabled meanwhile, so not focused).
      if (focused) place.focused = focused;
      await renderPreview(summary, shown.heading, place);
    } catch (error) {
      actionStatus.classList.add('c2d-status--error');
      actionStatus.textContent = t.error + error.message;
    }
    if (currentHistory && current && current.id === shown.id) await currentHistory.refresh();
    if (onChange) onChange();
  }

  function clear() {
    current = null;
    currentHistory = null;
    actionStatus.textContent = '';
  }

  return {
    open,
    refresh,
    clear,
    meta,
    get current() {
      return current;
    },
  };
}

/**
 * The tab's view of one phone: the latest dialog's preview and history, "Show more" with the other
 * dialogs (of this phone, then of the record's other phones), each openable; with the viewer's write
 * controls (actions bar, composer, "Write first") when `GET /api/dialogs/meta` says they are mapped to
 * a Chat2Desk operator, else a note saying how to get mapped. `phones` = all of the record's phones;
 * the first render asks only for `phone`. Returns `{ show(phone, phones), refresh() }`.
 */
export function createPhoneView(root, { api, t, lang, onChange }) {
  const status = el('p', { class: 'c2d-status', role: 'status', 'aria-live': 'polite' });
  const preview = el('div', { id: 'preview' });
  const more = el('div', { class: 'c2d-card', id: 'more', hidden: true });
  const toggle = el('button', { type: 'button', class: 'ui-btn --air ui-btn-sm --style-plain', id: 'show-more', 'aria-expanded': 'false', 'aria-controls': 'more', hidden: true, text: t.showMore });
  const writeFirstButton = el('button', { type: 'button', class: 'ui-btn --air ui-btn-sm --style-outline', id: 'write-first-open', 'aria-expanded': 'false', 'aria-controls': 'write-first', hidden: true, text: t.writeFirst });
  const writeFirst = el('div', { id: 'write-first', hidden: true });
  const history = el('div', { id: 'history' });
  // Outlives the actions bar, which is drawn again after each action: the outcome stays announced.
  const actionStatus = el('p', { class: 'c2d-status c2d-actions__status', role: 'status', 'aria-live': 'polite', 'data-field': 'action-status' });
  const bar = el('div', { class: 'c2d-bar' }, toggle, writeFirstButton);
  root.replaceChildren(status, preview, actionStatus, bar, writeFirst, more, history);
  const panel = createDialogPanel({ preview, history, api, t, lang, onChange, actionStatus, meta: dialogMeta(api) });
  const meta = panel.meta;
  let currentPhone = null;
  let allPhones = [];
  let latest = null;
  let others = [];
  let otherPhones = [];
  let generation = 0;

  function open(summary, heading) {
    panel.open(summary, heading);
    if (!more.hidden) renderMore();
    if (onChange) onChange();
  }

  /**
   * After an action (`focused`: the data-action of the control that acted) or a live update: the dialog
   * shown read again; with none shown (no dialog for this phone yet), the phone read again, unless the
   * user is writing first (their draft stays).
   */
  async function refresh(focused) {
    if (panel.current) return panel.refresh(typeof focused === 'string' ? focused : undefined);
    if (currentPhone && writeFirst.hidden) return show(currentPhone, allPhones);
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
    // Every dialog but the one shown: once another is open, the latest is listed to go back to.
    const shownId = panel.current && panel.current.id;
    const all = [...(latest ? [latest] : []), ...others, ...(morePhones || [])];
    const seen = new Set();
    const unique = all.filter((summary) => summary.id !== shownId && !seen.has(summary.id) && seen.add(summary.id));
    renderDialogList(body, unique, {
      t,
      lang,
      onOpen: (summary) => {
        open(summary, summary === latest ? undefined : `${t.dialog} #${summary.id}`);
        // The item chosen leaves the list: the keyboard goes to the dialog it opened.
        const heading = preview.querySelector('h2');
        if (!heading) return;
        heading.setAttribute('tabindex', '-1');
        heading.focus();
      },
    });
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

  function showWriteFirst(choices, focus) {
    // The phone shown when the form was drawn: a first message still on its way when the user moves
    // to another phone must not take them back.
    const drawnFor = generation;
    writeFirst.hidden = false;
    writeFirstButton.setAttribute('aria-expanded', 'true');
    createWriteFirst(writeFirst, {
      api,
      t,
      meta: choices,
      phones: allPhones,
      phone: currentPhone,
      // The new dialog takes the place of the form: the keyboard goes to its heading.
      onDone: (phone) => {
        if (drawnFor !== generation) {
          status.classList.remove('c2d-status--error');
          status.textContent = `${t.sentFirstTo} +${phone}.`;
          return undefined;
        }
        return show(phone, allPhones).then(() => {
          const heading = preview.querySelector('h2');
          if (!heading) return;
          heading.setAttribute('tabindex', '-1');
          heading.focus();
        });
      },
      onCancel: panel.current
        ? () => {
            writeFirst.hidden = true;
            writeFirst.replaceChildren();
            writeFirstButton.setAttribute('aria-expanded', 'false');
            writeFirstButton.focus();
            if (onChange) onChange();
          }
        : null,
      focus,
    });
    if (onChange) onChange();
  }
  writeFirstButton.addEventListener('click', async () => {
    if (!writeFirst.hidden) {
      writeFirst.hidden = true;
      writeFirst.replaceChildren();
      writeFirstButton.setAttribute('aria-expanded', 'false');
      if (onChange) onChange();
      return;
    }
    showWriteFirst(await meta(), true);
  });

  async function show(phone, phones) {
    const mine = ++generation;
    currentPhone = phone;
    allPhones = phones && phones.length ? phones : [phone];
    otherPhones = allPhones.filter((other) => other !== phone);
    morePhones = null;
    panel.clear();
    status.classList.remove('c2d-status--error');
    status.textContent = t.loading;
    preview.replaceChildren();
    history.replaceChildren();
    more.replaceChildren();
    writeFirst.replaceChildren();
    writeFirst.hidden = true;
    writeFirstButton.hidden = true;
    writeFirstButton.setAttribute('aria-expanded', 'false');
    more.hidden = true;
    toggle.hidden = true;
    toggle.setAttribute('aria-expanded', 'false');
    toggle.textContent = t.showMore;
    try {
      const [answer, choices] = await Promise.all([api(`/api/dialogs/by-phone?phone=${encodeURIComponent(phone)}`).then(readJson), meta().catch(() => null)]);
      if (mine !== generation) return;
      latest = answer.latest;
      others = answer.others;
      status.textContent = '';
      if (!answer.latest) {
        preview.append(el('div', { class: 'c2d-alert', id: 'not-found' }, el('strong', { text: t.notFound }), el('p', { class: 'c2d-muted', text: t.notFoundHint })));
        toggle.hidden = otherPhones.length === 0;
        // Dialogs not found: the Write first form at once for a mapped viewer, the note for others.
        if (choices && choices.operatorId === null) preview.append(notMappedNote(t));
        else if (choices) showWriteFirst(choices, false);
      } else {
        toggle.hidden = false;
        writeFirstButton.hidden = !choices || choices.operatorId === null;
        open(answer.latest);
      }
    } catch (error) {
      if (mine !== generation) return;
      status.classList.add('c2d-status--error');
      status.textContent = t.error + error.message;
    }
    if (onChange) onChange();
  }

  return { show, refresh };
}

function notMappedNote(t) {
  return el('p', { class: 'c2d-alert c2d-note', role: 'note', 'data-field': 'not-mapped', text: t.notMapped });
}

// ----- actions: one idempotency key per composed message or action, polled until done ----------------

/**
 * Keeps one idempotency key per intended action: the same request body gets the same key until it
 * succeeds (or fails for good), so a double click or a retry after a network error is the same action
 * on the server (src/routes/dialog-actions.ts de-duplicates on it); another body (the user changed
 * the message, its files, the tag…) gets a new key.
 */
export function actionKeys() {
  let intent = null;
  let key = null;
  return {
    keyFor(body) {
      const wanted = JSON.stringify(body);
      if (wanted !== intent || !key) {
        intent = wanted;
        key = crypto.randomUUID();
      }
      return key;
    },
    /** The action is over (done, or failed for good): the next one is a new action. */
    settle() {
      intent = null;
      key = null;
    },
  };
}

const POLL_FIRST_MS = 300;
const POLL_MAX_MS = 2000;
const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * POST /api/dialog-actions with the kept key, then GET /api/dialog-actions/:key until done or failed.
 * Resolves with the final answer; throws with the server's words (a refusal, a failed action) or a
 * network error. A network error keeps the key (a retry is the same action); a finished action settles it.
 */
export async function performAction(api, keys, body) {
  const key = keys.keyFor(body);
  const response = await api('/api/dialog-actions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key, ...body }) });
  let answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
  for (let delay = POLL_FIRST_MS; answer.state === 'queued' || answer.state === 'running'; delay = Math.min(delay * 1.5, POLL_MAX_MS)) {
    await wait(delay);
    answer = await readJson(await api(`/api/dialog-actions/${encodeURIComponent(key)}`));
  }
  keys.settle();
  if (answer.state !== 'done') throw new Error(answer.error || answer.state);
  return answer;
}

/** An aria-live status element as `say(text, isError)`. */
function sayIn(status) {
  return (text, isError) => {
    status.classList.toggle('c2d-status--error', Boolean(isError));
    status.textContent = text;
  };
}

/** Runs one action from a control: disabled while pending, the outcome said through `say(text, isError)`. */
async function runFrom(control, say, t, run, successText) {
  // A disabled button drops the focus: it goes back when the button is enabled again.
  const hadFocus = document.activeElement === control;
  control.disabled = true;
  control.setAttribute('aria-busy', 'true');
  say(t.sending, false);
  try {
    await run();
    say(successText || t.done, false);
    return true;
  } catch (error) {
    // fetch rejects with a TypeError when no answer came back: the kept key makes trying again safe.
    say(error instanceof TypeError ? t.networkError : t.failed + error.message, true);
    return false;
  } finally {
    control.disabled = false;
    control.removeAttribute('aria-busy');
    if (hadFocus && (!document.activeElement || document.activeElement === document.body)) control.focus();
  }
}

let controlIds = 0;
const controlId = (name) => `c2d-${name}-${++controlIds}`;

function labelled(label, control, className) {
  const id = control.id || controlId(control.tagName.toLowerCase());
  control.id = id;
  return el('div', { class: className || 'c2d-field' }, el('label', { for: id, text: label }), control);
}

function select(options, attributes) {
  const node = el('select', Object.assign({ class: 'c2d-select' }, attributes || {}));
  for (const option of options) node.append(el('option', { value: option.value, text: option.label, selected: option.selected }));
  // A choice the user made survives the actions bar being drawn again (createDialogPanel).
  node.addEventListener('change', () => node.setAttribute('data-touched', ''));
  return node;
}

/**
 * The preview's actions bar: close or reopen, assign to an operator, the client's tags with remove
 * buttons, and a tag added to (or removed from) the client or the dialog's current request.
 * `onDone()` re-reads the dialog. Each control keeps its own key (actionKeys). `status`: an aria-live
 * element outside the mount that survives the bar being drawn again (else the bar gets its own).
 */
export function createDialogActions(mount, { api, t, meta, summary, onDone, status: sharedStatus, isShown, keysFor }) {
  mount.replaceChildren();
  // The panel keeps each control's keys across redraws of the bar; alone, the bar keeps its own.
  const keysOf = keysFor || (() => actionKeys());
  const status = sharedStatus || el('p', { class: 'c2d-status c2d-actions__status', role: 'status', 'aria-live': 'polite', 'data-field': 'action-status' });
  const say = sayIn(status);
  // The user may open another dialog while an action is on its way: its outcome then names its dialog,
  // and the dialog shown is neither read again nor given the keyboard.
  const shown = () => !isShown || isShown(summary.id);
  const sayFor = (text, isError) => say(shown() ? text : `${t.dialog} #${summary.id}: ${text}`, isError);
  const act = (control, body, keys) =>
    runFrom(control, sayFor, t, () => performAction(api, keys, body)).then((ok) => {
      if (ok && onDone && shown()) return onDone(control.getAttribute('data-action'));
    });

  const stateKeys = keysOf('state');
  const closing = summary.state === 'open';
  const stateButton = el('button', { type: 'button', class: 'ui-btn --air ui-btn-sm --style-outline', 'data-action': closing ? 'close' : 'reopen', text: closing ? t.close : t.reopen });
  stateButton.addEventListener('click', () => act(stateButton, { action: closing ? 'close' : 'reopen', dialogId: summary.id }, stateKeys));

  const assignKeys = keysOf('assign');
  const currentOperator = summary.operator ? summary.operator.id : null;
  // Nobody chosen until the user chooses (an unassigned dialog must not look assigned to the first operator).
  const operators = select(
    [{ value: '', label: '—', selected: currentOperator === null }].concat(
      meta.operators.map((operator) => ({ value: operator.id, label: operator.name, selected: operator.id === currentOperator })),
    ),
    { 'data-action': 'operator' },
  );
  operators.firstChild.disabled = true;
  const assignButton = el('button', { type: 'button', class: 'ui-btn --air ui-btn-sm --style-outline', 'data-action': 'assign', text: t.assign });
  assignButton.addEventListener('click', () => {
    if (!operators.value) return operators.focus();
    act(assignButton, { action: 'assign', dialogId: summary.id, operatorId: Number(operators.value) }, assignKeys);
  });
  const assign = el('div', { class: 'c2d-inline' }, labelled(t.assignTo, operators, 'c2d-field c2d-field--inline'), assignButton);

  const row = el('div', { class: 'c2d-actions__row' }, stateButton, assign);

  // The client's tags, each with its remove button; a request's tags cannot be read back (docs/protocols.md C5).
  const clientTags = (summary.client && summary.client.tags) || [];
  const chips = el('ul', { class: 'c2d-tags c2d-tags--removable', 'aria-label': t.tagsOfClient, 'data-field': 'client-tags' });
  for (const tag of clientTags) {
    const keys = keysOf(`untag-${tag.id}`);
    const remove = el('button', { type: 'button', class: 'c2d-chip__remove', 'data-action': `untag-${tag.id}`, 'aria-label': `${t.removeTag} ${tag.label}`, text: '×' });
    remove.addEventListener('click', () => act(remove, { action: 'untag', dialogId: summary.id, tagId: tag.id, target: 'client' }, keys));
    chips.append(el('li', { 'data-tag-id': tag.id }, el('span', { text: tag.label }), remove));
  }
  const tagsRow = el('div', { class: 'c2d-actions__row' }, el('span', { class: 'c2d-muted', text: t.tagsOfClient }), clientTags.length ? chips : el('span', { class: 'c2d-muted', text: t.noTags }));

  const tagKeys = keysOf('tag');
  const tagChoice = select(
    meta.tags.map((tag) => ({ value: tag.id, label: tag.label })),
    { 'data-action': 'tag-choice' },
  );
  const targets = [{ value: 'client', label: t.targetClient }];
  if (summary.lastRequestId) targets.push({ value: 'request', label: t.targetRequest });
  const target = select(targets, { 'data-action': 'tag-target' });
  const addTag = el('button', { type: 'button', class: 'ui-btn --air ui-btn-sm --style-outline', 'data-action': 'tag-add', text: t.addTag });
  const removeTag = el('button', { type: 'button', class: 'ui-btn --air ui-btn-sm --style-plain', 'data-action': 'tag-remove', text: t.removeFromTarget });
  const tagBody = (action) => ({ action, dialogId: summary.id, tagId: Number(tagChoice.value), target: target.value });
  addTag.addEventListener('click', () => act(addTag, tagBody('tag'), tagKeys));
  removeTag.addEventListener('click', () => act(removeTag, tagBody('untag'), tagKeys));
  const tagForm = el(
    'div',
    { class: 'c2d-actions__row' },
    labelled(t.tag, tagChoice, 'c2d-field c2d-field--inline'),
    labelled(t.tagTarget, target, 'c2d-field c2d-field--inline'),
    addTag,
    removeTag,
  );
  if (!meta.tags.length) tagForm.hidden = true;

  mount.append(el('div', { class: 'c2d-actions__body', role: 'group', 'aria-label': t.actions }, row, tagsRow, tagForm, sharedStatus ? null : status));
  return { status };
}

/** Files attached to a message: each uploaded at once to POST /api/files, with its state and a remove button. */
function createAttachments(api, t) {
  // The file input inside its label: the label looks like a button, the input keeps the keyboard focus.
  const input = el('input', { type: 'file', multiple: true, class: 'c2d-visually-hidden', 'data-action': 'attach' });
  const button = el('label', { class: 'ui-btn --air ui-btn-sm --style-outline c2d-attach' }, input, t.attach);
  const list = el('ul', { class: 'c2d-files', 'aria-label': t.attachment });
  let files = [];

  function render() {
    list.replaceChildren(
      ...files.map((file) => {
        const remove = el('button', { type: 'button', class: 'c2d-chip__remove', 'aria-label': `${t.removeFile} ${file.name}`, text: '×' });
        remove.addEventListener('click', () => {
          files = files.filter((other) => other !== file);
          render();
          input.focus();
        });
        const state =
          file.state === 'uploading'
            ? el('progress', { class: 'c2d-file__progress', 'aria-label': `${t.uploading} ${file.name}` })
            : file.state === 'error'
              ? el('span', { class: 'c2d-status--error', role: 'alert', text: file.error })
              : el('span', { class: 'c2d-muted', text: sizeText(file.size) });
        return el('li', { class: `c2d-file c2d-file--${file.state}`, 'data-state': file.state }, el('span', { class: 'c2d-file__name', text: file.name }), state, remove);
      }),
    );
  }

  async function upload(entry, blob) {
    try {
      const form = new FormData();
      form.append('file', blob, blob.name);
      const answer = await readJson(await api('/api/files', { method: 'POST', body: form }));
      entry.id = answer.id;
      entry.size = answer.size;
      entry.state = 'ready';
    } catch (error) {
      entry.state = 'error';
      entry.error = error.message;
    }
    if (files.includes(entry)) render();
  }

  input.addEventListener('change', () => {
    for (const blob of input.files) {
      const entry = { name: blob.name, size: blob.size, state: 'uploading' };
      files.push(entry);
      upload(entry, blob);
    }
    input.value = '';
    render();
  });

  return {
    nodes: [button, list],
    ids: () => files.filter((file) => file.state === 'ready').map((file) => file.id),
    pending: () => files.some((file) => file.state === 'uploading'),
    clear() {
      files = [];
      render();
    },
  };
}

function sizeText(bytes) {
  if (!bytes && bytes !== 0) return '';
  return bytes < 1024 ? `${bytes} B` : bytes < 1024 * 1024 ? `${Math.round(bytes / 1024)} KB` : `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** A message form's body: text, attachments, Send (Ctrl/Cmd+Enter), and the outcome in an aria-live region. */
function messageForm({ api, t, fields, bodyOf, onDone, sentText, extraButtons }) {
  const keys = actionKeys();
  const text = el('textarea', { class: 'c2d-textarea', rows: 3, placeholder: t.messagePlaceholder, 'data-action': 'message' });
  const send = el('button', { type: 'submit', class: 'ui-btn --air ui-btn-sm --style-filled c2d-send', 'data-action': 'send', text: t.send });
  const status = el('p', { class: 'c2d-status', role: 'status', 'aria-live': 'polite', 'data-field': 'send-status' });
  const attachments = createAttachments(api, t);
  const form = el(
    'form',
    { class: 'c2d-form', novalidate: true },
    ...fields,
    labelled(t.message, text),
    el('div', { class: 'c2d-form__row' }, ...attachments.nodes),
    el('div', { class: 'c2d-form__row c2d-form__buttons' }, send, ...(extraButtons || [])),
    status,
  );
  let pending = false;
  async function submit() {
    if (pending) return;
    if (attachments.pending()) {
      status.textContent = t.waitUploads;
      return;
    }
    const fileIds = attachments.ids();
    const message = text.value.trim();
    if (!message && !fileIds.length) {
      status.textContent = t.nothingToSend;
      text.focus();
      return;
    }
    pending = true;
    const body = bodyOf({ ...(message ? { text: message } : {}), ...(fileIds.length ? { fileIds } : {}) });
    const ok = await runFrom(send, sayIn(status), t, () => performAction(api, keys, body), sentText || t.sent);
    pending = false;
    if (ok) {
      text.value = '';
      attachments.clear();
      text.focus();
      if (onDone) await onDone();
    }
  }
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    submit();
  });
  text.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submit();
    }
  });
  return { form, text, status };
}

/** The composer under a dialog's history: writes to that dialog as the viewer's operator. */
export function createComposer(mount, { api, t, dialogId, onDone }) {
  const composer = messageForm({ api, t, fields: [], bodyOf: (message) => ({ action: 'send', dialogId, ...message }), onDone });
  mount.replaceChildren(composer.form);
  return composer;
}

/**
 * Write first: the number (the record's phones), the channel, its messenger, the message and files;
 * on success `onDone(phone)` reloads the view, which then shows the new dialog.
 */
export function createWriteFirst(container, { api, t, meta, phones, phone, onDone, onCancel, focus }) {
  const number = select(
    phones.map((value) => ({ value, label: `+${value}`, selected: value === phone })),
    { 'data-action': 'wf-phone' },
  );
  const channel = select(
    meta.channels.map((item) => ({ value: item.id, label: item.name })),
    { 'data-action': 'wf-channel' },
  );
  const transport = select([], { 'data-action': 'wf-transport' });
  const fillTransports = () => {
    const chosen = meta.channels.find((item) => String(item.id) === channel.value);
    transport.replaceChildren(...(chosen ? chosen.transports : []).map((value) => el('option', { value, text: value })));
  };
  channel.addEventListener('change', fillTransports);
  fillTransports();
  const cancel = onCancel ? el('button', { type: 'button', class: 'ui-btn --air ui-btn-sm --style-plain', 'data-action': 'wf-cancel', text: t.cancel }) : null;
  if (cancel) cancel.addEventListener('click', onCancel);
  const heading = el('h2', { id: controlId('write-first'), tabindex: '-1', text: t.writeFirstTitle });
  const composer = messageForm({
    api,
    t,
    fields: [
      el('div', { class: 'c2d-form__grid' }, labelled(t.number, number), labelled(t.channel, channel), labelled(t.messenger, transport)),
    ],
    bodyOf: (message) => ({ action: 'write_first', phone: number.value, channelId: Number(channel.value), transport: transport.value, ...message }),
    onDone: () => onDone(number.value),
    extraButtons: cancel ? [cancel] : [],
  });
  container.replaceChildren(el('section', { class: 'c2d-card c2d-write-first', 'aria-labelledby': heading.id }, heading, composer.form));
  if (focus) heading.focus();
  return composer;
}
