// The demo's language switch (templates/_languages.html): each link sets ui_locales for the page
// it opens; this keeps the choice in a cookie of this browser too, so that the pages the demo
// leads to (sign-in, the phone's return from the provider, a scanned QR) follow it. The server
// reads it after ui_locales and before Accept-Language (provider/web/i18n.py). Nothing is sent
// to the server by choosing.
(function () {
  "use strict";
  for (const link of document.querySelectorAll("nav.languages a[data-language]")) {
    link.addEventListener("click", function () {
      const secure = window.location.protocol === "https:" ? "; Secure" : "";
      document.cookie = "qr_oidc_lang=" + encodeURIComponent(link.dataset.language) +
        "; Path=/; Max-Age=31536000; SameSite=Lax" + secure;
    });
  }
})();
