// One request: its hops arrive over Server-Sent Events (/v1/requests/CID/events) and are added
// to the timeline as they happen; the `end` event gives the final state and report or failure.
"use strict";

(function () {
  const cid = document.getElementById("cid").textContent.trim();
  const base = "/v1/requests/" + encodeURIComponent(cid);
  const timeline = document.querySelector("#timeline tbody");
  const state = document.getElementById("state");
  const seen = new Set();
  let finished = false;

  function setState(name) {
    state.textContent = name;
    state.className = "state state-" + String(name).replace(/[^a-z_]/g, "");
    document.title = "Request " + AR.short(cid) + " " + name + " · agent-runtime";
  }

  function addHop(hop, id) {
    const key = id || JSON.stringify(hop);
    if (seen.has(key)) return;
    seen.add(key);
    const duration = hop.duration_ms === null || hop.duration_ms === undefined ? "—" : AR.number(hop.duration_ms, 1) + " ms";
    timeline.append(AR.el("tr", { class: "outcome-" + String(hop.outcome || "").replace(/[^a-z_]/g, "") },
      AR.el("td", { class: "num", text: timeline.children.length + 1 }),
      AR.el("th", { scope: "row", text: hop.agent || "—" }),
      AR.el("td", {}, AR.el("code", { text: hop.message_type || "" })),
      AR.el("td", { class: "outcome", text: hop.outcome || "" }),
      AR.el("td", { class: "num", text: duration }),
      AR.el("td", {}, AR.time(hop.at))));
    document.getElementById("hop-count").textContent = String(timeline.children.length);
  }

  function finish(end) {
    finished = true;
    setState(end.state || "finished");
    document.getElementById("approval").hidden = true;
    const result = end.report !== undefined && end.report !== null ? end.report : end.failure;
    if (result !== undefined && result !== null) {
      document.getElementById("result-heading").textContent = end.report ? "Report" : "Failure";
      document.getElementById("result-body").textContent = JSON.stringify(result, null, 2);
      document.getElementById("result").hidden = false;
    }
  }

  async function snapshot() {
    try {
      const request = await AR.api(base);
      (request.hops || []).forEach(function (hop) { addHop(hop); });
      if (request.state && request.state !== "running") finish(request);
      else setState(request.state || "running");
    } catch (error) {
      AR.notice(error.status === 404 ? "No request " + cid + " is known." : String(error.message));
      if (error.status === 404) setState("unknown");
    }
  }

  function follow() {
    const source = new EventSource(base + "/events", { withCredentials: true });
    source.addEventListener("open", function () { if (!finished) setState("running"); });
    source.addEventListener("hop", function (message) {
      addHop(JSON.parse(message.data), message.lastEventId);
    });
    source.addEventListener("end", function (message) {
      source.close();
      finish(JSON.parse(message.data));
    });
    source.addEventListener("error", function () {
      // the stream was refused (401/404) or dropped for good: show what the API knows
      if (source.readyState === EventSource.CLOSED && !finished) snapshot();
    });
  }

  // waiting for a human? (the approvals list names this request)
  async function checkApproval() {
    if (finished) return;
    let waiting = false;
    try {
      waiting = AR.list(await AR.api("/v1/approvals"), "approvals")
        .some(function (a) { return a.correlation_id === cid; });
    } catch (error) {
      return;  // e.g. a token without the scope to list approvals
    }
    if (finished) return;
    document.getElementById("approval").hidden = !waiting;
    setState(waiting ? "waiting_approval" : "running");
  }

  follow();
  setInterval(checkApproval, 2000);
})();
