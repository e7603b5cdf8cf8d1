// Phone simulator: "scanning" opens the QR content, as the phone's browser (or the app) would.
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
