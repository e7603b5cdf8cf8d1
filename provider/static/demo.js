// Demo relying party: QR login as a public client with PKCE, following the ticket by long poll.
(function () {
  const root = document.getElementById("qr-login");
  const issuer = root.dataset.issuer, clientId = root.dataset.clientId, scope = root.dataset.scope;
  const $ = (id) => document.getElementById(id);
  const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const say = (text) => { $("qr-status").textContent = text; };

  async function post(path, params) {
    const response = await fetch(path, {
      method: "POST", body: new URLSearchParams(params),
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
    });
    return { status: response.status, body: await response.json() };
  }

  async function start() {
    $("qr-restart").hidden = true; $("qr-user").hidden = true;
    const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
    const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
    const created = await post("/qr/ticket", {
      client_id: clientId, scope, nonce: b64url(crypto.getRandomValues(new Uint8Array(16))),
      code_challenge: challenge, code_challenge_method: "S256",
    });
    if (created.status !== 201) { say("Could not start: " + created.body.error); return restartable(); }
    const t = created.body;
    $("qr-image").src = t.qr_image; $("qr-image").hidden = false;
    $("qr-image").dataset.content = t.qr_content;
    $("qr-user-code").textContent = t.user_code; $("qr-code-line").hidden = false;
    if (t.binding_code) { $("qr-binding").textContent = t.binding_code; $("qr-binding-line").hidden = false; }
    say("Scan the QR code with the app.");
    let last = "pending";
    for (;;) {
      const s = await post("/qr/status", { ticket: t.ticket, wait: "25", last_status: last });
      if (s.status !== 200) { say("Error: " + s.body.error); return restartable(); }
      last = s.body.status;
      if (s.body.user) {
        $("qr-name").textContent = s.body.user.name;
        if (s.body.user.picture) $("qr-avatar").src = s.body.user.picture;
        $("qr-user").hidden = false;
      }
      if (last === "scanned") say("Scanned. Confirm on your phone.");
      else if (last === "approved") break;
      else if (last === "denied") { say("Cancelled on the phone."); return restartable(); }
      else if (last === "expired") { say("The QR code expired."); return restartable(); }
    }
    const tokens = await post("/token", {
      grant_type: "urn:qr-oidc:params:oauth:grant-type:qr-ticket",
      ticket: t.ticket, client_id: clientId, code_verifier: verifier,
    });
    if (tokens.status !== 200) { say("Error: " + tokens.body.error); return restartable(); }
    const claims = JSON.parse(atob(tokens.body.id_token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    $("qr-image").hidden = true; $("qr-code-line").hidden = true; $("qr-binding-line").hidden = true;
    say("Signed in as " + (claims.name || claims.sub) + ".");
  }

  function restartable() { $("qr-image").hidden = true; $("qr-restart").hidden = false; }
  $("qr-restart").addEventListener("click", start);
  start();
})();
