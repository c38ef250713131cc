// Shared helpers of the dashboard pages (no framework, no build step). Every value from the
// API reaches the page through textContent or attributes, never innerHTML.
"use strict";

(function () {
  const AR = {};

  AR.loginUrl = function () {
    return "/login?next=" + encodeURIComponent(location.pathname + location.search);
  };

  // fetch a /v1 URL with the session cookie; JSON in and out; 401 -> the login page.
  AR.api = async function (path, options) {
    const opts = Object.assign({ credentials: "same-origin" }, options || {});
    opts.headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
    if (opts.json !== undefined) {
      opts.method = opts.method || "POST";
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(opts.json);
      delete opts.json;
    }
    const response = await fetch(path, opts);
    if (response.status === 401) {
      location.assign(AR.loginUrl());
      throw new Error("not logged in");
    }
    const type = response.headers.get("Content-Type") || "";
    const body = type.includes("json") ? await response.json() : await response.text();
    if (!response.ok) {
      const detail = (body && (body.detail || body.title)) || response.statusText;
      const error = new Error(response.status + " " + (typeof detail === "string" ? detail : JSON.stringify(detail)));
      error.status = response.status;
      error.retryAfter = Number(response.headers.get("Retry-After")) || 0;
      throw error;
    }
    return body;
  };

  // el("td", {class: "num"}, "text", childNode, ...)
  AR.el = function (tag, attrs) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of Array.prototype.slice.call(arguments, 2)) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  };

  // One notice line per page (role=alert). `source` "poll" marks a refresh error, which the
  // next successful refresh clears; other notices stay until replaced.
  AR.notice = function (message, kind, source) {
    const box = document.getElementById("notice");
    if (!box) return;
    box.textContent = message || "";
    box.className = "notice " + (kind || "error");
    box.dataset.source = source || "";
    box.hidden = !message;
  };

  AR.clearPollNotice = function () {
    const box = document.getElementById("notice");
    if (box && box.dataset.source === "poll") AR.notice("");
  };

  AR.list = function (body, key) {
    if (Array.isArray(body)) return body;
    if (body && Array.isArray(body[key])) return body[key];
    if (body && Array.isArray(body.items)) return body.items;
    return [];
  };

  AR.toDate = function (value) {
    if (value === null || value === undefined || value === "") return null;
    const date = typeof value === "number" ? new Date(value < 1e12 ? value * 1000 : value) : new Date(value);
    return isNaN(date.getTime()) ? null : date;
  };

  AR.time = function (value) {
    const date = AR.toDate(value);
    if (!date) return AR.el("span", { text: "—" });
    return AR.el("time", { datetime: date.toISOString(), title: date.toISOString(), text: date.toLocaleTimeString() });
  };

  AR.seconds = function (value) {
    if (value === null || value === undefined || value === "") return "—";
    const s = Number(value);
    if (!isFinite(s)) return "—";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 120) return s.toFixed(1) + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  };

  AR.number = function (value, digits) {
    if (value === null || value === undefined || value === "") return "—";
    const n = Number(value);
    return isFinite(n) ? n.toFixed(digits || 0) : String(value);
  };

  AR.short = function (cid) {
    return String(cid || "").slice(0, 8);
  };

  AR.stateBadge = function (state) {
    const name = String(state || "unknown");
    return AR.el("span", { class: "state state-" + name.replace(/[^a-z_]/g, ""), text: name });
  };

  AR.requestLink = function (cid) {
    return AR.el("a", { href: "/requests/" + encodeURIComponent(cid), title: cid }, AR.el("code", { text: AR.short(cid) }));
  };

  // Run fn now and every `ms` while the page is visible (a hidden tab spends none of the
  // token's rate limit); an error shows until the next success; a 429 waits its Retry-After.
  AR.poll = function (fn, ms) {
    let timer = null;
    const run = async function () {
      clearTimeout(timer);
      let wait = ms;
      if (!document.hidden) {
        try {
          await fn();
          AR.clearPollNotice();
        } catch (error) {
          if (error.status !== undefined || error instanceof TypeError) AR.notice(String(error.message || error), "error", "poll");
          if (error.retryAfter) wait = Math.max(ms, error.retryAfter * 1000);
        }
      }
      timer = setTimeout(run, wait);
    };
    document.addEventListener("visibilitychange", function () { if (!document.hidden) run(); });
    run();
    return run;  // call it to refresh at once
  };

  // The fleet event WebSocket (/v1/events, authenticated by the same cookie): onEvent(obj).
  AR.fleetEvents = function (onEvent, onState) {
    let delay = 500;
    const connect = function () {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      let socket;
      try {
        socket = new WebSocket(scheme + location.host + "/v1/events");
      } catch (error) {
        if (onState) onState("polling");
        return;
      }
      socket.addEventListener("open", function () { delay = 500; if (onState) onState("live"); });
      socket.addEventListener("message", function (message) {
        try { onEvent(JSON.parse(message.data)); } catch (error) { /* not JSON: ignore */ }
      });
      socket.addEventListener("close", function () {
        if (onState) onState("reconnecting…");
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10000);
      });
    };
    connect();
  };

  // Replace a table body's rows only when the data changed: keyboard focus and the reader's
  // place survive the periodic refresh.
  AR.update = function (tbody, data, makeRows) {
    const signature = JSON.stringify(data);
    if (tbody.dataset.signature === signature) return false;
    tbody.dataset.signature = signature;
    tbody.replaceChildren.apply(tbody, makeRows());
    return true;
  };

  // The shared recent-requests table (overview and requests pages).
  AR.renderRequests = function (tbody, body) {
    const list = AR.list(body, "requests");
    AR.update(tbody, list, function () { return list.map(function (r) {
      const started = r.published_at || r.started_at || r.at;
      return AR.el("tr", { "data-cid": r.correlation_id },
        AR.el("th", { scope: "row" }, AR.requestLink(r.correlation_id)),
        AR.el("td", {}, AR.stateBadge(r.state)),
        AR.el("td", {}, AR.time(started)),
        AR.el("td", {}, AR.el("code", { text: r.message_type || "" })),
        AR.el("td", { class: "text", text: r.text || r.summary || "" }));
    }); });
  };

  window.AR = AR;
})();
