// Phone simulator. Scanning: "scanning" opens the QR content, as the phone's browser (or the app) would.
// The content is pasted, or decoded in this page from a picked picture with the vendored jsQR.
(function () {
  "use strict";
  const form = document.getElementById("phone-scan");
  if (!form) return;
  const issuer = document.getElementById("phone").dataset.issuer.replace(/\/+$/, "");
  const input = document.getElementById("qr-content");
  const file = document.getElementById("qr-file");
  const message = document.getElementById("phone-message");
  // The texts in the page's language (the server renders them into #phone-texts; English here
  // if it did not). {name} marks a value put in.
  const TEXTS = (function () {
    try { return JSON.parse(document.getElementById("phone-texts").textContent) || {}; } catch (e) { return {}; }
  })();
  function t(key, english, values) {
    return String(TEXTS[key] || english).replace(/\{(\w+)\}/g, (all, name) =>
      values && values[name] != null ? String(values[name]) : all);
  }

  function say(text, isError) {
    message.textContent = text;
    message.classList.toggle("error", !!isError);
  }

  // Only a QR code of this provider: {issuer}/s/{scan_code}.
  function scanTarget(value) {
    let target;
    try { target = new URL(value.trim()); } catch (e) { return null; }
    const prefix = new URL(issuer + "/s/");
    if (target.origin !== prefix.origin || !target.pathname.startsWith(prefix.pathname)) return null;
    if (target.pathname.length <= prefix.pathname.length) return null;
    return target;
  }

  function scan(value) {
    const target = scanTarget(value);
    if (!target) {
      say(t("notOurs", "That is not a QR code of this sign-in service."), true);
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    input.removeAttribute("aria-invalid");
    say(t("opening", "Opening the sign-in request…"));
    window.location.assign(target.href);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!input.value.trim()) { say(t("pasteFirst", "Paste the QR content first, or pick a picture."), true); input.focus(); return; }
    scan(input.value);
  });

  async function pixels(picked) {
    // createImageBitmap reads the file without a URL (the page's CSP allows no blob: images)
    const bitmap = await createImageBitmap(picked);
    const scale = Math.min(1, 1600 / Math.max(bitmap.width, bitmap.height));
    const width = Math.max(1, Math.round(bitmap.width * scale));
    const height = Math.max(1, Math.round(bitmap.height * scale));
    const canvas = document.createElement("canvas");
    canvas.width = width; canvas.height = height;
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.fillStyle = "#fff";
    context.fillRect(0, 0, width, height);
    context.drawImage(bitmap, 0, 0, width, height);
    if (bitmap.close) bitmap.close();
    return context.getImageData(0, 0, width, height);
  }

  file.addEventListener("change", async function () {
    const picked = file.files && file.files[0];
    if (!picked) return;
    say(t("reading", "Reading the picture…"));
    let found = null;
    try {
      const image = await pixels(picked);
      found = window.jsQR(image.data, image.width, image.height, { inversionAttempts: "attemptBoth" });
    } catch (e) {
      say(t("unreadable", "That file could not be read as a picture."), true);
      return;
    } finally {
      file.value = "";
    }
    if (!found || !found.data) { say(t("noQr", "No QR code found in that picture. Try a sharper one."), true); return; }
    input.value = found.data;
    scan(found.data);
  });
})();

// The app's push inbox: the phone simulator gets a token with qr:approve as the app would (the
// first-party "Demo phone app": authorization code with PKCE against this provider, kept in
// sessionStorage for this tab only), then long-polls /qr/inbox and shows each push request as it
// arrives. Everything a request carries is put on the page with textContent, never as markup.
// The token is DPoP-bound (RFC 9449; the client is registered with require_dpop): the phone's key
// pair is made once per browser profile with WebCrypto, its private key not extractable, and kept
// in IndexedDB (a CryptoKeyPair is stored by structured clone, never as bytes); the code exchange
// and every inbox, approve and deny call carry a proof signed with it, so a token copied out of
// sessionStorage is of no use without the key.
(function () {
  "use strict";
  const box = document.getElementById("phone-inbox");
  if (!box) return;
  const issuer = document.getElementById("phone").dataset.issuer.replace(/\/+$/, "");
  const clientId = box.dataset.clientId;
  const user = box.dataset.user;
  const redirectUri = issuer + "/phone";
  const STORE = "qr-oidc-demo-phone:";
  const statusLine = document.getElementById("inbox-status");
  const result = document.getElementById("inbox-result");
  const list = document.getElementById("inbox-list");
  const keyLine = document.getElementById("phone-key");
  // The texts in the page's language (the server renders them into #phone-texts; English here
  // if it did not). {name} marks a value put in.
  const TEXTS = (function () {
    try { return JSON.parse(document.getElementById("phone-texts").textContent) || {}; } catch (e) { return {}; }
  })();
  function t(key, english, values) {
    return String(TEXTS[key] || english).replace(/\{(\w+)\}/g, (all, name) =>
      values && values[name] != null ? String(values[name]) : all);
  }
  const shown = new Map(); // scan_code -> {entry, item, picked}
  let token = null;
  let key = null; // {privateKey, jwk, jkt, kept, nonce}: the phone's DPoP key
  let skew = 0; // the server's clock minus this one, in ms (from the Date header)

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (className) node.className = className;
    return node;
  }
  function read(key) {
    try { return JSON.parse(sessionStorage.getItem(STORE + key)); } catch (e) { return null; }
  }
  function keep(key, value) {
    try {
      if (value === null) sessionStorage.removeItem(STORE + key);
      else sessionStorage.setItem(STORE + key, JSON.stringify(value));
    } catch (e) { /* storage refused: the token lives in memory only */ }
  }
  function setState(name, text) {
    box.dataset.state = name;
    statusLine.textContent = text;
    statusLine.classList.toggle("error", name === "failed");
  }

  // -- the token: authorization code with PKCE (S256), as the app would get it -------------------
  function b64url(bytes) {
    let text = "";
    for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function random() { return b64url(crypto.getRandomValues(new Uint8Array(32))); }

  // -- the phone's DPoP key, kept in IndexedDB ---------------------------------------------------
  const KEY_DB = "qr-oidc-demo-phone";
  const KEY_STORE = "keys";
  const KEY_NAME = "dpop";

  function done(request) {
    return new Promise((resolve, reject) => {
      request.onsuccess = () => resolve(request.result);
      request.onerror = (event) => { event.preventDefault(); reject(request.error); };
    });
  }
  function openKeys() {
    return new Promise((resolve, reject) => {
      const request = indexedDB.open(KEY_DB, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(KEY_STORE);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
      request.onblocked = () => reject(new Error("IndexedDB is blocked"));
    });
  }
  async function keptPair(db) {
    const found = await done(db.transaction(KEY_STORE).objectStore(KEY_STORE).get(KEY_NAME));
    return found && found.privateKey && found.publicKey ? found : null;
  }

  // The key pair of this browser profile: the one kept, or a new one kept now ({pair, kept}).
  async function phonePair() {
    let db = null;
    try { db = await openKeys(); } catch (e) { db = null; } // storage refused: this page only
    try {
      if (db) {
        const found = await keptPair(db).catch(() => null);
        if (found) return { pair: found, kept: true };
      }
      const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
      if (!db) return { pair, kept: false };
      try {
        // add(), not put(): if another tab kept one meanwhile, that one stays and is used
        await done(db.transaction(KEY_STORE, "readwrite").objectStore(KEY_STORE).add(pair, KEY_NAME));
        return { pair, kept: true };
      } catch (e) {
        const first = await keptPair(db).catch(() => null);
        return first ? { pair: first, kept: true } : { pair, kept: false };
      }
    } finally {
      if (db) db.close();
    }
  }

  async function phoneKey() {
    const { pair, kept } = await phonePair();
    const full = await crypto.subtle.exportKey("jwk", pair.publicKey); // public keys always export
    const jwk = { kty: full.kty, crv: full.crv, x: full.x, y: full.y };
    // RFC 7638: the required members in lexicographic order, no white space, SHA-256
    const canonical = JSON.stringify({ crv: jwk.crv, kty: "EC", x: jwk.x, y: jwk.y });
    const jkt = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(canonical)));
    return { privateKey: pair.privateKey, jwk, jkt, kept, nonce: null };
  }

  function text(value) { return b64url(new TextEncoder().encode(JSON.stringify(value))); }

  // A DPoP proof (ES256) for POST url, with ath for an access token and the server's nonce.
  async function proof(url, accessToken) {
    const claims = { jti: b64url(crypto.getRandomValues(new Uint8Array(16))), htm: "POST",
      htu: url.split("#")[0].split("?")[0], iat: Math.floor((Date.now() + skew) / 1000) };
    if (accessToken) {
      claims.ath = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(accessToken)));
    }
    if (key.nonce) claims.nonce = key.nonce;
    const input = text({ typ: "dpop+jwt", alg: "ES256", jwk: key.jwk }) + "." + text(claims);
    // WebCrypto's ECDSA signature is r || s: the JWS form
    const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key.privateKey,
      new TextEncoder().encode(input));
    return input + "." + b64url(signature);
  }

  // POST with a fresh proof; a use_dpop_nonce refusal is sent again once, with the nonce named.
  async function send(url, fields, headers, accessToken) {
    for (let retried = false; ; retried = true) {
      const response = await fetch(url, {
        method: "POST", credentials: "omit",
        headers: { ...headers, DPoP: await proof(url, accessToken) },
        body: new URLSearchParams(fields),
      });
      const date = Date.parse(response.headers.get("Date") || "");
      if (!Number.isNaN(date)) skew = date - Date.now();
      const nonce = response.headers.get("DPoP-Nonce");
      if (nonce) key.nonce = nonce;
      let body = {};
      try { body = await response.json(); } catch (e) { /* not JSON: an error below */ }
      const askedNonce = body.error === "use_dpop_nonce" ||
        /error="use_dpop_nonce"/.test(response.headers.get("WWW-Authenticate") || "");
      if (nonce && askedNonce && !retried) continue;
      return { status: response.status, ok: response.ok, body };
    }
  }

  function showKey() {
    keyLine.replaceChildren(t("key", "This phone's key:") + " ");
    const code = el("code", key.jkt.slice(0, 8));
    code.title = key.jkt;
    keyLine.append(code, " " + (key.kept ? t("keyKept", "(kept in this browser; the app's token works only with it)")
      : t("keyPageOnly", "(this page only: the browser keeps no keys here)")));
    keyLine.dataset.jkt = key.jkt;
    keyLine.hidden = false;
  }

  async function authorize() {
    const verifier = random();
    const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
    const state = random();
    keep("flow", { state, verifier, at: Date.now() });
    const query = new URLSearchParams({
      response_type: "code", client_id: clientId, redirect_uri: redirectUri,
      scope: "openid profile qr:approve", state, nonce: random(), prompt: "none",
      code_challenge: challenge, code_challenge_method: "S256",
    });
    setState("authorizing", t("connecting", "Connecting the app…"));
    window.location.assign(issuer + "/authorize?" + query.toString());
  }

  async function redeem(code, verifier) {
    const answer = await send(issuer + "/token", { grant_type: "authorization_code", code,
      redirect_uri: redirectUri, client_id: clientId, code_verifier: verifier },
    { Accept: "application/json" }, null);
    const body = answer.body;
    if (!answer.ok || !body.access_token) throw new Error(body.error || "no token");
    if (body.token_type !== "DPoP") throw new Error("the token is not bound to this phone's key");
    const expiresAt = Date.now() / 1000 + (Number(body.expires_in) || 300);
    keep("token", { user, jkt: key.jkt, token: body.access_token, expires_at: expiresAt, at: Date.now() });
    return body.access_token;
  }

  // The token this tab has for this user, or one got now (null: the page navigates to get one).
  async function obtain() {
    const here = new URL(window.location.href);
    const code = here.searchParams.get("code");
    const failed = here.searchParams.get("error");
    if (code || failed || here.searchParams.has("state")) {
      window.history.replaceState(null, "", here.pathname); // the code leaves the address bar
      const flow = read("flow");
      keep("flow", null);
      if (failed) throw new Error("the provider refused: " + failed);
      if (!flow || flow.state !== here.searchParams.get("state")) throw new Error("an answer not for this page");
      return redeem(code, flow.verifier);
    }
    const saved = read("token");
    if (saved && saved.user === user && saved.jkt === key.jkt && saved.expires_at > Date.now() / 1000 + 30) {
      return saved.token;
    }
    keep("token", null);
    const flow = read("flow");
    if (flow && Date.now() - flow.at < 10000) throw new Error("the sign-in did not come back");
    await authorize();
    return null;
  }

  // -- the inbox ---------------------------------------------------------------------------------
  function call(path, fields) {
    return send(issuer + path, fields, { Authorization: "DPoP " + token, Accept: "application/json" },
      token);
  }

  function hints(risk) {
    const items = [risk.same_network ? t("sameNetwork", "Same network as this phone")
      : t("otherNetwork", "Not on this phone's network")];
    if (risk.first_time) items.push(t("firstTime", "First request from this browser and address"));
    const n = Number(risk.recent_denials) || 0;
    if (n === 1) items.push(t("declinedOne", "You declined 1 request in the last 24 hours"));
    if (n > 1) items.push(t("declinedMany", "You declined {number} requests in the last 24 hours", { number: n }));
    return items;
  }

  function countdown(view) {
    // (the Date header has whole seconds: never more than the request's whole lifetime)
    const left = Math.min(view.entry.expires_at - view.entry.created_at,
      Math.round((view.entry.expires_at * 1000 - (Date.now() + skew)) / 1000));
    if (left <= 0) {
      view.expiry.textContent = t("expired", "expired");
      view.item.dataset.expired = "true";
      for (const button of view.item.querySelectorAll("button")) button.disabled = true;
      return;
    }
    view.expiry.textContent = t("expiresIn", "in {time}",
      { time: Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0") });
  }

  function render(entry) {
    const item = el("li", null, "push-request");
    item.dataset.scanCode = entry.scan_code;
    const name = (entry.client && entry.client.name) || t("unknownService", "an unknown service");
    const head = el("div", null, "push-head");
    const logo = entry.client && entry.client.logo_uri;
    if (logo && /^https?:\/\//i.test(logo)) {
      const img = el("img", null, "logo");
      img.alt = "";
      img.width = 40; img.height = 40;
      img.src = logo;
      head.append(img);
    }
    head.append(el("h3", t("signInTo", "Sign in to {name}?", { name })));
    item.append(head);
    if (entry.binding_message) item.append(el("p", "“" + entry.binding_message + "”", "push-binding"));

    const details = el("dl");
    const requester = entry.requester || {};
    const rows = [
      [t("asksFor", "Asks for"), (entry.scopes || []).join(", ")],
      [t("from", "From"), (requester.browser || t("unknownBrowser", "Unknown browser")) + " · " +
        (requester.ip || t("unknownAddress", "unknown address"))],
    ];
    for (const [term, value] of rows) details.append(el("dt", term), el("dd", value));
    const expiry = el("dd", "", "push-expiry");
    details.append(el("dt", t("expires", "Expires")), expiry);
    item.append(details);

    const risk = el("ul", null, "hint push-risk");
    for (const text of hints(entry.risk || {})) risk.append(el("li", text));
    item.append(risk);

    const view = { entry, item, expiry, picked: null };
    if (Array.isArray(entry.binding_choices) && entry.binding_choices.length) {
      const group = el("div", null, "push-numbers");
      group.setAttribute("role", "group");
      const label = el("p", t("pickNumber", "Pick the number shown on that screen"), "push-numbers-label");
      label.id = "pick-" + entry.scan_code.slice(0, 16).replace(/[^A-Za-z0-9_-]/g, "");
      group.setAttribute("aria-labelledby", label.id);
      for (const choice of entry.binding_choices) {
        const button = el("button", String(choice), "push-number");
        button.type = "button";
        button.setAttribute("aria-pressed", "false");
        button.addEventListener("click", () => {
          view.picked = String(choice);
          for (const other of group.querySelectorAll("button")) {
            other.setAttribute("aria-pressed", other === button ? "true" : "false");
          }
        });
        group.append(button);
      }
      item.append(label, group);
    }

    const actions = el("div", null, "push-actions");
    const cancel = el("button", t("cancel", "Cancel"));
    const approve = el("button", t("approve", "Approve"));
    cancel.type = approve.type = "button";
    cancel.addEventListener("click", () => decide(view, "deny"));
    approve.addEventListener("click", () => decide(view, "approve"));
    actions.append(cancel, approve);
    const said = el("p", "", "push-said");
    said.setAttribute("role", "status");
    item.append(actions, said);
    view.said = said;
    countdown(view);
    return view;
  }

  async function decide(view, action) {
    const fields = { scan_code: view.entry.scan_code };
    if (action === "approve" && view.entry.binding_choices) {
      if (!view.picked) { view.said.textContent = t("pickNumberFirst", "Pick the number shown on that screen first."); return; }
      fields.binding_code = view.picked;
    }
    for (const button of view.item.querySelectorAll("button")) button.disabled = true;
    const name = (view.entry.client && view.entry.client.name) || t("theService", "the service");
    let answer;
    try {
      answer = await call("/qr/" + action, fields);
    } catch (e) {
      answer = { ok: false, body: { error_description: t("noConnection", "No connection; try again.") } };
    }
    if (answer.ok) {
      shown.delete(view.entry.scan_code);
      view.item.remove();
      result.textContent = action === "approve" ? t("approvedBy", "Approved: {name} signs you in.", { name })
        : t("cancelledBy", "Cancelled: {name} was told no.", { name });
      showEmpty();
      return;
    }
    view.said.textContent = answer.body.error_description || answer.body.error || t("didNotWork", "That did not work.");
    view.said.classList.add("error");
    for (const button of view.item.querySelectorAll("button")) button.disabled = false;
  }

  function showEmpty() {
    setState("ready", shown.size ? "" : t("empty", "No requests right now. New ones appear here as they arrive."));
  }

  function update(entries) {
    const seen = new Set();
    for (const entry of entries) {
      if (!entry || typeof entry.scan_code !== "string") continue;
      seen.add(entry.scan_code);
      if (!shown.has(entry.scan_code)) {
        const view = render(entry);
        shown.set(entry.scan_code, view);
        list.append(view.item);
      }
    }
    for (const [code, view] of shown) {
      if (!seen.has(code)) { view.item.remove(); shown.delete(code); }
    }
    showEmpty();
  }

  async function listen() {
    let cursor = "";
    let failures = 0;
    for (;;) {
      const started = Date.now();
      let answer;
      try {
        // the first ask answers at once; then the server holds each until the inbox changes
        answer = await call("/qr/inbox", cursor ? { wait: "20", cursor } : { wait: "0" });
      } catch (e) {
        answer = null;
      }
      if (answer && answer.status === 401) {
        keep("token", null);
        const saved = read("fresh");
        if (saved && Date.now() - saved < 30000) { setState("failed", t("tokenRefused", "The app could not connect: its token was refused.")); return; }
        keep("fresh", Date.now());
        await authorize();
        return;
      }
      if (!answer || !answer.ok || !Array.isArray(answer.body.requests)) {
        failures += 1;
        if (box.dataset.state !== "ready") setState("retrying", t("retrying", "No connection to the sign-in service; retrying…"));
        await sleep(Math.min(30000, 1000 * 2 ** Math.min(failures, 5)));
        continue;
      }
      failures = 0;
      const same = answer.body.cursor === cursor;
      cursor = answer.body.cursor || "";
      update(answer.body.requests);
      if (same && Date.now() - started < 1000) await sleep(1000); // answered at once: not a spin
    }
  }

  setInterval(() => { for (const view of shown.values()) countdown(view); }, 1000);
  const signOut = document.getElementById("phone-sign-out");
  if (signOut) signOut.addEventListener("submit", () => { keep("token", null); keep("flow", null); });

  (async function () {
    try {
      key = await phoneKey();
      showKey();
    } catch (e) {
      setState("failed", t("noKey", "The app could not make its key ({error}); this page needs a " +
        "browser with WebCrypto, over HTTPS or on localhost.", { error: e.message }));
      return;
    }
    try {
      token = await obtain();
    } catch (e) {
      setState("failed", t("notConnected", "The app could not connect ({error}). Sign out and in again.",
        { error: e.message }));
      return;
    }
    if (token) listen();
  })();
})();
