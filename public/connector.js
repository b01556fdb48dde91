// The connector settings page's script (templates/connector.hbs, src/routes/connector.ts). The page is
// rendered by our server for one Open Channel line with an app page token; this reads the form, writes
// through /api/connector/lines/:line with the token as bearer, and talks to the Bitrix24 parent frame
// through the official b24jssdk (fitWindow, refreshAuth). No cookies.
import { frameSession } from './frame-session.js';

const data = JSON.parse(document.getElementById('page-data').textContent);
const t = data.t || {};
const session = frameSession({ token: data.token, renewPath: '/api/page/renew', renewFailed: t.failed });
const fit = session.fit;

// A 401 {renew} (the admin's word is older than a minute) is renewed once and the request sent again.
function api(method, body) {
  return session.request(`/api/connector/lines/${data.line}`, {
    method,
    headers: { 'content-type': 'application/json' },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
}

const selected = (select) => [...select.selectedOptions].map((option) => Number(option.value));

function readOptions(form) {
  const route = form.elements.route.value;
  return {
    route:
      route === 'channels'
        ? { kind: 'channels', channelIds: selected(form.elements.channelIds) }
        : route === 'tags'
          ? { kind: 'tags', tagIds: selected(form.elements.routeTagIds) }
          : { kind: 'default' },
    chatPer: form.elements.chatPer.value === 'request' ? 'request' : 'client',
    signature: form.elements.signature.checked,
    holdUntilOperator: form.elements.holdUntilOperator.checked,
    postDeliveryErrors: form.elements.postDeliveryErrors.checked,
    tagFilter: {
      mode: form.elements.tagFilterMode.value || 'all',
      tagIds: selected(form.elements.tagFilterTagIds),
      sendPreviousAfterTagging: form.elements.sendPreviousAfterTagging.checked,
    },
  };
}

function showConnected(connected) {
  const status = document.getElementById('line-status');
  status.textContent = connected ? t.connected : t.notConnected;
  status.dataset.connected = connected ? 'yes' : 'no';
  document.getElementById('save').textContent = connected ? t.save : t.connect;
  document.getElementById('disconnect').hidden = !connected;
}

async function send(result, request, done) {
  result.textContent = t.saving;
  result.className = 'c2d-result';
  try {
    const response = await request();
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.error || t.failed);
    showConnected(answer.connected === true);
    result.textContent = done;
    result.classList.add('c2d-result--ok');
  } catch (error) {
    result.textContent = `${t.failed}: ${error.message}`;
    result.classList.add('c2d-result--error');
  }
  fit();
}

async function start() {
  const form = document.getElementById('line-form');
  if (!form) return;
  const result = document.getElementById('save-result');
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    send(result, () => api('PUT', { options: readOptions(form) }), t.saved);
  });
  document.getElementById('disconnect').addEventListener('click', () => send(result, () => api('DELETE'), t.disconnected));
  try {
    session.attach(await window.B24Js.initializeB24Frame());
  } catch {
    // Opened outside a Bitrix24 frame: the page still writes with its token until it expires.
  }
  if (window.ResizeObserver) new ResizeObserver(fit).observe(document.body);
  fit();
  document.body.dataset.ready = 'yes';
}

start();
