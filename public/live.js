// Live updates for the CRM tab (public/tab.js) and the Chat workspace (public/workspace.js): the page
// trades its bearer token for a one-use ticket (POST /api/live/ticket) and opens an EventSource on
// /api/live?ticket=… (src/routes/live.ts), so the token itself never goes into a URL. An event only
// says which dialog or client changed; the page reads it again through the dialog API.
//
// The stream is open only while the page is visible: hidden pages close it (no server slot, no
// events nobody sees) and reopen with a new ticket when shown again, then read again what they show,
// since whatever happened meanwhile was not heard. When the stream ends (the token expired, the
// server restarted) or fails, the browser's own retry would reuse the spent ticket and get 401, so
// we close it and reconnect with a new ticket after a growing, capped delay.

const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 30_000;
/** A stream that stayed open this long was a real connection: the backoff starts over after it. */
const STABLE_MS = 10_000;

/**
 * `requestTicket()` → the fetch Response of POST /api/live/ticket, with the page's bearer (and its
 * renewal through the parent frame on 401) already handled. `onChange(change)` for each `event: dialog`;
 * `onResync()` after a reconnection, to read again what is shown. Sets `document.body.dataset.live`
 * to `open`, `connecting`, `paused` (hidden page) or `off` (refused for good).
 */
export function startLive({ requestTicket, onChange, onResync }) {
  let source = null;
  let connecting = false;
  let timer = null;
  let failures = 0;
  let stableTimer = null;
  let heardBefore = false;
  let stopped = false;

  const visible = () => document.visibilityState !== 'hidden';
  const mark = (state) => {
    document.body.dataset.live = state;
  };

  function close() {
    if (source) source.close();
    source = null;
    clearTimeout(stableTimer);
    stableTimer = null;
    clearTimeout(timer);
    timer = null;
  }

  function retryLater(seconds) {
    if (stopped || timer || !visible()) return;
    const backoff = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** failures);
    failures = Math.min(failures + 1, 10);
    const delay = seconds ? seconds * 1000 : backoff / 2 + Math.random() * (backoff / 2);
    mark('connecting');
    timer = setTimeout(() => {
      timer = null;
      connect();
    }, delay);
  }

  async function connect() {
    if (stopped || source || connecting || !visible()) return;
    connecting = true;
    mark('connecting');
    try {
      const response = await requestTicket();
      if (response.status === 401 || response.status === 403) {
        // The renewal already failed, or this user may not read dialogs: retrying cannot help.
        stopped = true;
        mark('off');
        return;
      }
      if (!response.ok) return retryLater(Number(response.headers.get('retry-after')) || 0);
      const { ticket } = await response.json();
      if (!visible()) return mark('paused');
      const stream = new EventSource(`/api/live?ticket=${encodeURIComponent(ticket)}`);
      source = stream;
      stream.addEventListener('open', () => {
        // Not at once: a stream that opens and drops at once (a proxy cutting it, a server restarting)
        // would otherwise be reopened every second forever.
        clearTimeout(stableTimer);
        stableTimer = setTimeout(() => {
          failures = 0;
        }, STABLE_MS);
        mark('open');
        if (heardBefore) onResync();
        heardBefore = true;
      });
      stream.addEventListener('dialog', (event) => {
        let change;
        try {
          change = JSON.parse(event.data);
        } catch {
          return;
        }
        onChange(change);
      });
      stream.addEventListener('error', () => {
        if (source !== stream) return;
        close();
        retryLater(0);
      });
    } catch {
      retryLater(0);
    } finally {
      connecting = false;
    }
  }

  document.addEventListener('visibilitychange', () => {
    if (visible()) {
      failures = 0;
      connect();
    } else {
      close();
      mark('paused');
    }
  });
  connect();
}

/** `run` once after `ms` of quiet: a burst of events (a message and its transfer) costs one read. */
export function debounce(run, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      run();
    }, ms);
  };
}
