// The approvals queue (/v1/approvals), one row per waiting step, with approve/reject buttons
// (POST /v1/requests/CID/approvals). Refreshed every 2 s and on fleet events.
"use strict";

(function () {
  const tbody = document.querySelector("#approvals tbody");
  const form = document.getElementById("decider");
  const approver = form.elements.approver;
  approver.value = localStorage.getItem("agent_runtime_approver") || "";

  function steps(request) {
    const list = request.steps || request.waiting || [];
    if (Array.isArray(list)) return list;
    return Object.entries(list).map(function (e) { return Object.assign({ id: e[0] }, e[1]); });
  }

  async function decide(cid, stepId, approve, button) {
    const name = approver.value.trim();
    localStorage.setItem("agent_runtime_approver", name);
    const decision = { approve: approve, steps: stepId ? [stepId] : [], reason: form.elements.reason.value };
    if (name) decision.approver = name;  // else the gateway records the token's name
    button.disabled = true;
    try {
      await AR.api("/v1/requests/" + encodeURIComponent(cid) + "/approvals", { json: decision });
      AR.notice((approve ? "Approved" : "Rejected") + " step " + stepId + " of request " + AR.short(cid) + ".", "ok");
      await refresh();
    } catch (error) {
      AR.notice("Decision not recorded: " + error.message);
      button.disabled = false;
    }
  }

  function row(request, step) {
    const cid = request.correlation_id;
    const id = step.id || step.step_id || "";
    const detail = step.step && typeof step.step === "object" ? step.step : step;
    const what = (detail.tool || "") + " " + JSON.stringify(detail.args || {});
    const label = " step " + id + " of request " + AR.short(cid);
    const approve = AR.el("button", { type: "button", class: "approve", "aria-label": "Approve" + label, text: "Approve" });
    const reject = AR.el("button", { type: "button", class: "reject", "aria-label": "Reject" + label, text: "Reject" });
    approve.addEventListener("click", function () { decide(cid, id, true, approve); });
    reject.addEventListener("click", function () { decide(cid, id, false, reject); });
    return AR.el("tr", { "data-cid": cid, "data-step": id },
      AR.el("th", { scope: "row" }, AR.requestLink(cid)),
      AR.el("td", { text: id }),
      AR.el("td", {}, AR.el("code", { text: what })),
      AR.el("td", { text: detail.risk || "—" }),
      AR.el("td", {}, AR.time(step.expires_at)),
      AR.el("td", { class: "actions" }, approve, " ", reject));
  }

  const refresh = AR.poll(async function () {
    const requests = AR.list(await AR.api("/v1/approvals"), "approvals");
    const makeRows = function () {
      const rows = [];
      requests.forEach(function (request) {
        const list = steps(request);
        if (!list.length) rows.push(row(request, {}));
        list.forEach(function (step) { rows.push(row(request, step)); });
      });
      return rows;
    };
    AR.update(tbody, requests, makeRows);
    document.getElementById("approvals-empty").hidden = requests.length > 0;
  }, 2000);
  AR.fleetEvents(function () { refresh(); });
})();
