// The end-session page: a relying party sent the browser here with its ID token, so the sign-out
// form is submitted at once (a POST with the page's CSRF token: GET changes nothing).
(function () {
  "use strict";
  const form = document.getElementById("end-session");
  if (form && form.dataset.automatic === "true") form.submit();
})();
