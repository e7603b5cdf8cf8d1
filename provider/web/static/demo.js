// Demo relying party: logs in with the QR login widget (public client, PKCE, verified ID token).
(function () {
  "use strict";
  const root = document.getElementById("demo");
  const $ = (id) => document.getElementById(id);
  const { issuer, clientId, scope } = root.dataset;
  let widget = null;

  // What the widget reported, newest last (handy to follow the callbacks while trying it out).
  function note(callback, text) {
    const item = document.createElement("li");
    const name = document.createElement("code");
    name.textContent = callback;
    item.append(name, text ? " " + text : "");
    item.dataset.callback = callback;
    $("demo-events").append(item);
  }

  function header(jwt) {
    const part = jwt.split(".")[0].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
  }

  function signedIn(tokens, claims) {
    const name = claims.name || claims.preferred_username || claims.sub;
    $("demo-name").textContent = name;
    $("demo-email").textContent = claims.email || "(not shared)";
    $("demo-amr").textContent = (claims.amr || []).join(", ") === "qr" ? "QR code, approved on the phone"
      : (claims.amr || []).join(", ");
    const h = header(tokens.id_token);
    $("demo-verified").textContent = "signature verified in this page (" + h.alg + ", key " +
      String(h.kid).slice(0, 10) + "…, from /jwks.json); issuer, audience, expiry and nonce checked";
    if (claims.picture) { $("demo-avatar").src = claims.picture; $("demo-avatar").hidden = false; }
    $("demo-signed-out").hidden = true;
    $("demo-signed-in").hidden = false;
    $("demo-welcome").focus();
    widget.destroy();
    widget = null;
  }

  function start() {
    $("demo-signed-in").hidden = true;
    $("demo-signed-out").hidden = false;
    widget = QrLogin.mount($("qr-login"), {
      issuer, clientId, scope,
      onScanned: (user) => note("onScanned", user.name),
      onSuccess: (tokens, claims) => { note("onSuccess", claims.name); signedIn(tokens, claims); },
      onCancel: () => note("onCancel", "the phone cancelled"),
      onExpired: (info) => note("onExpired", "renewal " + (info.renewals + 1)),
      onError: (error) => note("onError", error.message),
    });
  }

  $("demo-sign-out").addEventListener("click", () => {
    note("sign out", "tokens forgotten");
    start();
    $("demo-login-heading").focus();
  });
  start();
})();
