// One page's session inside the Bitrix24 frame, shared by the app page, the CRM tab and the connector
// page: the page's bearer token (no cookies: docs/protocols.md B13), its renewal with a fresh AUTH_ID
// from the parent frame (refreshAuth), and the frame's height following the content.

/**
 * `token`: the token the server rendered; `renewPath`: where a fresh AUTH_ID buys a new one
 * (/api/page/renew, /api/tab/renew); `renewFailed`: the words when it cannot; `onRenewed(answer)`:
 * what else the page takes from a renewal's answer (the CRM tab: the record's Open Channel chat).
 * `attach(b24)` once the SDK's frame is up (or never, outside a frame: requests still go with the
 * token until it expires); `frame()` is that frame, or null.
 */
export function frameSession({ token, renewPath, renewFailed, onRenewed }) {
  let current = token;
  let b24 = null;
  let fitPending = false;
  let renewing = null;

  // The frame follows its content both ways. fitWindow sends width "100%" with the document's
  // scrollHeight, which never falls below the frame's own height: the frame could only grow. Content
  // shorter than the frame is first given its own height at the frame's present width (resizeWindow
  // takes numbers only: b24jssdk frame/parent.mjs), then fitWindow gives the portal back "100%".
  function contentHeight() {
    const style = getComputedStyle(document.body);
    return Math.ceil(document.body.getBoundingClientRect().height + Number.parseFloat(style.marginTop) + Number.parseFloat(style.marginBottom));
  }

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

  // Requests that find the token expired at once (a page's sections, its live stream) share one renewal.
  function renew() {
    if (!renewing) {
      renewing = (async () => {
        if (!b24) throw new Error(renewFailed);
        const auth = await b24.auth.refreshAuth();
        const response = await fetch(renewPath, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${current}` },
          body: JSON.stringify({ authId: auth && auth.access_token }),
        });
        if (!response.ok) throw new Error(renewFailed);
        const answer = await response.json();
        current = answer.token;
        if (onRenewed) onRenewed(answer);
      })().finally(() => {
        renewing = null;
      });
    }
    return renewing;
  }

  // fetch's (path, init) with the bearer: a 401 {renew} is renewed once and the same request (the same
  // idempotency key, the same body) sent again.
  async function request(path, init) {
    const options = init || {};
    for (let attempt = 0; ; attempt++) {
      const response = await fetch(path, { ...options, headers: { ...(options.headers || {}), authorization: `Bearer ${current}` } });
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

  return {
    fit,
    renew,
    request,
    attach(frame) {
      b24 = frame;
    },
    frame() {
      return b24;
    },
  };
}
