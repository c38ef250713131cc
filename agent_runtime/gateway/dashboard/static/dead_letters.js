// The dead-letter browser (/v1/dead-letters): show one letter, replay it to its inbox.
"use strict";

(function () {
  const tbody = document.querySelector("#dead-letters tbody");
  const panel = document.getElementById("letter");

  function path(id) {
    return "/v1/dead-letters/" + encodeURIComponent(id);
  }

  async function show(letter) {
    try {
      const detail = await AR.api(path(letter.id));
      document.getElementById("letter-heading").textContent = "Dead letter " + letter.id + " (" + letter.agent + ")";
      document.getElementById("letter-body").textContent = JSON.stringify(detail, null, 2);
      panel.hidden = false;
      document.getElementById("letter-heading").focus();
    } catch (error) {
      AR.notice("Cannot show " + letter.id + ": " + error.message);
    }
  }

  async function replay(letter, button) {
    button.disabled = true;
    try {
      const done = await AR.api(path(letter.id) + ":replay", { method: "POST" });
      const result = Array.isArray(done) ? done[0] || {} : done;
      AR.notice("Replayed " + letter.id + " to " + (result.stream || letter.agent) +
        (result.new_id ? " as " + result.new_id : "") + ".", "ok");
      panel.hidden = true;
      await refresh();
    } catch (error) {
      AR.notice("Not replayed: " + error.message);
      button.disabled = false;
    }
  }

  function row(letter) {
    const name = " dead letter " + letter.id + " of " + letter.agent;
    const showButton = AR.el("button", { type: "button", class: "show", "aria-label": "Show" + name, text: "Show" });
    const replayButton = AR.el("button", { type: "button", class: "replay", "aria-label": "Replay" + name, text: "Replay" });
    showButton.addEventListener("click", function () { show(letter); });
    replayButton.addEventListener("click", function () { replay(letter, replayButton); });
    return AR.el("tr", { "data-id": letter.id },
      AR.el("th", { scope: "row", text: letter.agent }),
      AR.el("td", { title: letter.error || "", text: letter.reason }),
      AR.el("td", {}, AR.el("code", { text: letter.message_type || "?" })),
      AR.el("td", {}, letter.correlation_id ? AR.requestLink(letter.correlation_id) : "—"),
      AR.el("td", { class: "num", text: AR.number(letter.delivery_count) }),
      AR.el("td", { text: AR.seconds(letter.age_s) }),
      AR.el("td", { class: "actions" }, showButton, " ", replayButton));
  }

  const refresh = AR.poll(async function () {
    const letters = AR.list(await AR.api("/v1/dead-letters"), "dead_letters");
    const stable = letters.map(function (l) { return [l.id, l.reason, l.delivery_count]; });
    AR.update(tbody, stable, function () { return letters.map(row); });
    document.getElementById("dead-letters-empty").hidden = letters.length > 0;
  }, 3000);
  AR.fleetEvents(function (event) { if (event.type === "dead_letter") refresh(); });
})();
