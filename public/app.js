// The app page's progressive script. The page is rendered by our server (templates/app.hbs); this
// talks to the Bitrix24 parent frame through the official b24jssdk (resize, installFinish,
// refreshAuth), loads the portal's own lists straight from the portal's REST (as the user), and
// saves through our JSON API with the page token. Data is always put in the DOM as text.
import { frameSession } from './frame-session.js';

(() => {
  const data = JSON.parse(document.getElementById('page-data').textContent);
  const t = data.t || {};
  let b24 = null;

  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));

  function say(element, text, kind) {
    if (!element) return;
    element.textContent = text;
    element.classList.toggle('c2d-result--error', kind === 'error');
    element.classList.toggle('c2d-result--ok', kind === 'ok');
    element.hidden = false;
  }

  // ----- the frame --------------------------------------------------------------------------------
  const session = frameSession({ token: data.token, renewPath: '/api/page/renew', renewFailed: t.renewFailed });
  const fit = session.fit;

  // `body`: an object sent as JSON; a string or FormData (the dialog view's writes, a file upload) goes as it is, with `headers`.
  function api(method, path, body, headers) {
    const raw = typeof body === 'string' || body instanceof FormData;
    const json = body !== undefined && !raw;
    return session.request(path, {
      method,
      headers: Object.assign(json ? { 'content-type': 'application/json' } : {}, headers || {}),
      body: body === undefined ? undefined : json ? JSON.stringify(body) : body,
    });
  }

  // The Chat section (public/workspace.js, a module that runs after this script) reads with the same token and renewal.
  // `mode()`: the portal's mode as this page last saved or read it (the mode switch below changes it).
  window.c2dPage = { api, fit, frame: session.frame, mode: () => currentMode };

  async function errorOf(response) {
    const body = await response.json().catch(() => ({}));
    return body.error || `HTTP ${response.status}`;
  }

  async function rest(method, params) {
    const result = await b24.actions.v2.call.make({ method, params });
    if (!result.isSuccess) throw new Error(result.getErrorMessages().join('; '));
    return result.getData().result;
  }

  // ----- lists from the portal --------------------------------------------------------------------
  function fill(select, options) {
    const placeholder = select.options[0];
    select.replaceChildren(placeholder);
    const wanted = select.dataset.value || select.dataset.suggested || '';
    for (const item of options) {
      const option = document.createElement('option');
      option.value = String(item.value);
      option.textContent = item.label;
      if (option.value === wanted) option.selected = true;
      select.append(option);
    }
    select.dataset.loaded = 'yes';
  }

  async function loadStages(categoryId) {
    const stage = $('#deal-stage');
    if (!stage) return;
    const id = Number(categoryId) || 0;
    const stages = await rest('crm.status.list', { filter: { ENTITY_ID: id === 0 ? 'DEAL_STAGE' : `DEAL_STAGE_${id}` }, order: { SORT: 'ASC' } });
    fill(
      stage,
      (stages || []).map((item) => ({ value: item.STATUS_ID, label: item.NAME })),
    );
  }

  async function loadPortalLists() {
    const problems = [];
    const attempt = async (what) => {
      try {
        await what();
      } catch (error) {
        problems.push(error && error.message ? error.message : String(error));
      }
    };
    await Promise.all([
      attempt(async () => {
        const answer = await rest('crm.category.list', { entityTypeId: 2 });
        const pipeline = $('#deal-category');
        if (!pipeline) return;
        if (pipeline.dataset.value === '') pipeline.dataset.value = '0';
        fill(
          pipeline,
          ((answer && answer.categories) || []).map((item) => ({ value: item.id, label: item.name })),
        );
        pipeline.options[0].hidden = true;
        await loadStages(pipeline.value);
      }),
      attempt(async () => {
        const sources = await rest('crm.status.list', { filter: { ENTITY_ID: 'SOURCE' }, order: { SORT: 'ASC' } });
        const select = $('#source');
        if (select) fill(select, (sources || []).map((item) => ({ value: item.STATUS_ID, label: item.NAME })));
      }),
      attempt(async () => {
        const users = await rest('user.get', { FILTER: { ACTIVE: true } });
        const options = (users || []).map((user) => ({ value: user.ID, label: [user.NAME, user.LAST_NAME].filter(Boolean).join(' ') + (user.EMAIL ? ` (${user.EMAIL})` : '') }));
        for (const select of $$('select[data-portal-list="users"]')) fill(select, options);
      }),
    ]);
    if (problems.length > 0) say($('#crm-lists-error'), `${t.loadFailed} ${problems.join('; ')}`, 'error');
    baselineReady();
    fit();
  }

  function markRegistered(selector, codes) {
    for (const item of $$(selector)) {
      const code = item.dataset.robot || item.dataset.trigger;
      const state = $('[data-robot-state], [data-trigger-state]', item);
      state.textContent = codes.has(code) ? `· ${t.registered}` : `· ${t.notRegistered}`;
      item.dataset.registered = codes.has(code) ? 'yes' : 'no';
    }
  }

  // Robots answer as a list of codes, triggers as [{NAME, CODE}] (docs/protocols.md B16).
  async function loadRobots() {
    const problems = [];
    await Promise.all([
      rest('bizproc.robot.list', {})
        .then((robots) => markRegistered('#robot-list [data-robot]', new Set(Array.isArray(robots) ? robots.map(String) : [])))
        .catch((error) => problems.push(error.message)),
      rest('crm.automation.trigger.list', {})
        .then((triggers) => markRegistered('#trigger-list [data-trigger]', new Set(Array.isArray(triggers) ? triggers.map((item) => String(item && item.CODE)) : [])))
        .catch((error) => problems.push(error.message)),
    ]);
    if (problems.length > 0) say($('#robots-result'), `${t.loadFailed} ${problems.join('; ')}`, 'error');
  }

  // ----- the settings form ------------------------------------------------------------------------
  function read(element) {
    const kind = element.dataset.kind;
    if (kind === 'bool') return element.checked;
    if (kind === 'tags') return $$('input[type=checkbox]:checked', element).map((input) => Number(input.value));
    if (kind === 'order') return $$('li', element).map((item) => item.dataset.item);
    if (kind === 'operators') {
      const map = {};
      for (const select of $$('select[data-operator]', element)) {
        const value = select.dataset.loaded === 'yes' ? select.value : select.dataset.value;
        if (value) map[select.dataset.operator] = Number(value);
      }
      return map;
    }
    if (kind === 'ids') {
      // Comma-separated Bitrix24 ids; anything else goes as typed, so the server names what is wrong.
      return element.value
        .split(/[\s,;]+/)
        .filter(Boolean)
        .map((item) => (/^\d+$/.test(item) ? Number(item) : item));
    }
    if (kind === 'extra') {
      return $$('[data-extra-row]', element)
        .map((row) => ({ source: $('[data-extra=source]', row).value.trim(), field: $('[data-extra=field]', row).value.trim() }))
        .filter((row) => row.source !== '' || row.field !== '');
    }
    // A list from the portal that has not arrived yet still holds the stored value.
    const raw = (element.dataset.portalList && element.dataset.loaded !== 'yes' ? element.dataset.value : element.value).trim();
    if (kind === 'int') return raw === '' ? null : Number(raw);
    return raw === '' ? null : raw;
  }

  function collect() {
    const values = {};
    // A setting shown in another section (the event log's retention) joins the form with form="settings-form".
    for (const element of $$('#settings-form [data-key], [data-key][form="settings-form"]')) values[element.dataset.key] = read(element);
    return values;
  }

  let baseline = null;
  function baselineReady() {
    // What the page showed when it opened: only what the admin changes afterwards is sent.
    if (baseline === null) baseline = collect();
  }

  function changes() {
    const now = collect();
    const changed = {};
    for (const key of Object.keys(now)) {
      if (JSON.stringify(now[key]) !== JSON.stringify(baseline[key])) changed[key] = now[key];
    }
    return changed;
  }

  async function save(event) {
    event.preventDefault();
    const result = $('#save-result');
    const button = $('#save');
    baselineReady();
    const changed = changes();
    if (Object.keys(changed).length === 0) return say(result, t.nothingChanged);
    button.disabled = true;
    say(result, t.saving);
    try {
      const response = await api('PUT', '/api/settings', changed);
      if (response.status === 409) return changedMeanwhile(result, await errorOf(response));
      if (!response.ok) return say(result, await errorOf(response), 'error');
      baseline = collect();
      say(result, t.saved, 'ok');
    } catch (error) {
      say(result, error.message, 'error');
    } finally {
      button.disabled = false;
    }
  }

  // 409: another save (a mode switch in another tab) came first; nothing was saved, and the page's
  // values are no longer what is stored, so the way on is a reload.
  function reloadButton() {
    const button = element('button', 'ui-btn --air ui-btn-sm --style-outline', t.reload);
    button.type = 'button';
    button.addEventListener('click', () => (b24 ? b24.parent.reloadWindow().catch(() => window.location.reload()) : window.location.reload()));
    return button;
  }

  function changedMeanwhile(result, why) {
    say(result, `${t.changedMeanwhile} ${why}`, 'error');
    result.append(' ', reloadButton());
    fit();
  }

  async function connect(event) {
    event.preventDefault();
    const result = $('#connect-result');
    const input = $('#c2d-token');
    const change = {};
    if (input.value.trim() !== '') change.chat2deskApiToken = input.value.trim();
    const host = $('#c2d-host');
    if (host && data.view && host.value !== data.view.chat2deskApiUrl) change.chat2deskApiUrl = host.value;
    if (Object.keys(change).length === 0) return say(result, t.nothingChanged);
    $('#connect').disabled = true;
    say(result, t.checking);
    try {
      const response = await api('PUT', '/api/settings', change);
      if (!response.ok) return say(result, await errorOf(response), 'error');
      input.value = '';
      say(result, t.tokenAccepted, 'ok');
      // The sections that list the account's operators, tags and channels are rendered by the server:
      // the portal opens the app again with them.
      if (b24) b24.parent.reloadWindow().catch(() => undefined);
    } catch (error) {
      say(result, error.message, 'error');
    } finally {
      $('#connect').disabled = false;
    }
  }

  async function post(path, result, okText) {
    say(result, t.loading);
    try {
      const response = await api('POST', path);
      if (!response.ok) return say(result, await errorOf(response), 'error');
      say(result, okText, 'ok');
    } catch (error) {
      say(result, error.message, 'error');
    }
  }

  function moveInOrder(event) {
    const button = event.target.closest('[data-move]');
    if (!button) return;
    const item = button.closest('li');
    if (button.dataset.move === 'up' && item.previousElementSibling) item.parentNode.insertBefore(item, item.previousElementSibling);
    if (button.dataset.move === 'down' && item.nextElementSibling) item.parentNode.insertBefore(item.nextElementSibling, item);
    button.focus();
  }

  function orderFromData() {
    const order = $('#match-order');
    if (!order || !order.dataset.value) return;
    const list = $('ol', order);
    for (const name of order.dataset.value.split(',')) {
      const item = $(`li[data-item="${name}"]`, list);
      if (item) list.append(item);
    }
  }

  // ----- the event log ----------------------------------------------------------------------------
  let olderCursor = null;

  function safeLink(url, label) {
    let parsed = null;
    try {
      parsed = new URL(url);
    } catch {
      parsed = null;
    }
    if (!parsed || (parsed.protocol !== 'https:' && parsed.protocol !== 'http:')) {
      const span = document.createElement('span');
      span.textContent = label;
      return span;
    }
    const link = document.createElement('a');
    link.href = parsed.href;
    link.target = '_blank';
    link.rel = 'noopener noreferrer';
    link.textContent = label;
    return link;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function renderEntry(entry) {
    const item = element('li', 'c2d-event');
    item.dataset.entry = entry.id;
    const head = element('div', 'c2d-event__head');
    head.append(element('span', 'c2d-event__title', entry.title));
    head.append(element('span', `c2d-badge c2d-badge--${entry.status}`, t[`st_${entry.status}`] || entry.status));
    head.append(element('span', 'c2d-muted', t[`k_${entry.kind}`] || entry.kind));
    const when = element('time', 'c2d-muted', new Date(entry.at).toLocaleString(data.lang));
    when.dateTime = entry.at;
    head.append(when);
    item.append(head);
    // A failed entry's summary is often its error: said once.
    if (entry.summary && !(entry.error && entry.error.message === entry.summary)) item.append(element('p', 'c2d-event__summary', entry.summary));
    const links = element('div', 'c2d-event__links');
    if (entry.record) links.append(safeLink(entry.record.url, `${t.record}: ${entry.record.type} ${entry.record.id}`));
    if (entry.dialog) links.append(safeLink(entry.dialog.url, `${t.dialog} ${entry.dialog.id}`));
    if (entry.phone) links.append(element('span', 'c2d-muted', entry.phone));
    if (links.childNodes.length > 0) item.append(links);
    if (entry.error) {
      item.append(element('p', 'c2d-event__error', entry.error.message));
      if (entry.error.nextStep) item.append(element('p', 'c2d-event__next', `${t.nextStep} ${entry.error.nextStep}`));
    }
    if (entry.canRerun) {
      const button = element('button', 'ui-btn --air ui-btn-sm --style-outline', t.rerun);
      button.type = 'button';
      button.addEventListener('click', async () => {
        button.disabled = true;
        const response = await api('POST', `/api/event-log/${encodeURIComponent(entry.id)}/rerun`);
        if (response.ok) {
          button.replaceWith(element('span', 'c2d-result--ok', t.rerunQueued));
        } else {
          button.disabled = false;
          button.after(element('span', 'c2d-result--error', await errorOf(response)));
        }
      });
      item.append(button);
    }
    return item;
  }

  async function loadEvents(older) {
    const list = $('#event-log');
    if (!list) return;
    const query = new URLSearchParams();
    for (const [name, value] of new FormData($('#event-filter'))) if (value) query.set(name, String(value));
    if (older && olderCursor) query.set('before', olderCursor);
    const errorBox = $('#event-log-error');
    errorBox.hidden = true;
    try {
      const response = await api('GET', `/api/event-log?${query}`);
      if (!response.ok) throw new Error(await errorOf(response));
      const page = await response.json();
      if (!older) list.replaceChildren();
      for (const entry of page.entries || []) list.append(renderEntry(entry));
      if (!older && (page.entries || []).length === 0) list.append(element('li', 'c2d-muted', t.noEntries));
      olderCursor = page.next || null;
      $('#event-older').hidden = !olderCursor;
    } catch (error) {
      say(errorBox, `${t.eventLogUnavailable} ${error.message}`, 'error');
    }
    fit();
  }

  // ----- where operators work ---------------------------------------------------------------------
  // The mode is saved through the same settings API as the form (PUT /api/settings {integrationType});
  // switching back to Chat2Desk is confirmed first, inline, because it disconnects and forgets every line.
  let currentMode = data.mode || 'chat2desk';

  function chosenMode() {
    const checked = $('input[name="integration-type"]:checked');
    return checked ? checked.value : currentMode;
  }

  function showMode() {
    const section = $('#section-mode');
    if (!section) return;
    section.dataset.mode = currentMode;
    for (const badge of $$('[data-current]', section)) badge.hidden = badge.closest('[data-choice]').dataset.choice !== currentMode;
    const chosen = chosenMode();
    const button = $('#mode-switch');
    if (button) {
      button.hidden = chosen === currentMode;
      button.textContent = chosen === 'open_channels' ? t.modeSwitchToOpenChannels : t.modeSwitchToChat2desk;
    }
    const scopes = $('#mode-scopes');
    if (scopes) scopes.hidden = chosen !== 'open_channels';
    const lines = $('#mode-lines');
    if (lines) lines.hidden = currentMode !== 'open_channels';
    const confirmBox = $('#mode-confirm');
    if (confirmBox && chosen === currentMode) confirmBox.hidden = true;
    fit();
  }

  function chooseMode(mode) {
    for (const input of $$('input[name="integration-type"]')) input.checked = input.value === mode;
    showMode();
  }

  function routeText(route) {
    const view = data.view || {};
    const named = (ids, list, label) =>
      ids
        .map((id) => {
          const found = (list || []).find((item) => item.id === id);
          return found && found[label] ? `${found[label]} (${id})` : String(id);
        })
        .join(', ');
    if (route && route.kind === 'channels') return `${t.modeRouteChannels} ${named(route.channelIds || [], view.channels, 'name')}`;
    if (route && route.kind === 'tags') return `${t.modeRouteTags} ${named(route.tagIds || [], view.tags, 'label')}`;
    return t.modeRouteDefault;
  }

  function renderLines(lines) {
    const table = $('#mode-lines-table');
    if (!table) return;
    const body = $('tbody', table);
    body.replaceChildren();
    for (const line of lines) {
      const row = element('tr');
      row.dataset.line = String(line.lineId);
      row.append(element('td', '', line.lineId));
      row.append(line.name ? element('td', '', line.name) : element('td', 'c2d-muted', t.modeLineUnnamed));
      const route = element('td', '', routeText(line.route));
      route.dataset.route = line.route ? line.route.kind : 'default';
      row.append(route);
      body.append(row);
    }
    table.hidden = lines.length === 0;
    $('#mode-no-lines').hidden = lines.length > 0;
    fit();
  }

  // The outcome in paragraphs (each put in as text), with an optional action button after them.
  function modeResult(paragraphs, kind, action) {
    const result = $('#mode-result');
    result.replaceChildren(...paragraphs.filter(Boolean).map((text) => element('p', '', text)));
    if (action) result.append(action);
    result.classList.toggle('c2d-result--error', kind === 'error');
    result.classList.toggle('c2d-result--ok', kind === 'ok');
    fit();
  }

  async function switchMode(target) {
    const button = $('#mode-switch');
    const confirmYes = $('#mode-confirm-yes');
    button.disabled = true;
    confirmYes.disabled = true;
    modeResult([t.modeSwitching]);
    let response;
    try {
      response = await api('PUT', '/api/settings', { integrationType: target });
    } catch (error) {
      modeResult([t.modeUnreachable, error && error.message], 'error');
      return;
    } finally {
      button.disabled = false;
      confirmYes.disabled = false;
      $('#mode-confirm').hidden = true;
    }
    if (!response.ok) {
      const why = await errorOf(response);
      // 502 on the way back: Bitrix24 refused to take the connector away and the server kept Open Channels mode.
      if (target === 'chat2desk' && response.status === 502) modeResult([t.modeBackRefused, why], 'error');
      else if (response.status === 409) modeResult([t.changedMeanwhile, why], 'error', reloadButton());
      else modeResult([`${t.modeFailed} ${why}`], 'error');
      chooseMode(currentMode);
      return;
    }
    const view = await response.json();
    data.view = Object.assign(data.view || {}, view);
    currentMode = view.integrationType;
    renderLines(view.openLines || []);
    chooseMode(currentMode);
    if (currentMode !== 'open_channels') return modeResult([t.modeSwitchedToChat2desk], 'ok');
    if (view.registration && view.registration.ok === false) {
      const again = element('button', 'ui-btn --air ui-btn-sm --style-outline', t.modeRegisterAgain);
      again.type = 'button';
      again.id = 'mode-register-again';
      again.addEventListener('click', () => switchMode('open_channels'));
      return modeResult([t.modeRegistrationRefused, view.registration.error, t.modeRegistrationAgain], 'error', again);
    }
    modeResult([t.modeSwitchedToOpenChannels], 'ok');
  }

  async function checkLines() {
    const errorBox = $('#mode-lines-error');
    errorBox.hidden = true;
    try {
      const response = await api('GET', '/api/settings');
      if (!response.ok) throw new Error(await errorOf(response));
      const view = await response.json();
      data.view = Object.assign(data.view || {}, view);
      renderLines(view.openLines || []);
    } catch (error) {
      say(errorBox, `${t.modeLinesFailed} ${error.message}`, 'error');
      fit();
    }
  }

  function bindMode() {
    const section = $('#section-mode');
    if (!section || !data.admin) return;
    section.addEventListener('change', (event) => {
      if (event.target.name === 'integration-type') showMode();
    });
    $('#mode-switch').addEventListener('click', () => {
      const target = chosenMode();
      if (target === currentMode) return;
      if (target === 'chat2desk') {
        $('#mode-confirm').hidden = false;
        $('#mode-confirm-no').focus();
        return fit();
      }
      switchMode(target);
    });
    $('#mode-confirm-yes').addEventListener('click', () => switchMode('chat2desk'));
    $('#mode-confirm-no').addEventListener('click', () => {
      chooseMode(currentMode);
      $('#mode-switch').focus();
    });
    $('#mode-check-lines').addEventListener('click', checkLines);
    renderLines((data.view && data.view.openLines) || []);
    showMode();
  }

  // ----- start ------------------------------------------------------------------------------------
  function bind() {
    bindMode();
    const form = $('#settings-form');
    if (form) form.addEventListener('submit', save);
    const connectForm = $('#connect-form');
    if (connectForm) connectForm.addEventListener('submit', connect);
    const repair = $('#repair-webhook');
    if (repair) repair.addEventListener('click', () => post('/api/page/webhook/repair', $('#connect-result'), t.repaired));
    const reregister = $('#reregister');
    if (reregister)
      reregister.addEventListener('click', async () => {
        await post('/api/page/robots/register', $('#robots-result'), t.reregistered);
        if (b24) loadRobots();
      });
    const order = $('#match-order');
    if (order) order.addEventListener('click', moveInOrder);
    const pipeline = $('#deal-category');
    if (pipeline)
      pipeline.addEventListener('change', () => {
        $('#deal-stage').dataset.value = '';
        loadStages(pipeline.value).catch((error) => say($('#crm-lists-error'), `${t.loadFailed} ${error.message}`, 'error'));
      });
    const extra = $('#extra-fields');
    const add = $('#add-extra');
    if (add)
      add.addEventListener('click', () => {
        extra.append($('#extra-row-template').content.cloneNode(true));
        $('[data-extra-row]:last-child [data-extra=source]', extra).focus();
        fit();
      });
    if (extra)
      extra.addEventListener('click', (event) => {
        const remove = event.target.closest('[data-remove-row]');
        if (remove) {
          remove.closest('[data-extra-row]').remove();
          fit();
        }
      });
    for (const button of $$('[data-choose]')) button.addEventListener('click', () => choose(button));
    const notify = $('#notify-incoming');
    const imMissing = $('#im-missing');
    if (notify && imMissing)
      notify.addEventListener('change', () => {
        imMissing.hidden = !notify.checked;
        fit();
      });
    const filter = $('#event-filter');
    if (filter)
      filter.addEventListener('submit', (event) => {
        event.preventDefault();
        loadEvents(false);
      });
    const older = $('#event-older');
    if (older) older.addEventListener('click', () => loadEvents(true));
  }

  // The portal's own pickers (docs/protocols.md B13; pages-and-modes §3.3): what is picked joins the ids already typed.
  async function choose(button) {
    const input = $(`#${button.getAttribute('aria-controls')}`);
    const result = $('#save-result');
    if (!b24 || !input) return;
    let picked;
    try {
      if (button.dataset.choose === 'users') {
        const users = await b24.dialog.selectUsers();
        picked = (Array.isArray(users) ? users : []).map((user) => String(user && user.id));
      } else {
        const access = await b24.dialog.selectAccess();
        // D<id> is a department, DR<id> the same with its subdepartments; other kinds of access are not departments.
        picked = (Array.isArray(access) ? access : []).map((item) => (/^DR?(\d+)$/.exec(String(item && item.id)) || [])[1]);
      }
    } catch (error) {
      return say(result, `${t.loadFailed} ${error.message}`, 'error');
    }
    const ids = input.value.split(/[\s,;]+/).filter(Boolean);
    for (const id of picked) if (/^\d+$/.test(id || '') && !ids.includes(id)) ids.push(id);
    input.value = ids.join(', ');
    input.focus();
  }

  async function start() {
    orderFromData();
    bind();
    if (window.ResizeObserver) new ResizeObserver(fit).observe(document.body);
    try {
      b24 = await window.B24Js.initializeB24Frame();
      session.attach(b24);
    } catch {
      // Opened outside a Bitrix24 frame: what the server rendered still works, without the portal's lists.
      b24 = null;
    }
    if (b24) {
      fit();
      // Not awaited: the portal never answers setInstallFinish, it reloads the page (docs/protocols.md B13).
      if (data.install && b24.isInstallMode) b24.installFinish().catch(() => undefined);
    }
    if (data.admin) {
      const lists = b24 ? loadPortalLists() : Promise.resolve(baselineReady());
      await Promise.all([lists, b24 ? loadRobots() : undefined, loadEvents(false)]);
      document.body.dataset.ready = 'yes';
    } else {
      document.body.dataset.ready = 'yes';
    }
    fit();
  }

  start();
})();
