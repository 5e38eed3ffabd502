"use strict";
// The sign-in page: the admin key goes once in a JSON body (never in a URL); the balancer
// answers with a session cookie this script cannot read.

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = document.getElementById("key");
  const message = document.getElementById("login-message");
  const reply = await fetch("/api/login", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ key: key.value }),
  });
  if (reply.ok) {
    location.assign("/");
    return;
  }
  const body = await reply.json().catch(() => ({}));
  key.value = "";
  message.className = "error";
  message.textContent = body.error ? body.error.message : `Refused (${reply.status}).`;
});
