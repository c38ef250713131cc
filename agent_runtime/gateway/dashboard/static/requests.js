// Submit form (POST /v1/requests, then the request's own live page) and the live list.
"use strict";

(function () {
  const form = document.getElementById("submit");
  const recent = document.querySelector("#requests tbody");

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    const body = { text: form.elements.text.value };
    const deadline = form.elements.deadline.value;
    if (deadline) body.deadline_seconds = Number(deadline);
    button.disabled = true;
    try {
      const accepted = await AR.api("/v1/requests", { json: body });
      location.assign("/requests/" + encodeURIComponent(accepted.correlation_id));
    } catch (error) {
      AR.notice("Not submitted: " + error.message);
      button.disabled = false;
      form.elements.text.focus();
    }
  });

  const refresh = AR.poll(async function () {
    AR.renderRequests(recent, await AR.api("/v1/requests?limit=25"));
  }, 2000);
  AR.fleetEvents(function (event) {
    if (String(event.type).startsWith("request.")) refresh();
  });
})();
