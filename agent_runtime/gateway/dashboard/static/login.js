// Log in without leaving the page on a wrong token: POST /login (the gateway sets the cookie
// and answers 303), then go where the user was going. Without JavaScript the form posts itself.
"use strict";

document.getElementById("login").addEventListener("submit", async function (event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = document.getElementById("login-error");
  const data = new URLSearchParams(new FormData(form));
  error.hidden = true;
  try {
    const response = await fetch("/login", { method: "POST", body: data, credentials: "same-origin", redirect: "follow" });
    const landed = new URL(response.url, location.href);
    const refused = landed.pathname === "/login" || landed.searchParams.get("login") === "failed";
    if (response.ok && !refused) {
      const next = form.elements.next.value;
      location.assign(/^\/(?![\/\\])/.test(next) ? next : "/");
      return;
    }
    error.textContent = refused || response.status === 401 || response.status === 403
      ? "That token was not accepted."
      : "Login failed (" + response.status + ").";
  } catch (e) {
    error.textContent = "The gateway did not answer: " + e.message;
  }
  error.hidden = false;
  form.elements.token.focus();
});
