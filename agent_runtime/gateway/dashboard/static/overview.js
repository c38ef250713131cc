// Fleet overview: /v1/status every 2 s and at once on every fleet event (WebSocket).
"use strict";

(function () {
  const fleet = document.querySelector("#fleet tbody");
  const recent = document.querySelector("#requests tbody");
  const events = document.getElementById("events");

  function breakers(value) {
    const entries = Object.entries(value || {});
    if (!entries.length) return "—";
    return entries.map(function (e) {
      const state = typeof e[1] === "object" && e[1] !== null ? (e[1].state || JSON.stringify(e[1])) : e[1];
      return e[0] + ": " + state;
    }).join(", ");
  }

  function renderFleet(status) {
    const agents = AR.list(status, "agents");
    AR.update(fleet, agents, function () { return agents.map(function (a) {
      const open = Object.values(a.breakers || {}).some(function (b) {
        return String(b && b.state !== undefined ? b.state : b).toLowerCase() === "open";
      });
      return AR.el("tr", { "data-agent": a.agent, class: a.workers_alive ? "" : "down" },
        AR.el("th", { scope: "row", text: a.agent }),
        AR.el("td", { class: "num workers", text: AR.number(a.workers_alive) }),
        AR.el("td", { class: "num", text: AR.number(a.msg_per_s, 1) }),
        AR.el("td", { class: "num", text: AR.number(a.lag) }),
        AR.el("td", { class: "num", text: AR.number(a.pending) }),
        AR.el("td", { class: "num", text: AR.seconds(a.oldest_pending_age_s) }),
        AR.el("td", { class: "num", text: AR.number(a.dead_letters) }),
        AR.el("td", { class: open ? "breaker-open" : "", text: breakers(a.breakers) }));
    }); });
    document.getElementById("fleet-updated").replaceWith(
      Object.assign(AR.time(Date.now()), { id: "fleet-updated" }));
  }

  const refreshFleet = AR.poll(async function () {
    const status = await AR.api("/v1/status");
    renderFleet(status);
    const signing = status.signing && status.signing.enabled;
    document.getElementById("signing").textContent = signing ? "on" : "off";
  }, 2000);
  const refreshRequests = AR.poll(async function () {
    AR.renderRequests(recent, await AR.api("/v1/requests?limit=10"));
  }, 3000);

  AR.fleetEvents(function (event) {
    const text = [event.type, event.agent || "", event.consumer || event.worker || "", event.correlation_id ? AR.short(event.correlation_id) : ""]
      .filter(Boolean).join(" ");
    events.prepend(AR.el("li", {}, AR.time(event.at || Date.now()), " ", text));
    while (events.children.length > 20) events.lastElementChild.remove();
    if (String(event.type).startsWith("request.")) refreshRequests();
    else refreshFleet();
  }, function (state) {
    document.getElementById("live-state").textContent = state === "live" ? "live events connected" : state;
  });
})();
