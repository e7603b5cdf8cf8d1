// Demo relying party: logs in with the QR login widget (public client, PKCE, verified ID token),
// or by a push login to the phone that the demo shop's server starts and polls (/demo/push).
(function () {
  "use strict";
  const root = document.getElementById("demo");
  const $ = (id) => document.getElementById(id);
  const { issuer, clientId, scope } = root.dataset;
  // /demo?dpop=off: the widget without DPoP (Bearer tokens, an unbound ticket), to compare
  const dpop = new URLSearchParams(window.location.search).get("dpop") !== "off";
  // The texts in the page's language (the server renders them into #demo-texts; English here
  // if it did not). {name} marks a value put in.
  const TEXTS = (function () {
    try { return JSON.parse($("demo-texts").textContent) || {}; } catch (e) { return {}; }
  })();
  function t(key, english, values) {
    return String(TEXTS[key] || english).replace(/\{(\w+)\}/g, (all, name) =>
      values && values[name] != null ? String(values[name]) : all);
  }
  const AMR = { qr: t("amrQr", "QR code, approved on the phone"),
    push: t("amrPush", "Push request, approved on the phone") };
  let widget = null;
  let idToken = null; // the signed-in ID token: the id_token_hint when signing out
  const SIGNED_OUT = "qr-oidc-demo:signed-out-sid";

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

  function signedIn(claims, verified, tokenType, token) {
    idToken = token || null;
    const name = claims.name || claims.preferred_username || claims.sub;
    const amr = (claims.amr || []).join(", ");
    $("demo-name").textContent = name;
    $("demo-email").textContent = claims.email || t("notShared", "(not shared)");
    $("demo-amr").textContent = AMR[amr] || amr;
    $("demo-verified").textContent = verified;
    $("demo-token-type").textContent = tokenType || t("keptByServer", "(kept by the shop's server)");
    if (claims.picture) { $("demo-avatar").src = claims.picture; $("demo-avatar").hidden = false; }
    $("demo-signed-out").hidden = true;
    $("demo-signed-in").hidden = false;
    $("demo-welcome").focus();
    if (widget) { widget.destroy(); widget = null; }
    push.stop();
  }

  function start() {
    $("demo-signed-in").hidden = true;
    $("demo-signed-out").hidden = false;
    push.reset();
    widget = QrLogin.mount($("qr-login"), {
      issuer, clientId, scope, dpop,
      onScanned: (user) => note("onScanned", user.name),
      onSuccess: (tokens, claims) => {
        note("onSuccess", claims.name);
        const h = header(tokens.id_token);
        signedIn(claims, t("verifiedHere", "signature verified in this page ({alg}, key {kid}…, " +
          "from /jwks.json); issuer, audience, expiry and nonce checked",
        { alg: h.alg, kid: String(h.kid).slice(0, 10) }),
        tokens.token_type === "DPoP" ? t("dpop", "DPoP: bound to this page's key, useless to anyone who copies it")
          : t("bearer", "Bearer: whoever holds it can use it"), tokens.id_token);
      },
      onCancel: () => note("onCancel", t("phoneCancelled", "the phone cancelled")),
      onExpired: (info) => note("onExpired", t("renewal", "renewal {number}", { number: info.renewals + 1 })),
      onError: (error) => note("onError", error.message),
    });
  }

  // -- push login: the shop's server holds the request; this page holds a handle -----------------
  const push = (function () {
    const section = $("demo-push");
    const form = $("demo-push-form");
    const status = $("demo-push-status");
    const binding = $("demo-push-binding");
    const again = $("demo-push-again");
    let run = 0; // each push login's number: a stale timer or answer of an earlier one is ignored

    function state(name, text) {
      section.dataset.state = name;
      status.textContent = text || "";
      status.classList.toggle("error", name === "failed");
      form.hidden = name === "waiting" || name === "sending";
      again.hidden = !(name === "denied" || name === "expired" || name === "failed");
      if (name !== "waiting") binding.hidden = true;
    }

    // A POST to the shop's server with this page's CSRF token (the form's hidden field).
    async function post(url, fields) {
      const body = new URLSearchParams(new FormData(form));
      for (const [key, value] of Object.entries(fields || {})) body.set(key, value);
      let response;
      try {
        response = await fetch(url, { method: "POST", body, credentials: "same-origin",
          headers: { Accept: "application/json" } });
      } catch (e) {
        return { offline: true, error: "offline", error_description: t("unreachable", "The shop's server could not be reached.") };
      }
      const type = response.headers.get("Content-Type") || "";
      if (!type.startsWith("application/json")) { // the CSRF check answers with a page
        return { error: "page_expired", error_description: t("pageExpired", "This page expired; reload it.") };
      }
      try { return await response.json(); }
      catch (e) {
        return { error: "server_error",
          error_description: t("serverAnswered", "The shop's server answered {status}.", { status: response.status }) };
      }
    }

    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

    async function begin() {
      const mine = ++run;
      state("sending", t("sending", "Sending the push login…"));
      const started = await post(form.action);
      if (mine !== run) return;
      if (!started.handle) {
        note("push", started.error);
        state("failed", started.error === "too_many_requests"
          ? t("phoneBusy", "The phone already has requests waiting: decide on them there first, then try again.")
          : t("notSent", "The push login could not be sent: {reason}",
            { reason: started.error_description || started.error }));
        return;
      }
      note("push", t("sent", "sent, waiting for the phone"));
      state("waiting", t("waiting", "Waiting for approval on the phone…"));
      binding.textContent = t("phoneShows", "The phone shows: “{message}”", { message: started.binding_message });
      binding.hidden = false;
      let interval = Math.max(1, Number(started.interval) || 5);
      let failures = 0;
      const deadline = Date.now() + (Number(started.expires_in) + 60) * 1000;
      while (mine === run) {
        await sleep(interval * 1000);
        if (mine !== run) return;
        const answer = await post(form.dataset.poll, { handle: started.handle });
        if (mine !== run) return;
        if (answer.claims) {
          note("push", t("approved", "approved"));
          const c = answer.claims;
          state("idle", "");
          signedIn(c, t("verifiedByServer", "checked by the shop's server ({alg}, key {kid}…, " +
            "from /jwks.json): signature, issuer, audience and expiry",
          { alg: answer.alg, kid: String(answer.kid).slice(0, 10) }), undefined, answer.id_token);
          return;
        }
        if (answer.error === "authorization_pending") continue;
        if (answer.error === "slow_down") { interval += 5; continue; }
        if (answer.error === "access_denied") {
          note("push", t("cancelledNote", "cancelled on the phone"));
          state("denied", t("cancelled", "The push login was cancelled on the phone."));
          return;
        }
        if (answer.error === "expired_token") {
          note("push", t("expiredNote", "expired"));
          state("expired", t("expired", "The push login expired before it was approved."));
          return;
        }
        if ((answer.offline || answer.error === "temporarily_unavailable") && ++failures < 5
            && Date.now() < deadline) {
          interval = Math.min(interval * 2, 30);
          continue;
        }
        note("push", answer.error);
        state("failed", t("failed", "The push login failed: {reason}",
          { reason: answer.error_description || answer.error }));
        return;
      }
    }

    form.addEventListener("submit", (event) => { event.preventDefault(); begin(); });
    again.addEventListener("click", () => { begin(); });
    return {
      stop() { run++; },
      reset() { run++; state("idle", ""); },
    };
  })();

  function claimsOf(jwt) {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
  }

  // Signing out: RP-initiated logout at the provider (its end-session page posts itself and
  // sends the browser back here), which also tells the demo shop's server by back-channel.
  $("demo-sign-out").addEventListener("click", () => {
    if (!idToken) { note("sign out", t("tokensForgotten", "tokens forgotten")); start(); $("demo-login-heading").focus(); return; }
    note("sign out", t("signingOut", "at the provider, then back here"));
    const sid = claimsOf(idToken).sid;
    if (sid) sessionStorage.setItem(SIGNED_OUT, sid);
    const query = new URLSearchParams({ id_token_hint: idToken, ui_locales: document.documentElement.lang,
      post_logout_redirect_uri: issuer.replace(/\/+$/, "") + "/demo",
      state: Math.random().toString(36).slice(2) });
    window.location.assign(issuer.replace(/\/+$/, "") + "/end_session?" + query.toString());
  });

  // Back from signing out: did the provider's back-channel reach the shop's server?
  async function backChannelHeard(sid) {
    const said = $("demo-logout");
    said.hidden = false;
    said.textContent = t("logoutWaiting", "Signed out. Waiting to hear it on the shop's back-channel…");
    for (let tries = 0; tries < 20; tries++) {
      try {
        const answer = await fetch(root.dataset.logouts + "?" + new URLSearchParams({ sid }),
          { credentials: "same-origin" }).then((r) => r.json());
        if (answer.sid_heard) {
          said.textContent = t("logoutHeard",
            "Signed out. The provider's back-channel logout reached the shop's server for this sign-in.");
          note("back-channel logout", t("logoutHeardNote", "received by the shop's server"));
          return;
        }
      } catch (e) { /* try again */ }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    said.textContent = t("logoutNotHeard", "Signed out. The shop's server has not heard the back-channel logout (yet).");
  }

  start();
  const signedOutSid = sessionStorage.getItem(SIGNED_OUT);
  if (signedOutSid) {
    sessionStorage.removeItem(SIGNED_OUT);
    backChannelHeard(signedOutSid);
  }
})();
