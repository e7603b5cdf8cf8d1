/*! qr-login.js: the QR login widget of qr-oidc. No dependencies; served by the provider.
 *
 *   <div id="login"></div>
 *   <script src="https://id.example/static/qr-login.js"></script>
 *   <script>
 *     QrLogin.mount(document.getElementById("login"), {
 *       clientId: "my-spa", scope: "openid profile",
 *       onSuccess: (tokens, claims) => console.log("hello", claims.name),
 *     });
 *   </script>
 *
 * Two modes:
 * - create (default): the widget creates a ticket as a public client with PKCE (S256), shows its
 *   QR, follows it by long poll, renews it when it expires, and once the phone approves polls the
 *   token endpoint with the code_verifier and verifies the ID token against the JWKS.
 * - follow (`ticket: {...}`, or `renew: async () => ticket` alone): the ticket was created
 *   elsewhere (by the provider's hosted login page, or by a confidential client's server); the
 *   widget shows and follows it, asks `renew` for the first and for every next one, and calls
 *   onApproved instead of polling the token endpoint.
 * DPoP (RFC 9449), on by default in create mode: the widget makes a non-extractable ECDSA P-256
 * key per mount (WebCrypto) and sends a proof with the ticket creation and every token poll, so
 * the ticket and the tokens are bound to that key (`token_type: "DPoP"`); `dpop: false` turns it
 * off (Bearer tokens, an unbound ticket). `handle.dpopProof(method, url, accessToken)` makes a
 * proof for a resource call with the widget's key.
 * Declarative use: any element with a `data-qr-login` attribute is mounted when the page loads,
 * with options from its data attributes; callbacks are also dispatched as DOM events
 * (qrlogin:scanned, qrlogin:success, qrlogin:approved, qrlogin:cancel, qrlogin:expired,
 * qrlogin:error) on the element. See docs/web.md.
 */
(function (global) {
  "use strict";

  var QR_GRANT = "urn:qr-oidc:params:oauth:grant-type:qr-ticket";
  var script = document.currentScript;
  var scriptSrc = script && script.src ? script.src : "";
  // The widget is served at {issuer}/static/qr-login.js: that names the issuer by default.
  var scriptIssuer = scriptSrc.replace(/\/static\/qr-login\.js(?:[?#].*)?$/, "");
  var stylesheet = scriptSrc ? scriptSrc.replace(/qr-login\.js(?:[?#].*)?$/, "qr-login.css") : "";

  // The widget's texts in each language it speaks ({name} marks a value put in). The `locale`
  // option picks one (a BCP 47 tag: "de", "fr-CH", "zh-CN"); by default the page's <html lang>,
  // then the browser's languages, then English. `texts` overrides single texts.
  var LOCALES = {
    en: {
      loading: "Preparing a QR code…",
      pending: "Scan the QR code with the app to log in.",
      scanned: "{name} scanned the code. Confirm on the phone.",
      someone: "Someone",
      approved: "Approved on the phone. Signing you in…",
      success: "Signed in.",
      denied: "Cancelled on the phone.",
      renewing: "The QR code expired. Here is a new one.",
      expired: "The QR code expired.",
      offline: "Connection lost. Trying again…",
      error: "Something went wrong: {error}.",
      busy: "Too many attempts. Trying again in {seconds} s…",
      alt: "QR code to log in: scan it with the app, or enter the code {code} in the app.",
      code: "No camera? Enter the code {code} in the app.",
      binding: "When the app asks, pick {number}",
      bindingScanned: "On the phone, pick {number}",
      renew: "Show a new QR code",
      validFor: "Valid for {time}",
    },
    zh: {
      loading: "正在生成二维码…",
      pending: "请用应用扫描二维码登录。",
      scanned: "{name} 已扫码，请在手机上确认。",
      someone: "有人",
      approved: "已在手机上批准，正在登录…",
      success: "已登录。",
      denied: "已在手机上取消。",
      renewing: "二维码已过期，这是新的二维码。",
      expired: "二维码已过期。",
      offline: "连接中断，正在重试…",
      error: "出现问题：{error}。",
      busy: "尝试次数过多，{seconds} 秒后重试…",
      alt: "登录二维码：请用应用扫描，或在应用中输入代码 {code}。",
      code: "没有相机？请在应用中输入代码 {code}。",
      binding: "应用询问时，请选择 {number}",
      bindingScanned: "请在手机上选择 {number}",
      renew: "显示新的二维码",
      validFor: "有效期 {time}",
    },
    de: {
      loading: "QR-Code wird vorbereitet…",
      pending: "Scannen Sie den QR-Code mit der App, um sich anzumelden.",
      scanned: "{name} hat den Code gescannt. Bitte auf dem Handy bestätigen.",
      someone: "Jemand",
      approved: "Auf dem Handy bestätigt. Sie werden angemeldet…",
      success: "Angemeldet.",
      denied: "Auf dem Handy abgebrochen.",
      renewing: "Der QR-Code ist abgelaufen. Hier ist ein neuer.",
      expired: "Der QR-Code ist abgelaufen.",
      offline: "Verbindung unterbrochen. Neuer Versuch…",
      error: "Etwas ist schiefgelaufen: {error}.",
      busy: "Zu viele Versuche. Neuer Versuch in {seconds} s…",
      alt: "QR-Code zur Anmeldung: mit der App scannen oder den Code {code} in der App eingeben.",
      code: "Keine Kamera? Geben Sie den Code {code} in der App ein.",
      binding: "Wenn die App fragt, wählen Sie {number}",
      bindingScanned: "Wählen Sie auf dem Handy {number}",
      renew: "Neuen QR-Code anzeigen",
      validFor: "Gültig für {time}",
    },
    fr: {
      loading: "Préparation du code QR…",
      pending: "Scannez le code QR avec l’application pour vous connecter.",
      scanned: "{name} a scanné le code. Confirmez sur le téléphone.",
      someone: "Quelqu’un",
      approved: "Approuvé sur le téléphone. Connexion en cours…",
      success: "Connecté.",
      denied: "Annulé sur le téléphone.",
      renewing: "Le code QR a expiré. En voici un nouveau.",
      expired: "Le code QR a expiré.",
      offline: "Connexion perdue. Nouvelle tentative…",
      error: "Une erreur s’est produite : {error}.",
      busy: "Trop de tentatives. Nouvel essai dans {seconds} s…",
      alt: "Code QR de connexion : scannez-le avec l’application ou saisissez le code {code} dans l’application.",
      code: "Pas de caméra ? Saisissez le code {code} dans l’application.",
      binding: "Quand l’application le demande, choisissez {number}",
      bindingScanned: "Sur le téléphone, choisissez {number}",
      renew: "Afficher un nouveau code QR",
      validFor: "Valable {time}",
    },
    es: {
      loading: "Preparando un código QR…",
      pending: "Escanea el código QR con la app para iniciar sesión.",
      scanned: "{name} escaneó el código. Confirma en el teléfono.",
      someone: "Alguien",
      approved: "Aprobado en el teléfono. Iniciando sesión…",
      success: "Sesión iniciada.",
      denied: "Cancelado en el teléfono.",
      renewing: "El código QR caducó. Aquí tienes uno nuevo.",
      expired: "El código QR caducó.",
      offline: "Se perdió la conexión. Reintentando…",
      error: "Algo salió mal: {error}.",
      busy: "Demasiados intentos. Reintentando en {seconds} s…",
      alt: "Código QR para iniciar sesión: escanéalo con la app o introduce el código {code} en la app.",
      code: "¿Sin cámara? Introduce el código {code} en la app.",
      binding: "Cuando la app lo pida, elige {number}",
      bindingScanned: "En el teléfono, elige {number}",
      renew: "Mostrar un código QR nuevo",
      validFor: "Válido durante {time}",
    },
    ja: {
      loading: "QRコードを準備しています…",
      pending: "アプリでQRコードをスキャンしてログインしてください。",
      scanned: "{name} がコードをスキャンしました。スマートフォンで確認してください。",
      someone: "誰か",
      approved: "スマートフォンで承認されました。ログインしています…",
      success: "ログインしました。",
      denied: "スマートフォンでキャンセルされました。",
      renewing: "QRコードの有効期限が切れました。新しいコードです。",
      expired: "QRコードの有効期限が切れました。",
      offline: "接続が切れました。再試行しています…",
      error: "問題が発生しました: {error}。",
      busy: "試行回数が多すぎます。{seconds} 秒後に再試行します…",
      alt: "ログイン用QRコード: アプリでスキャンするか、アプリでコード {code} を入力してください。",
      code: "カメラがない場合は、アプリでコード {code} を入力してください。",
      binding: "アプリで聞かれたら {number} を選んでください",
      bindingScanned: "スマートフォンで {number} を選んでください",
      renew: "新しいQRコードを表示",
      validFor: "有効期限 {time}",
    },
  };
  var TEXTS = LOCALES.en;

  /** The language of LOCALES for a tag or list of tags (the first one spoken), or null. */
  function localeOf(tags) {
    var list = Array.isArray(tags) ? tags : [tags];
    for (var i = 0; i < list.length; i++) {
      if (typeof list[i] !== "string" || !list[i]) continue;
      var primary = list[i].trim().replace(/_/g, "-").split("-")[0].toLowerCase();
      if (Object.prototype.hasOwnProperty.call(LOCALES, primary)) return primary;
    }
    return null;
  }
  function pageLocale() {
    var lang = typeof document !== "undefined" && document.documentElement
      ? document.documentElement.getAttribute("lang") : null;
    var nav = typeof navigator !== "undefined" ? (navigator.languages || [navigator.language]) : [];
    return localeOf(lang) || localeOf(nav) || "en";
  }


  // -- small helpers --------------------------------------------------------------------------
  function fill(text, values) {
    return String(text).replace(/\{(\w+)\}/g, function (all, key) {
      return values && values[key] != null ? String(values[key]) : all;
    });
  }
  function el(tag, className, attrs) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (attrs) Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }
  function b64url(bytes) {
    var s = "";
    var view = new Uint8Array(bytes);
    for (var i = 0; i < view.length; i++) s += String.fromCharCode(view[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function b64urlDecode(text) {
    var s = text.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var raw = atob(s);
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }
  function randomString(bytes) { return b64url(crypto.getRandomValues(new Uint8Array(bytes))); }
  async function s256(text) {
    return b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  }
  function sleep(ms, signal) {
    return new Promise(function (resolve) {
      var id = setTimeout(resolve, ms);
      if (signal) signal.addEventListener("abort", function () { clearTimeout(id); resolve(); });
    });
  }
  function whenVisible(signal) {
    if (!document.hidden) return Promise.resolve();
    return new Promise(function (resolve) {
      function check() {
        if (!document.hidden || (signal && signal.aborted)) {
          document.removeEventListener("visibilitychange", check);
          resolve();
        }
      }
      document.addEventListener("visibilitychange", check);
      if (signal) signal.addEventListener("abort", check);
    });
  }
  function safeImageUrl(value) {
    if (typeof value !== "string" || !value) return null;
    try {
      var u = new URL(value, document.baseURI);
      return u.protocol === "https:" || u.protocol === "http:" ? u.href : null;
    } catch (e) { return null; }
  }
  function clock(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    var m = Math.floor(seconds / 60), s = seconds % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  class QrLoginError extends Error {
    constructor(code, description, status) {
      super(description ? code + ": " + description : code);
      this.name = "QrLoginError";
      this.error = code;
      this.description = description || "";
      this.status = status || 0;
    }
  }

  // The server's clock minus this one, in ms, from the Date header of its answers (when the browser
  // lets the page read it): a DPoP proof's iat is the server's time (it allows 5 s ahead).
  var skew = 0;
  function noteDate(response) {
    var date = Date.parse((response && response.headers && response.headers.get("Date")) || "");
    if (!isNaN(date)) skew = date - Date.now();
  }

  // POST a form body without cookies. Without a DPoP proof the request is CORS-simple (a
  // safelisted content type: no preflight); with one, the provider allows the DPoP header.
  async function post(url, params, signal, proof) {
    var headers = { "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json" };
    if (proof) headers.DPoP = proof;
    var response = await fetch(url, {
      method: "POST",
      body: new URLSearchParams(params),
      headers: headers,
      credentials: "omit",
      cache: "no-store",
      signal: signal,
    });
    noteDate(response);
    var body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    return { status: response.status, headers: response.headers, body: body || {} };
  }

  function hasWebCrypto() {
    return typeof crypto !== "undefined" && !!crypto.subtle && typeof crypto.getRandomValues === "function";
  }

  // -- DPoP (RFC 9449) -------------------------------------------------------------------------
  // A key pair whose private key never leaves WebCrypto (not extractable); proofs are ES256 JWS.
  async function dpopKey() {
    var pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
    var full = await crypto.subtle.exportKey("jwk", pair.publicKey);
    var jwk = { kty: full.kty, crv: full.crv, x: full.x, y: full.y };
    // RFC 7638 thumbprint: the required members, in lexicographic order, no spaces
    var canonical = JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y });
    return { privateKey: pair.privateKey, jwk: jwk, jkt: await s256(canonical), nonce: null };
  }
  function b64urlText(text) { return b64url(new TextEncoder().encode(text)); }
  /** A DPoP proof for METHOD URL (htu: the URL without query or fragment), with `ath` for an
   *  access token and the server's nonce when one was given. */
  async function dpopProof(key, method, url, accessToken) {
    var htu = String(url).split("#")[0].split("?")[0];
    var claims = { jti: randomString(16), htm: method, htu: htu,
      iat: Math.floor((Date.now() + skew) / 1000) };
    if (accessToken) claims.ath = await s256(accessToken);
    if (key.nonce) claims.nonce = key.nonce;
    var input = b64urlText(JSON.stringify({ typ: "dpop+jwt", alg: "ES256", jwk: key.jwk })) + "." +
      b64urlText(JSON.stringify(claims));
    // WebCrypto's ECDSA signature is r || s (64 bytes): what a JWS ES256 signature is
    var signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key.privateKey,
      new TextEncoder().encode(input));
    return input + "." + b64url(signature);
  }

  // -- discovery and ID token verification -------------------------------------------------------
  var discoveries = {};
  function discover(issuer) {
    if (!discoveries[issuer]) {
      discoveries[issuer] = fetch(issuer + "/.well-known/openid-configuration", { credentials: "omit" })
        .then(function (r) {
          noteDate(r);
          if (!r.ok) throw new QrLoginError("discovery_failed", "HTTP " + r.status, r.status);
          return r.json();
        })
        .catch(function (e) { delete discoveries[issuer]; throw e; });
    }
    return discoveries[issuer];
  }

  var ALGS = {
    RS256: { key: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, verify: { name: "RSASSA-PKCS1-v1_5" } },
    ES256: { key: { name: "ECDSA", namedCurve: "P-256" }, verify: { name: "ECDSA", hash: "SHA-256" } },
    EdDSA: { key: { name: "Ed25519" }, verify: { name: "Ed25519" } },
  };

  async function fetchJwks(uri, reload) {
    var r = await fetch(uri, { credentials: "omit", cache: reload ? "reload" : "default" });
    if (!r.ok) throw new QrLoginError("jwks_unavailable", "HTTP " + r.status, r.status);
    return (await r.json()).keys || [];
  }

  /** Verify an ID token: signature (RS256, ES256 or EdDSA) against the issuer's JWKS, then iss,
   *  aud, exp, iat and nonce. Resolves to the claims; rejects with a QrLoginError. */
  async function verifyIdToken(idToken, options) {
    options = options || {};
    var issuer = (options.issuer || scriptIssuer).replace(/\/+$/, "");
    var parts = String(idToken || "").split(".");
    if (parts.length !== 3) throw new QrLoginError("invalid_id_token", "not a JWS");
    var header, claims;
    try {
      header = JSON.parse(new TextDecoder().decode(b64urlDecode(parts[0])));
      claims = JSON.parse(new TextDecoder().decode(b64urlDecode(parts[1])));
    } catch (e) { throw new QrLoginError("invalid_id_token", "not JSON"); }
    var alg = ALGS[header.alg];
    if (!alg) throw new QrLoginError("invalid_id_token", "algorithm " + header.alg + " not accepted");
    var jwksUri = options.jwksUri || (await discover(issuer)).jwks_uri;
    var pick = function (keys) {
      return keys.filter(function (k) {
        return (!header.kid || k.kid === header.kid) && (!k.use || k.use === "sig") &&
          (!k.alg || k.alg === header.alg);
      })[0];
    };
    var jwk = pick(await fetchJwks(jwksUri, false)) || pick(await fetchJwks(jwksUri, true));
    if (!jwk) throw new QrLoginError("invalid_id_token", "no key " + header.kid + " in the JWKS");
    var material = { kty: jwk.kty, ext: true };
    ["n", "e", "crv", "x", "y"].forEach(function (m) { if (jwk[m] !== undefined) material[m] = jwk[m]; });
    var key = await crypto.subtle.importKey("jwk", material, alg.key, false, ["verify"]);
    var ok = await crypto.subtle.verify(alg.verify, key, b64urlDecode(parts[2]),
      new TextEncoder().encode(parts[0] + "." + parts[1]));
    if (!ok) throw new QrLoginError("invalid_id_token", "bad signature");
    var now = Date.now() / 1000, skew = options.clockSkew == null ? 120 : options.clockSkew;
    if (claims.iss !== issuer) throw new QrLoginError("invalid_id_token", "wrong issuer");
    var aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (options.clientId && aud.indexOf(options.clientId) < 0) {
      throw new QrLoginError("invalid_id_token", "not for this client");
    }
    if (aud.length > 1 && options.clientId && claims.azp && claims.azp !== options.clientId) {
      throw new QrLoginError("invalid_id_token", "wrong azp");
    }
    if (typeof claims.exp !== "number" || claims.exp + skew < now) {
      throw new QrLoginError("invalid_id_token", "expired");
    }
    if (typeof claims.iat === "number" && claims.iat - skew > now) {
      throw new QrLoginError("invalid_id_token", "issued in the future");
    }
    if (options.nonce && claims.nonce !== options.nonce) {
      throw new QrLoginError("invalid_id_token", "wrong nonce");
    }
    return claims;
  }

  /** The claims of a JWT without any check (for display only). */
  function decodeJwt(token) {
    return JSON.parse(new TextDecoder().decode(b64urlDecode(String(token).split(".")[1])));
  }

  // -- the widget ----------------------------------------------------------------------------------
  class Widget {
    constructor(element, options) {
      if (!element || !element.appendChild) throw new TypeError("QrLogin.mount needs an element");
      this.element = element;
      this.options = Object.assign({
        issuer: scriptIssuer || window.location.origin,
        scope: "openid profile",
        verifyIdToken: true,
        dpop: true,
        autoRenew: true,
        maxRenewals: 10,
        wait: 25,
        stylesheet: stylesheet,
      }, options || {});
      this.options.issuer = String(this.options.issuer).replace(/\/+$/, "");
      this.locale = localeOf(this.options.locale) || pageLocale();
      this.texts = Object.assign({}, LOCALES.en, LOCALES[this.locale], this.options.texts || {});
      this.follow = !!this.options.ticket || typeof this.options.renew === "function";
      if (!this.follow && !this.options.clientId) throw new TypeError("QrLogin.mount needs clientId");
      this.state = "idle";
      this.renewals = 0;
      this.controller = null;
      this.timer = null;
      this.build();
    }

    // DOM ----------------------------------------------------------------------------------------
    build() {
      loadStylesheet(this.options.stylesheet);
      // (its language said, for screen readers, when it differs from the page's)
      var root = el("div", "qrl", { "data-state": "loading", tabindex: "-1",
        lang: this.locale === "zh" ? "zh-CN" : this.locale });
      var frame = el("div", "qrl-frame");
      var qr = el("img", "qrl-qr", { width: "240", height: "240", alt: "", decoding: "async" });
      qr.hidden = true;
      var spinner = el("div", "qrl-spinner", { "aria-hidden": "true" });
      var overlay = el("div", "qrl-overlay");
      overlay.hidden = true;
      var avatar = el("img", "qrl-avatar", { alt: "", width: "72", height: "72" });
      var name = el("span", "qrl-name");
      var renew = el("button", "qrl-renew", { type: "button" });
      renew.textContent = this.texts.renew;
      renew.hidden = true;
      overlay.append(avatar, name);
      frame.append(spinner, qr, overlay, renew);
      var status = el("p", "qrl-status", { role: "status", "aria-live": "polite", "aria-atomic": "true" });
      var binding = el("p", "qrl-binding");
      binding.hidden = true;
      var code = el("p", "qrl-code");
      code.hidden = true;
      var timer = el("p", "qrl-timer");
      timer.hidden = true;
      root.append(frame, status, binding, code, timer);
      this.element.replaceChildren(root);
      this.ui = { root: root, frame: frame, qr: qr, spinner: spinner, overlay: overlay, avatar: avatar,
        name: name, renew: renew, status: status, binding: binding, code: code, timer: timer };
      var self = this;
      renew.addEventListener("click", function () { self.restart(); });
    }

    setState(state, text) {
      this.state = state;
      this.ui.root.setAttribute("data-state", state);
      if (text != null) this.stateText = text;
      this.say(text);
    }

    say(text) {
      if (text != null && this.ui.status.textContent !== text) this.ui.status.textContent = text;
    }

    showTicket(t) {
      var ui = this.ui, texts = this.texts;
      ui.overlay.hidden = true;
      ui.renew.hidden = true;
      ui.qr.alt = fill(texts.alt, { code: t.user_code || "" });
      ui.qr.src = t.qr_image;
      ui.qr.hidden = false;
      if (t.user_code) {
        ui.code.replaceChildren();
        var parts = texts.code.split("{code}");
        var c = el("code", "qrl-user-code");
        c.textContent = t.user_code;
        ui.code.append(parts[0], c, parts.slice(1).join("{code}"));
        ui.code.hidden = false;
      } else {
        ui.code.hidden = true;
      }
      this.showBinding(t.binding_code, texts.binding);
      this.startTimer(Number(t.expires_in) || 0);
    }

    showBinding(number, text) {
      var ui = this.ui;
      if (!number) { ui.binding.hidden = true; return; }
      ui.binding.replaceChildren();
      var parts = text.split("{number}");
      var strong = el("strong", "qrl-binding-code");
      strong.textContent = number;
      ui.binding.append(parts[0], strong, parts.slice(1).join("{number}"));
      ui.binding.hidden = false;
    }

    showUser(user) {
      var ui = this.ui;
      if (!user) return;
      ui.name.textContent = user.name || "";
      var picture = safeImageUrl(user.picture);
      if (picture) { ui.avatar.src = picture; ui.avatar.hidden = false; } else { ui.avatar.hidden = true; }
      ui.overlay.hidden = false;
    }

    startTimer(seconds) {
      var ui = this.ui, texts = this.texts, self = this;
      this.stopTimer();
      if (!seconds) { ui.timer.hidden = true; return; }
      var end = Date.now() + seconds * 1000;
      var tick = function () {
        var left = (end - Date.now()) / 1000;
        ui.timer.textContent = fill(texts.validFor, { time: clock(left) });
        if (left <= 0) self.stopTimer();
      };
      tick();
      ui.timer.hidden = false;
      this.timer = setInterval(tick, 1000);
    }

    stopTimer() {
      if (this.timer) clearInterval(this.timer);
      this.timer = null;
    }

    offerRenew(state, text) {
      this.stopTimer();
      this.ui.timer.hidden = true;
      this.ui.overlay.hidden = true;
      this.ui.renew.hidden = false;
      this.setState(state, text);
    }

    // Call the option's callback with args, and dispatch "qrlogin:NAME" with detail on the element.
    emit(name, args, detail) {
      var callbacks = {
        scanned: "onScanned", success: "onSuccess", approved: "onApproved", cancel: "onCancel",
        expired: "onExpired", error: "onError",
      };
      var fn = this.options[callbacks[name]];
      if (typeof fn === "function") {
        try {
          fn.apply(null, args);
        } catch (e) {
          if (typeof console !== "undefined") console.error(e);
        }
      }
      this.element.dispatchEvent(new CustomEvent("qrlogin:" + name, {
        bubbles: true, detail: detail === undefined ? args[0] : detail,
      }));
    }

    // Life cycle -----------------------------------------------------------------------------------
    start() {
      this.controller = new AbortController();
      var signal = this.controller.signal, self = this;
      var run = this.follow ? this.runFollow(signal) : this.runCreate(signal);
      run.catch(function (e) {
        if (signal.aborted) return;
        var error = e instanceof QrLoginError ? e : new QrLoginError("network_error", e && e.message);
        self.offerRenew("error", fill(self.texts.error, { error: error.description || error.error }));
        self.emit("error", [error]);
      });
      return this;
    }

    restart() {
      this.stop();
      this.renewals = 0;
      this.ui.qr.hidden = true;
      this.ui.renew.hidden = true;
      this.ui.overlay.hidden = true;
      this.start();
      // the button that was clicked is gone: keep keyboard focus in the widget
      try { this.ui.root.focus({ preventScroll: true }); } catch (e) { /* ignore */ }
    }

    stop() {
      if (this.controller) this.controller.abort();
      this.controller = null;
      this.stopTimer();
    }

    destroy() {
      this.stop();
      this.element.replaceChildren();
    }

    // create mode: ticket, follow, tokens; renew when expired
    async runCreate(signal) {
      var o = this.options;
      if (!hasWebCrypto()) {
        // PKCE (and DPoP) need WebCrypto, which browsers give only to secure contexts
        throw new QrLoginError("unsupported_browser",
          "this page needs WebCrypto (HTTPS, or localhost) to sign in with a QR code");
      }
      var meta = await this.endpoints(signal);
      var dpop = o.dpop === false ? null : await this.dpopKey();
      if (signal.aborted) return;
      for (;;) {
        this.setState("loading", this.renewals ? null : this.texts.loading);
        var verifier = randomString(32);
        var nonce = o.nonce || randomString(16);
        var params = {
          client_id: o.clientId, scope: o.scope, nonce: nonce,
          code_challenge: await s256(verifier), code_challenge_method: "S256",
        };
        var created = await this.call(meta.qr_ticket_endpoint, params, signal, 4, dpop);
        if (signal.aborted) return;
        if (created.status !== 201) {
          throw new QrLoginError(created.body.error || "ticket_failed", created.body.error_description,
            created.status);
        }
        var t = created.body;
        this.ticket = t;
        this.showTicket(t);
        this.setState("pending", this.renewals ? this.texts.renewing : this.texts.pending);
        var outcome = await this.followStatus(meta.qr_status_endpoint, t, signal);
        if (signal.aborted) return;
        if (outcome === "approved") {
          this.stopTimer();
          this.ui.timer.hidden = true;
          this.setState("approved", this.texts.approved);
          var tokens = await this.redeem(meta.token_endpoint, t, verifier, signal, dpop);
          if (signal.aborted || !tokens) return;
          var claims = null;
          if (tokens.id_token) {
            claims = o.verifyIdToken
              ? await verifyIdToken(tokens.id_token, {
                issuer: o.issuer, clientId: o.clientId, nonce: nonce, jwksUri: meta.jwks_uri,
              })
              : decodeJwt(tokens.id_token);
          }
          if (signal.aborted) return;
          this.setState("success", this.texts.success);
          this.emit("success", [tokens, claims], { tokens: tokens, claims: claims });
          return;
        }
        if (outcome === "denied") {
          this.offerRenew("denied", this.texts.denied);
          this.emit("cancel", [{ ticket: t.ticket }]);
          return;
        }
        if (outcome === "redeemed") throw new QrLoginError("already_used", "this QR code was used already");
        // expired (or purged): a new QR, unless it has been renewed often enough on an idle page
        this.emit("expired", [{ renewals: this.renewals }]);
        if (!o.autoRenew || this.renewals >= o.maxRenewals) {
          this.offerRenew("expired", this.texts.expired);
          return;
        }
        this.renewals += 1;
        await whenVisible(signal); // no new tickets for a page nobody looks at
        if (signal.aborted) return;
      }
    }

    // follow mode: a ticket made elsewhere; call onApproved instead of polling for tokens.
    // On expiry, options.renew() may hand over the next ticket (a Promise of the same shape).
    async runFollow(signal) {
      var o = this.options;
      var meta = await this.endpoints(signal);
      var t = this.followed || o.ticket;
      if (this.stale || (!t && typeof o.renew === "function")) t = await this.nextTicket(signal);
      for (;;) {
        if (!t || signal.aborted) return;
        this.followed = t;
        this.stale = false;
        this.ticket = t;
        this.showTicket(t);
        this.setState("pending", this.renewals ? this.texts.renewing : this.texts.pending);
        var outcome = await this.followStatus(meta.qr_status_endpoint, t, signal);
        if (signal.aborted) return;
        this.stopTimer();
        if (outcome === "approved") {
          this.setState("approved", this.texts.approved);
          this.emit("approved", [{ ticket: t.ticket }]);
          return;
        }
        if (outcome === "denied") {
          this.setState("denied", this.texts.denied);
          this.emit("cancel", [{ ticket: t.ticket }]);
          return;
        }
        if (outcome === "redeemed") throw new QrLoginError("already_used", "this QR code was used already");
        this.stale = true;
        this.emit("expired", [{ renewals: this.renewals, ticket: t.ticket }]);
        if (typeof o.renew !== "function") {
          this.ui.timer.hidden = true;
          this.setState("expired", this.texts.expired);
          return;
        }
        if (!o.autoRenew || this.renewals >= o.maxRenewals) {
          this.offerRenew("expired", this.texts.expired);
          return;
        }
        this.renewals += 1;
        await whenVisible(signal);
        t = await this.nextTicket(signal);
      }
    }

    // The mount's DPoP key, made once (a restart keeps it; a new mount makes another).
    dpopKey() {
      if (!this.dpop) {
        var self = this;
        this.dpop = dpopKey().catch(function (e) {
          self.dpop = null;
          throw new QrLoginError("dpop_unavailable", "this browser cannot make an ECDSA P-256 key (" +
            ((e && e.message) || e) + "); mount the widget with dpop: false to do without", 0);
        });
      }
      return this.dpop;
    }

    async nextTicket(signal) {
      this.setState("loading", null);
      var next = await this.options.renew();
      if (signal.aborted) return null;
      if (!next || !next.ticket || !next.qr_image) {
        throw new QrLoginError("renew_failed", "options.renew gave no ticket");
      }
      return next;
    }

    async endpoints(signal) {
      var o = this.options, e = o.endpoints || {};
      if (e.qr_status_endpoint && (this.follow || (e.qr_ticket_endpoint && e.token_endpoint))) return e;
      for (var attempt = 0; ; attempt++) {
        try {
          return Object.assign({}, await discover(o.issuer), e);
        } catch (err) {
          if (signal.aborted || attempt >= 5) throw err;
          this.say(this.texts.offline);
          await sleep(Math.min(10000, 1000 * Math.pow(2, attempt)), signal);
        }
      }
    }

    // A POST that retries network failures and 429/5xx with backoff (at most `tries` failures in a
    // row); any other answer is returned. The state's text comes back once the server answers.
    // With a DPoP key each attempt carries a fresh proof; a `use_dpop_nonce` refusal is retried
    // once with the nonce the server named (DPoP-Nonce), which later proofs carry too.
    async call(url, params, signal, tries, dpop) {
      tries = tries || 30;
      var interrupted = false, nonceRetried = false;
      for (var attempt = 0; ; attempt++) {
        var result = null, failure = null;
        try {
          var proof = dpop ? await dpopProof(dpop, "POST", url) : null;
          result = await post(url, params, signal, proof);
        } catch (err) {
          failure = err;
        }
        if (signal.aborted) return { status: 0, body: {}, headers: new Headers() };
        var nonce = dpop && result && result.headers.get("DPoP-Nonce");
        if (nonce) dpop.nonce = nonce;
        if (nonce && !nonceRetried && result.body.error === "use_dpop_nonce") {
          nonceRetried = true;
          attempt--; // not a failure
          continue;
        }
        if (result && result.status !== 429 && result.status < 500) {
          if (interrupted) this.say(this.stateText);
          return result;
        }
        if (attempt + 1 >= tries) {
          if (result) {
            throw new QrLoginError(result.body.error || "server_error", result.body.error_description,
              result.status);
          }
          throw new QrLoginError("network_error", "the sign-in service cannot be reached" +
            (failure && failure.message ? " (" + failure.message + ")" : ""));
        }
        interrupted = true;
        var delay = Math.min(10000, 500 * Math.pow(2, attempt));
        if (result && result.status === 429) {
          var seconds = parseInt(result.headers.get("Retry-After"), 10);
          seconds = isNaN(seconds) ? 5 : Math.min(Math.max(seconds, 1), 120);
          delay = seconds * 1000;
          this.say(fill(this.texts.busy, { seconds: seconds }));
        } else {
          this.say(this.texts.offline);
        }
        await sleep(delay, signal);
        if (signal.aborted) return { status: 0, body: {}, headers: new Headers() };
      }
    }

    // Long poll the status endpoint until the ticket is decided or expires; returns the status.
    async followStatus(url, t, signal) {
      var last = "pending", scanned = false;
      for (;;) {
        var asked = Date.now();
        var r = await this.call(url, { ticket: t.ticket, wait: String(this.options.wait), last_status: last },
          signal);
        if (signal.aborted) return "aborted";
        // a server that holds no more long polls answers at once with the same status: wait a
        // moment before asking again rather than asking in a tight loop
        if (r.status === 200 && r.body.status === last && Date.now() - asked < 1000) {
          await sleep(1000, signal);
          if (signal.aborted) return "aborted";
        }
        if (r.status === 404) return "expired"; // purged: as good as expired
        if (r.status !== 200) {
          throw new QrLoginError(r.body.error || "status_failed", r.body.error_description, r.status);
        }
        var s = r.body.status, user = r.body.user;
        if (user && s !== "expired") this.showUser(user);
        if (s === "scanned" && !scanned) {
          scanned = true;
          this.setState("scanned", fill(this.texts.scanned, { name: (user && user.name) || this.texts.someone }));
          if (t.binding_code) this.showBinding(t.binding_code, this.texts.bindingScanned);
          this.emit("scanned", [user || {}]);
        }
        if (typeof r.body.expires_in === "number" && s !== "expired") this.startTimer(r.body.expires_in);
        if (s === "approved" || s === "denied" || s === "expired" || s === "redeemed") return s;
        last = s;
      }
    }

    // Poll the token endpoint (RFC 8628 rules: authorization_pending waits, slow_down adds 5 s).
    async redeem(url, t, verifier, signal, dpop) {
      var interval = Math.max(1, Number(t.interval) || 2);
      var params = { grant_type: QR_GRANT, ticket: t.ticket, client_id: this.options.clientId,
        code_verifier: verifier };
      for (var polls = 0; polls < 100; polls++) {
        var r = await this.call(url, params, signal, 0, dpop);
        if (signal.aborted) return null;
        if (r.status === 200) return r.body;
        var error = r.body.error;
        if (error === "authorization_pending") {
          await sleep(interval * 1000, signal);
        } else if (error === "slow_down") {
          interval = Math.min(interval + 5, 60);
          await sleep(interval * 1000, signal);
        } else {
          throw new QrLoginError(error || "token_failed", r.body.error_description, r.status);
        }
        if (signal.aborted) return null;
      }
      throw new QrLoginError("token_failed", "no tokens after many polls");
    }
  }

  function loadStylesheet(href) {
    if (!href || typeof document === "undefined") return;
    var links = document.querySelectorAll('link[rel="stylesheet"]');
    for (var i = 0; i < links.length; i++) {
      if (links[i].href === href || /(^|\/)qr-login\.css(\?|$)/.test(links[i].getAttribute("href") || "")) return;
    }
    var link = el("link", null, { rel: "stylesheet", href: href });
    document.head.appendChild(link);
  }

  // -- public API --------------------------------------------------------------------------------
  function mount(element, options) {
    var widget = new Widget(element, options).start();
    return {
      get state() { return widget.state; },
      get ticket() { return widget.ticket || null; },
      /** A DPoP proof by this mount's key (RFC 9449), e.g. for the userinfo endpoint with the access
       *  token (`Authorization: DPoP <token>`); rejects when the widget has no key (dpop: false). */
      dpopProof: async function (method, url, accessToken) {
        if (widget.options.dpop === false || !hasWebCrypto()) {
          throw new QrLoginError("dpop_unavailable", "this widget has no DPoP key");
        }
        return dpopProof(await widget.dpopKey(), String(method).toUpperCase(), url, accessToken);
      },
      restart: function () { widget.restart(); },
      destroy: function () { widget.destroy(); },
    };
  }

  // Declarative: <div data-qr-login data-client-id="…" data-scope="…"></div>, or for a ticket made
  // elsewhere data-ticket, data-qr-image, data-user-code, data-binding-code, data-expires-in and
  // data-complete-form="ID": when the phone decides (or the QR expires) that form is submitted.
  // data-ticket-form="ID" (the provider's hosted login page): tickets come from posting that form
  // (same origin, with its cookie and CSRF token), the first one and each renewal; the ticket is
  // put into the complete form's "ticket" input before it is submitted.
  function mountDeclared(node) {
    if (node.__qrLogin) return node.__qrLogin;
    var d = node.dataset, options = {};
    if (d.issuer) options.issuer = d.issuer;
    if (d.clientId) options.clientId = d.clientId;
    if (d.scope) options.scope = d.scope;
    if (d.dpop === "false" || d.dpop === "off") options.dpop = false;
    if (d.locale) options.locale = d.locale;
    if (d.ticket) {
      options.ticket = {
        ticket: d.ticket, qr_image: d.qrImage, user_code: d.userCode,
        binding_code: d.bindingCode || undefined, expires_in: Number(d.expiresIn) || 0,
      };
    }
    if (d.ticketForm) {
      options.renew = function () { return ticketFromForm(document.getElementById(d.ticketForm)); };
    }
    if (d.completeForm) {
      var submit = function (detail) {
        var form = document.getElementById(d.completeForm);
        if (!form) { window.location.reload(); return; }
        if (form.elements.ticket && detail && detail.ticket) form.elements.ticket.value = detail.ticket;
        form.submit();
      };
      options.onApproved = submit;
      options.onCancel = submit;
      // the server answers an expired ticket with a page and a new QR; a ticket form renews itself
      if (!d.ticketForm) options.onExpired = submit;
    }
    node.__qrLogin = mount(node, options);
    return node.__qrLogin;
  }

  // A ticket from posting a form of this page (the hosted login page's #qr-start).
  async function ticketFromForm(form) {
    if (!form) throw new QrLoginError("renew_failed", "no ticket form");
    var response = await fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      headers: { "Accept": "application/json" },
      credentials: "same-origin",
      cache: "no-store",
    });
    var body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (response.status !== 201 || !body) {
      throw new QrLoginError((body && body.error) || "ticket_failed",
        (body && body.error_description) || "HTTP " + response.status, response.status);
    }
    return body;
  }

  function autoMount() {
    var nodes = document.querySelectorAll("[data-qr-login]");
    for (var i = 0; i < nodes.length; i++) mountDeclared(nodes[i]);
  }

  global.QrLogin = {
    version: "1.0.0",
    mount: mount,
    verifyIdToken: verifyIdToken,
    decodeJwt: decodeJwt,
    texts: TEXTS,
    locales: LOCALES,
    Error: QrLoginError,
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", autoMount);
  else autoMount();
})(window);
