// Phone simulator: "scanning" opens the QR content, as the phone's browser would.
(function () {
  const form = document.getElementById("phone-scan");
  if (!form) return;
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const value = document.getElementById("qr-content").value.trim();
    let target;
    try { target = new URL(value); } catch (e) { alert("That is not a QR code of this site."); return; }
    if (target.origin !== window.location.origin || !target.pathname.startsWith("/s/")) {
      alert("That is not a QR code of this site."); return;
    }
    window.location.assign(target.pathname);
  });
})();
