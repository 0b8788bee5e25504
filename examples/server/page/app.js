// The key-settings page: talks to the management API at /api-keys with
// the admin key the user signs in with. Plain JS, no build step; every
// value from the API is written with textContent, never as HTML.
"use strict";

const API = "/api-keys";
const STORE = "keyward-admin-key";
const $ = (id) => document.getElementById(id);

const state = { token: null, catalog: null, cursor: null, keys: new Map(), editing: null };

class ApiError extends Error {
  constructor(status, error) {
    super(error && error.message ? error.message : `The server answered ${status}.`);
    this.status = status;
    this.code = error && error.code;
    this.field = error && error.field;
    this.permission = error && error.permission;
  }
}

async function api(method, path, body) {
  const headers = { "x-api-key": state.token };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch (e) {
    throw new ApiError(0, { message: "The server cannot be reached. Check your connection and try again." });
  }
  if (response.status === 204) return null;
  let json = null;
  try { json = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) throw new ApiError(response.status, json && json.error);
  return json;
}

// ---- messages ----

function describe(err) {
  let text = err.message;
  if (err.field) text += ` (field: ${err.field})`;
  if (err.permission) text += ` Missing permission: ${err.permission}.`;
  if (err.code) text += ` [${err.code}]`;
  return text;
}

function showError(err, box = $("error")) {
  box.textContent = describe(err);
  box.hidden = false;
  if (box.id === "error") {
    $("status").hidden = true;
    box.scrollIntoView({ block: "nearest" });
  }
}

function clearError(box = $("error")) {
  box.hidden = true;
  box.textContent = "";
}

function say(text) {
  clearError();
  const s = $("status");
  s.textContent = text;
  s.hidden = false;
}

// ---- sign in ----

async function signIn(token) {
  state.token = token;
  try {
    const [me, catalog] = await Promise.all([api("GET", "/me"), api("GET", "/catalog")]);
    state.catalog = catalog;
    sessionStorage.setItem(STORE, token);
    $("who-text").textContent = `Signed in as ${me.actor} · tenant ${me.tenant}`;
    $("who").hidden = false;
    $("sign-in").hidden = true;
    $("workspace").hidden = false;
    buildGrid($("create-grid"), "create", new Set());
    clearError();
    await loadKeys(true);
  } catch (err) {
    state.token = null;
    sessionStorage.removeItem(STORE);
    showError(err);
  }
}

function signOut() {
  state.token = null;
  sessionStorage.removeItem(STORE);
  $("key-rows").replaceChildren();
  hideToken();
  $("workspace").hidden = true;
  $("who").hidden = true;
  $("sign-in").hidden = false;
  $("admin-key").value = "";
  $("admin-key").focus();
  say("Signed out.");
}

// ---- the permission grid ----

function permissions() {
  const all = [];
  for (const r of state.catalog.resources) for (const p of r.permissions) all.push(p);
  return all;
}

function buildGrid(container, prefix, selected) {
  const resources = state.catalog.resources;
  const width = Math.max(...resources.map((r) => r.permissions.length), 1);
  container.style.setProperty("--actions", width);
  container.replaceChildren();
  for (const resource of resources) {
    const name = document.createElement("span");
    name.className = "res";
    name.textContent = resource.name;
    container.append(name);
    for (let i = 0; i < width; i++) {
      const p = resource.permissions[i];
      if (!p) { container.append(document.createElement("span")); continue; }
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.dataset.permission = p.name;
      box.id = `${prefix}-${p.name.replace(/[^a-z0-9_]/gi, "-")}`;
      box.checked = selected.has(p.name);
      box.addEventListener("change", () => applyImplied(container));
      const text = document.createElement("span");
      text.textContent = p.action;
      const note = document.createElement("span");
      note.className = "implied";
      label.append(box, text, note);
      container.append(label);
    }
  }
  applyImplied(container);
}

// A permission implied by a checked one is checked and locked, with a
// note saying which one includes it.
function applyImplied(container) {
  const boxes = [...container.querySelectorAll("input[data-permission]")];
  const byName = new Map(boxes.map((b) => [b.dataset.permission, b]));
  const impliedBy = new Map();
  for (const p of permissions()) {
    const box = byName.get(p.name);
    if (box && box.checked && !box.disabled) for (const i of p.implies) impliedBy.set(i, p.name);
  }
  for (const box of boxes) {
    const by = impliedBy.get(box.dataset.permission);
    const note = box.parentElement.querySelector(".implied");
    if (by) {
      box.checked = true;
      box.disabled = true;
      note.textContent = `(included in ${by.split(":")[1]})`;
    } else {
      if (box.disabled) box.checked = false;
      box.disabled = false;
      note.textContent = "";
    }
  }
}

function chosen(container) {
  return [...container.querySelectorAll("input[data-permission]:checked")].map((b) => b.dataset.permission);
}

// ---- the list ----

function when(iso, never = "—") {
  if (!iso) return never;
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function cell(label, content, className) {
  const td = document.createElement("td");
  td.dataset.label = label;
  if (className) td.className = className;
  if (content instanceof Node) td.append(content); else td.textContent = content;
  return td;
}

function button(text, action, key, className = "small") {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  b.dataset.action = action;
  b.setAttribute("aria-label", `${text} ${key.name} (${key.prefix})`);
  b.addEventListener("click", () => act(action, key.id));
  return b;
}

function row(key) {
  const tr = document.createElement("tr");
  tr.dataset.keyId = key.id;
  tr.dataset.status = key.status;
  const prefix = document.createElement("code");
  prefix.textContent = key.prefix + "…";
  const badge = document.createElement("span");
  badge.className = `badge ${key.status}`;
  badge.textContent = key.status;
  const perms = document.createElement("div");
  perms.className = "perms";
  for (const p of key.permissions) {
    const chip = document.createElement("span");
    chip.className = "perm";
    chip.textContent = p;
    perms.append(chip);
  }
  if (!key.permissions.length) perms.textContent = "none";
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = key.name;
  const named = document.createElement("div");
  named.append(name);
  if (key.allowed_ips) {
    const ips = document.createElement("div");
    ips.className = "ips";
    ips.textContent = `Only from ${key.allowed_ips.join(", ")}`;
    named.append(ips);
  }
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(button("Edit", "edit", key));
  if (key.status === "active") actions.append(button("Revoke", "revoke", key), button("Roll", "roll", key));
  if (key.status === "revoked" && !key.rolled_to) actions.append(button("Reactivate", "reactivate", key));
  actions.append(button("Delete", "delete", key));
  tr.append(
    cell("Key", prefix),
    cell("Name", named),
    cell("Status", badge),
    cell("Permissions", perms),
    cell("Created", when(key.created_at)),
    cell("Expires", when(key.expires_at, "Never")),
    cell("Last used", when(key.last_used_at, "Never")),
    cell("", actions, "actions-cell"),
  );
  return tr;
}

async function loadKeys(fresh) {
  const params = new URLSearchParams({ limit: "20" });
  const name = $("filter-name").value.trim();
  const status = $("filter-status").value;
  if (name) params.set("name", name);
  if (status) params.set("status", status);
  if (!fresh && state.cursor) params.set("cursor", state.cursor);
  try {
    const page = await api("GET", "?" + params);
    if (fresh) { $("key-rows").replaceChildren(); state.keys.clear(); }
    for (const key of page.data) {
      state.keys.set(key.id, key);
      $("key-rows").append(row(key));
    }
    state.cursor = page.next_cursor;
    $("more").hidden = !page.next_cursor;
    $("empty").hidden = state.keys.size > 0;
  } catch (err) {
    showError(err);
  }
}

function replaceRow(key) {
  state.keys.set(key.id, key);
  const old = $("key-rows").querySelector(`tr[data-key-id="${CSS.escape(key.id)}"]`);
  if (old) old.replaceWith(row(key)); else $("key-rows").prepend(row(key));
}

// ---- actions ----

async function act(action, id) {
  const key = state.keys.get(id);
  if (!key) return;
  clearError();
  try {
    if (action === "revoke") {
      replaceRow(await api("POST", `/${id}/revoke`));
      say(`Revoked ${key.name}. It stops working at once; you can reactivate it.`);
    } else if (action === "reactivate") {
      replaceRow(await api("POST", `/${id}/reactivate`));
      say(`Reactivated ${key.name}.`);
    } else if (action === "edit") {
      openEdit(key);
    } else if (action === "roll") {
      state.editing = key;
      $("roll-key").textContent = `${key.name} (${key.prefix}…)`;
      clearError($("roll-error"));
      $("roll-dialog").showModal();
    } else if (action === "delete") {
      state.editing = key;
      $("delete-key").textContent = `${key.name} (${key.prefix}…)`;
      clearError($("delete-error"));
      $("delete-dialog").showModal();
    }
  } catch (err) {
    showError(err);
  }
}

function openEdit(key) {
  state.editing = key;
  $("edit-name").value = key.name;
  buildGrid($("edit-grid"), "edit", new Set(key.permissions));
  clearError($("edit-error"));
  $("edit-dialog").showModal();
}

function showToken(token, what) {
  $("new-token").value = token;
  $("token-title").textContent = what;
  $("copy-result").textContent = "";
  $("token-panel").hidden = false;
  $("token-panel").focus();
  $("token-panel").scrollIntoView({ block: "start" });
}

function hideToken() {
  $("new-token").value = "";
  $("token-panel").hidden = true;
}

async function copyToken() {
  const input = $("new-token");
  try {
    await navigator.clipboard.writeText(input.value);
    $("copy-result").textContent = "Copied to the clipboard.";
  } catch (e) {
    input.select();
    $("copy-result").textContent = "Selected: press Ctrl+C (⌘C on a Mac) to copy.";
  }
}

// ---- wiring ----

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("admin-key").value.trim();
    if (token) signIn(token);
  });
  $("sign-out").addEventListener("click", signOut);
  $("copy-token").addEventListener("click", copyToken);
  $("token-done").addEventListener("click", () => { hideToken(); $("create-name").focus(); });

  for (const radio of document.querySelectorAll("input[name=expiry]")) {
    radio.addEventListener("change", () => {
      $("create-expires").disabled = document.querySelector("input[name=expiry]:checked").value !== "date";
    });
  }

  $("create-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    clearError();
    const body = { name: $("create-name").value.trim(), permissions: chosen($("create-grid")) };
    const expiry = document.querySelector("input[name=expiry]:checked").value;
    if (expiry === "hour") body.expires_in_seconds = 3600;
    if (expiry === "date") {
      const value = $("create-expires").value;
      const at = new Date(value);
      if (!value || Number.isNaN(at.getTime())) {
        showError(new ApiError(0, { message: "Choose the date and time the key expires.", field: "expires_at" }));
        return;
      }
      body.expires_at = at.toISOString();
    }
    const ips = $("create-ips").value.split(/[\s,]+/).filter(Boolean);
    if (ips.length) body.allowed_ips = ips;
    try {
      const created = await api("POST", "", body);
      showToken(created.token, `Your new API key: ${created.key.name}`);
      replaceRow(created.key);
      $("empty").hidden = true;
      $("create-form").reset();
      $("create-expires").disabled = true;
      buildGrid($("create-grid"), "create", new Set());
    } catch (err) {
      showError(err);
    }
  });

  $("filter-form").addEventListener("submit", (e) => { e.preventDefault(); loadKeys(true); });
  $("filter-status").addEventListener("change", () => loadKeys(true));
  let typing;
  $("filter-name").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => loadKeys(true), 250); });
  $("more").addEventListener("click", () => loadKeys(false));

  for (const close of document.querySelectorAll("[data-close]")) {
    close.addEventListener("click", () => close.closest("dialog").close());
  }

  $("edit-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = state.editing;
    try {
      const changed = await api("PATCH", `/${key.id}`, { name: $("edit-name").value.trim(), permissions: chosen($("edit-grid")) });
      replaceRow(changed);
      $("edit-dialog").close();
      say(`Saved ${changed.name}.`);
    } catch (err) {
      showError(err, $("edit-error"));
    }
  });

  $("roll-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = state.editing;
    const grace = Number($("roll-grace").value);
    try {
      const rolled = await api("POST", `/${key.id}/roll`, { grace_seconds: grace });
      $("roll-dialog").close();
      await loadKeys(true);
      showToken(rolled.token, `The new key replacing ${key.name}`);
    } catch (err) {
      showError(err, $("roll-error"));
    }
  });

  $("delete-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = state.editing;
    try {
      await api("DELETE", `/${key.id}`);
      $("delete-dialog").close();
      state.keys.delete(key.id);
      const tr = $("key-rows").querySelector(`tr[data-key-id="${CSS.escape(key.id)}"]`);
      if (tr) tr.remove();
      $("empty").hidden = state.keys.size > 0;
      say(`Deleted ${key.name}.`);
    } catch (err) {
      showError(err, $("delete-error"));
    }
  });

  const saved = sessionStorage.getItem(STORE);
  if (saved) signIn(saved); else $("admin-key").focus();
});
