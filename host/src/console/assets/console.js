// wxpay console: the WebAuthn ceremonies and live refresh. Plain script,
// no build step; every page works without it except the passkey buttons.
"use strict";

const b64url = {
  encode(buffer) {
    const bytes = new Uint8Array(buffer);
    let text = "";
    for (const byte of bytes) text += String.fromCharCode(byte);
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  },
  decode(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0)).buffer;
  },
};

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function showError(message) {
  const box = document.getElementById("ceremony-error");
  if (box) box.textContent = message;
}

async function postJson(url, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: JSON.stringify(body),
  });
  const reply = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(reply.error || response.statusText);
  return reply;
}

function creationOptions(options) {
  const o = options.publicKey;
  o.challenge = b64url.decode(o.challenge);
  o.user.id = b64url.decode(o.user.id);
  for (const c of o.excludeCredentials || []) c.id = b64url.decode(c.id);
  return o;
}

function requestOptions(options) {
  const o = options.publicKey;
  o.challenge = b64url.decode(o.challenge);
  for (const c of o.allowCredentials || []) c.id = b64url.decode(c.id);
  return o;
}

function registrationJson(credential) {
  return {
    id: credential.id,
    rawId: b64url.encode(credential.rawId),
    type: credential.type,
    response: {
      attestationObject: b64url.encode(credential.response.attestationObject),
      clientDataJSON: b64url.encode(credential.response.clientDataJSON),
    },
    extensions: {},
  };
}

function assertionJson(credential) {
  const r = credential.response;
  return {
    id: credential.id,
    rawId: b64url.encode(credential.rawId),
    type: credential.type,
    response: {
      authenticatorData: b64url.encode(r.authenticatorData),
      clientDataJSON: b64url.encode(r.clientDataJSON),
      signature: b64url.encode(r.signature),
      userHandle: r.userHandle ? b64url.encode(r.userHandle) : null,
    },
    extensions: {},
  };
}

async function register(event) {
  event.preventDefault();
  showError("");
  try {
    const invite = location.hash.slice(1);
    if (!invite) throw new Error("this link has no invite in it; ask for a new one");
    const start = await postJson("/console/api/register/start", { invite });
    const credential = await navigator.credentials.create({ publicKey: creationOptions(start.options) });
    const done = await postJson("/console/api/register/finish", {
      ceremony: start.ceremony,
      credential: registrationJson(credential),
    });
    history.replaceState(null, "", location.pathname);
    location.assign(done.next);
  } catch (e) {
    showError(e.message);
  }
}

async function signIn(event) {
  event.preventDefault();
  showError("");
  try {
    const operator = new FormData(event.target).get("operator");
    const start = await postJson("/console/api/sign-in/start", { operator });
    const credential = await navigator.credentials.get({ publicKey: requestOptions(start.options) });
    const done = await postJson("/console/api/sign-in/finish", {
      ceremony: start.ceremony,
      credential: assertionJson(credential),
    });
    location.assign(done.next);
  } catch (e) {
    showError(e.message);
  }
}

// Shows what is about to be approved and resolves true on "Approve".
function confirmApproval(context) {
  return new Promise((resolve) => {
    const dialog = document.createElement("dialog");
    dialog.id = "passkey-dialog";
    dialog.setAttribute("aria-labelledby", "passkey-dialog-title");
    const title = document.createElement("h2");
    title.id = "passkey-dialog-title";
    title.textContent = "Approve with your passkey";
    const what = document.createElement("p");
    what.className = "ceremony-context";
    what.textContent =
      `Approve ${context.kind} ${context.subject} of ${context.amount} ` +
      `(${context.amount_fen} fen) asked by agent ${context.agent_id}?`;
    const approve = document.createElement("button");
    approve.textContent = `Approve ${context.amount}`;
    approve.className = "confirm";
    const cancel = document.createElement("button");
    cancel.textContent = "Cancel";
    const finish = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    approve.addEventListener("click", () => finish(true));
    cancel.addEventListener("click", () => finish(false));
    dialog.addEventListener("cancel", () => finish(false));
    dialog.append(title, what, approve, cancel);
    document.body.append(dialog);
    dialog.showModal();
    approve.focus();
  });
}

async function approveWithPasskey(button) {
  showError("");
  const id = button.dataset.approval;
  try {
    const start = await postJson(`/console/api/approvals/${id}/passkey/start`, {});
    if (!(await confirmApproval(start.context))) return;
    const credential = await navigator.credentials.get({ publicKey: requestOptions(start.options) });
    const done = await postJson(`/console/api/approvals/${id}/passkey/finish`, {
      ceremony: start.ceremony,
      credential: assertionJson(credential),
    });
    const message = `Approval ${done.approval_id} approved with a passkey: ${done.subject} sent.`;
    location.assign(`/console/approvals?done=${encodeURIComponent(message)}`);
  } catch (e) {
    showError(e.message);
  }
}

function isEditing(main) {
  const active = document.activeElement;
  return active && main.contains(active) && active.matches("input, select, textarea") && active.value;
}

// A refresh that had to wait: the operator was typing or deciding.
let deferred = null;

async function refresh(main, seq) {
  if (isEditing(main) || document.querySelector("dialog[open]")) {
    deferred = seq;
    return;
  }
  deferred = null;
  const response = await fetch(location.href, { credentials: "same-origin" });
  if (!response.ok) return;
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const fresh = page.getElementById("main");
  if (!fresh) return;
  main.innerHTML = fresh.innerHTML;
  document.body.dataset.liveSeq = seq;
  const status = document.getElementById("live-status");
  if (status) status.textContent = `Updated at ${new Date().toLocaleTimeString()}`;
}

function live() {
  const main = document.getElementById("main");
  if (!main || !main.dataset.live || !window.EventSource) return;
  const source = new EventSource(main.dataset.live);
  source.addEventListener("open", () => {
    document.body.dataset.live = "connected";
  });
  source.addEventListener("change", (event) => {
    refresh(main, event.data).catch(() => {});
  });
  main.addEventListener("focusout", () => {
    setTimeout(() => {
      if (deferred !== null) refresh(main, deferred).catch(() => {});
    }, 0);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("register")?.addEventListener("submit", register);
  document.getElementById("sign-in")?.addEventListener("submit", signIn);
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.approve-passkey");
    if (button) approveWithPasskey(button);
  });
  live();
});
