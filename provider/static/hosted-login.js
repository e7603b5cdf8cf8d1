// Hosted login page: follow the page's ticket by long poll; continue by itself once the phone decides.
(function () {
  const panel = document.getElementById("hosted-qr");
  if (!panel) return;
  const ticket = panel.dataset.ticket;
  const $ = (id) => document.getElementById(id);
  const say = (text) => { $("qr-status").textContent = text; };
  let last = "pending";

  async function follow() {
    for (;;) {
      let response;
      try {
        response = await fetch("/qr/status", {
          method: "POST",
          headers: { "Content-Type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({ ticket, wait: "25", last_status: last }),
        });
      } catch (e) {
        say("Connection lost; retrying…");
        await new Promise((resolve) => setTimeout(resolve, 2000));
        continue;
      }
      if (response.status !== 200) { say("This QR code is no longer valid."); return; }
      const body = await response.json();
      last = body.status;
      if (body.user) {
        $("qr-name").textContent = body.user.name;
        if (body.user.picture) $("qr-avatar").src = body.user.picture;
        $("qr-user").hidden = false;
      }
      if (last === "scanned") say("Scanned. Confirm on your phone.");
      else if (last === "approved") { say("Approved. Signing you in…"); $("qr-complete").submit(); return; }
      else if (last === "denied") { say("Cancelled on the phone."); $("qr-complete").submit(); return; }
      else if (last === "expired") { say("The QR code expired; showing a new one…"); window.location.reload(); return; }
      else if (last === "redeemed") { say("Already used."); return; }
    }
  }
  follow();
})();
