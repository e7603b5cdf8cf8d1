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
      say("That is not a QR code of this sign-in service.", true);
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    input.removeAttribute("aria-invalid");
    say("Opening the sign-in request…");
    window.location.assign(target.href);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!input.value.trim()) { say("Paste the QR content first, or pick a picture.", true); input.focus(); return; }
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
    say("Reading the picture…");
    let found = null;
    try {
      const image = await pixels(picked);
      found = window.jsQR(image.data, image.width, image.height, { inversionAttempts: "attemptBoth" });
    } catch (e) {
      say("That file could not be read as a picture.", true);
      return;
    } finally {
      file.value = "";
    }
    if (!found || !found.data) { say("No QR code found in that picture. Try a sharper one.", true); return; }
    input.value = found.data;
    scan(found.data);
  });
})();

// The app's push inbox: the phone simulator gets a Bearer token with qr:approve as the app would
// (the first-party "Demo phone app": authorization code with PKCE against this provider, kept in
// sessionStorage for this tab only), then long-polls /qr/inbox and shows each push request as it
// arrives. Everything a request carries is put on the page with textContent, never as markup.
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
  const shown = new Map(); // scan_code -> {entry, item, picked}
  let token = null;
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
    setState("authorizing", "Connecting the app…");
    window.location.assign(issuer + "/authorize?" + query.toString());
  }

  async function redeem(code, verifier) {
    const response = await fetch(issuer + "/token", {
      method: "POST", credentials: "omit",
      body: new URLSearchParams({ grant_type: "authorization_code", code, redirect_uri: redirectUri,
        client_id: clientId, code_verifier: verifier }),
    });
    const body = await response.json();
    if (!response.ok || !body.access_token) throw new Error(body.error || "no token");
    const expiresAt = Date.now() / 1000 + (Number(body.expires_in) || 300);
    keep("token", { user, token: body.access_token, expires_at: expiresAt, at: Date.now() });
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
    if (saved && saved.user === user && saved.expires_at > Date.now() / 1000 + 30) return saved.token;
    keep("token", null);
    const flow = read("flow");
    if (flow && Date.now() - flow.at < 10000) throw new Error("the sign-in did not come back");
    await authorize();
    return null;
  }

  // -- the inbox ---------------------------------------------------------------------------------
  async function call(path, fields) {
    const response = await fetch(issuer + path, {
      method: "POST", credentials: "omit",
      headers: { Authorization: "Bearer " + token, Accept: "application/json" },
      body: new URLSearchParams(fields),
    });
    const date = Date.parse(response.headers.get("Date") || "");
    if (!Number.isNaN(date)) skew = date - Date.now();
    let body = {};
    try { body = await response.json(); } catch (e) { /* not JSON: an error below */ }
    return { status: response.status, ok: response.ok, body };
  }

  function hints(risk) {
    const items = [risk.same_network ? "Same network as this phone" : "Not on this phone's network"];
    if (risk.first_time) items.push("First request from this browser and address");
    const n = Number(risk.recent_denials) || 0;
    if (n > 0) items.push("You declined " + n + " request" + (n === 1 ? "" : "s") + " in the last 24 hours");
    return items;
  }

  function countdown(view) {
    // (the Date header has whole seconds: never more than the request's whole lifetime)
    const left = Math.min(view.entry.expires_at - view.entry.created_at,
      Math.round((view.entry.expires_at * 1000 - (Date.now() + skew)) / 1000));
    if (left <= 0) {
      view.expiry.textContent = "expired";
      view.item.dataset.expired = "true";
      for (const button of view.item.querySelectorAll("button")) button.disabled = true;
      return;
    }
    view.expiry.textContent = "in " + Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0");
  }

  function render(entry) {
    const item = el("li", null, "push-request");
    item.dataset.scanCode = entry.scan_code;
    const name = (entry.client && entry.client.name) || "an unknown service";
    const head = el("div", null, "push-head");
    const logo = entry.client && entry.client.logo_uri;
    if (logo && /^https?:\/\//i.test(logo)) {
      const img = el("img", null, "logo");
      img.alt = "";
      img.width = 40; img.height = 40;
      img.src = logo;
      head.append(img);
    }
    head.append(el("h3", "Sign in to " + name + "?"));
    item.append(head);
    if (entry.binding_message) item.append(el("p", "“" + entry.binding_message + "”", "push-binding"));

    const details = el("dl");
    const requester = entry.requester || {};
    const rows = [
      ["Asks for", (entry.scopes || []).join(", ")],
      ["From", (requester.browser || "Unknown browser") + " · " + (requester.ip || "unknown address")],
    ];
    for (const [term, value] of rows) details.append(el("dt", term), el("dd", value));
    const expiry = el("dd", "", "push-expiry");
    details.append(el("dt", "Expires"), expiry);
    item.append(details);

    const risk = el("ul", null, "hint push-risk");
    for (const text of hints(entry.risk || {})) risk.append(el("li", text));
    item.append(risk);

    const view = { entry, item, expiry, picked: null };
    if (Array.isArray(entry.binding_choices) && entry.binding_choices.length) {
      const group = el("div", null, "push-numbers");
      group.setAttribute("role", "group");
      const label = el("p", "Pick the number shown on that screen", "push-numbers-label");
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
    const cancel = el("button", "Cancel");
    const approve = el("button", "Approve");
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
      if (!view.picked) { view.said.textContent = "Pick the number shown on that screen first."; return; }
      fields.binding_code = view.picked;
    }
    for (const button of view.item.querySelectorAll("button")) button.disabled = true;
    const name = (view.entry.client && view.entry.client.name) || "the service";
    let answer;
    try {
      answer = await call("/qr/" + action, fields);
    } catch (e) {
      answer = { ok: false, body: { error_description: "No connection; try again." } };
    }
    if (answer.ok) {
      shown.delete(view.entry.scan_code);
      view.item.remove();
      result.textContent = action === "approve" ? "Approved: " + name + " signs you in."
        : "Cancelled: " + name + " was told no.";
      showEmpty();
      return;
    }
    view.said.textContent = answer.body.error_description || answer.body.error || "That did not work.";
    view.said.classList.add("error");
    for (const button of view.item.querySelectorAll("button")) button.disabled = false;
  }

  function showEmpty() {
    setState("ready", shown.size ? "" : "No requests right now. New ones appear here as they arrive.");
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
        if (saved && Date.now() - saved < 30000) { setState("failed", "The app could not connect: its token was refused."); return; }
        keep("fresh", Date.now());
        await authorize();
        return;
      }
      if (!answer || !answer.ok || !Array.isArray(answer.body.requests)) {
        failures += 1;
        if (box.dataset.state !== "ready") setState("retrying", "No connection to the sign-in service; retrying…");
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
      token = await obtain();
    } catch (e) {
      setState("failed", "The app could not connect (" + e.message + "). Sign out and in again.");
      return;
    }
    if (token) listen();
  })();
})();
