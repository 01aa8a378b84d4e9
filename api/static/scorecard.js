// The scorecard page: polls /api/v1/scorecard and /api/v1/alerts, listens on /api/v1/stream.
// With an IdP (api.auth.oidc) it signs in first (signin.js) and sends the token with every request.
"use strict";

const $ = (sel) => document.querySelector(sel);
let current = { facility: null, department: null, unit: null };
let placesLoaded = false;
let view = ""; // the saved view shown ("" = every KPI); the page opens on the caller's landing view
let token = null; // the access token (null in local mode: no credentials needed)

// fetch with the token; a refused token (expired) is renewed once (signin.js: refresh token, else
// sign in again) and the request sent again. Requests refused together share one renewal.
let renewing = null;
async function api(path, init = {}) {
  const send = () => {
    const headers = { ...(init.headers || {}) };
    if (token) headers.Authorization = `Bearer ${token}`;
    return fetch(path, { ...init, headers });
  };
  const response = await send();
  if (response.status !== 401 || !token) return response;
  renewing = renewing || window.carescoreSignIn.renew().finally(() => { renewing = null; });
  token = await renewing;
  return send();
}

function fmt(value, unit) {
  if (value === null || value === undefined) return "—";
  const digits = Math.abs(value) >= 100 ? 0 : 1;
  return `${value.toFixed(digits)}${unit === "%" ? "%" : " " + unit}`;
}

const { el } = window.carescoreDom;

function fillPlaces(places) {
  const select = $("#group");
  select.innerHTML = "";
  for (const f of places) {
    select.append(el("option", { value: JSON.stringify([f.facility, null, null]) }, f.name || f.facility));
    for (const d of f.departments) {
      select.append(el("option", { value: JSON.stringify([f.facility, d.id, null]) }, `— ${d.name || d.id}`));
      for (const u of d.units) {
        select.append(el("option", { value: JSON.stringify([f.facility, d.id, u.id]) }, `—— ${u.name || u.id}`));
      }
    }
  }
  select.addEventListener("change", () => {
    const [facility, department, unit] = JSON.parse(select.value);
    current = { facility, department, unit };
    refresh();
  });
  placesLoaded = true;
}

function shown(k) {
  // an unbounded ratio (patients and no nurse on shift) has no value: show its parts
  if (k.value === null && k.denominator === 0 && k.numerator) return `${k.numerator} : 0 ${k.unit}`;
  return fmt(k.value, k.unit);
}

function renderScorecard(card) {
  if (!placesLoaded && card.places.length) fillPlaces(card.places);
  const root = $("#perspectives");
  root.innerHTML = "";
  for (const p of card.perspectives) {
    const box = el("section", { class: `perspective ${p.status}`, "data-perspective": p.id }, el("h2", {}, p.title));
    for (const k of p.kpis) {
      const meta = [`target ${fmt(k.target, k.unit)}`];
      if (k.benchmark && k.benchmark.value !== null) meta.push(`benchmark ${fmt(k.benchmark.value, k.unit)}`);
      meta.push(`n=${k.n}`);
      const history = el("button", { class: "history", type: "button", "aria-label": `History of ${k.name}` }, "History");
      history.addEventListener("click", () => window.carescorePanel.open(k, current, window.carescorePeriod.month(), api));
      box.append(
        el("div", { class: "kpi", "data-kpi": k.id },
          el("span", { class: "name" }, k.name, " ", el("span", { class: `status ${k.status}` }, k.status.replace("_", " "))),
          el("span", { class: "value", "aria-label": `${k.name}: ${shown(k)}` }, shown(k)),
          el("span", { class: "meta" }, meta.join(" · "), " ", history))
      );
    }
    root.append(box);
  }
  $("#asof").textContent = `as of ${new Date(card.as_of).toLocaleTimeString()}`;
}

// Firing alerts nobody has acknowledged are the list to act on; acknowledged ones fold away.
function renderAlerts(alerts) {
  const list = $("#alert-list"), acked = $("#acked-list");
  list.innerHTML = "";
  acked.innerHTML = "";
  const open = alerts.filter((a) => !a.acked_by);
  if (!open.length) list.append(el("li", { class: "empty" }, "none"));
  for (const a of open) {
    const button = el("button", { class: "ack", type: "button", "aria-label": `Acknowledge: ${a.summary}` }, "Acknowledge");
    button.addEventListener("click", () => acknowledge(a.id));
    const act = el("button", { class: "act", type: "button", "aria-label": `Create action: ${a.summary}` }, "Create action");
    act.addEventListener("click", () => window.carescoreActions.create({ alert_id: a.id, summary: a.summary }, api));
    list.append(el("li", { "data-alert": a.id }, el("span", { class: `status ${a.severity}` }, a.severity), a.summary, button, act));
  }
  for (const a of alerts.filter((x) => x.acked_by)) {
    acked.append(el("li", { "data-alert": a.id }, el("span", { class: `status ${a.severity}` }, a.severity), a.summary,
      el("span", { class: "acked" }, `acknowledged by ${a.acked_by}`)));
  }
  $("#acked-count").textContent = String(alerts.length - open.length);
}

// A message the user must see (a refused acknowledgement): the alert region reads it out.
function notify(text) {
  const notice = $("#notice");
  notice.textContent = text;
  notice.hidden = !text;
}

async function acknowledge(id) {
  // who acknowledges is the signed-in caller (the API takes it from the credentials, not the body)
  const note = window.prompt("Acknowledge this alert. Note (optional):", "");
  if (note === null) return;
  const res = await api(`/api/v1/alerts/${id}/ack`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(note ? { note } : {}),
  });
  if (res.ok) notify("");
  else {
    const p = await res.json().catch(() => ({}));
    notify(`Not acknowledged (${res.status} ${p.title || ""}): ${p.detail || "refused"}`);
  }
  refresh();
}

// An answer's JSON, or an Error saying why not (403: the signed-in user has no role for it).
async function json(response) {
  if (response.ok) return response.json();
  const problem = await response.json().catch(() => ({}));
  throw new Error(`${response.status} ${problem.title || ""} ${problem.detail || ""}`.trim());
}

// Each refresh replaces the KPI and alert buttons: the one that had the keyboard focus gets it
// back, so a keyboard user is not thrown to the top of the page every 5 s.
function focusedButton() {
  const active = document.activeElement;
  const host = active && active.tagName === "BUTTON" ? active.closest("[data-kpi], [data-alert]") : null;
  if (!host) return null;
  const [attr, value] = host.dataset.kpi ? ["data-kpi", host.dataset.kpi] : ["data-alert", host.dataset.alert];
  return `[${attr}="${CSS.escape(value)}"] button.${CSS.escape(active.classList[0])}`;
}

async function refresh() {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(current)) if (v) q.set(k, v);
  if (view) q.set("view", view);
  window.carescorePeriod.links(current);
  window.carescoreStrategy.show(current, api);
  window.carescoreActions.refresh(api);
  window.carescorePeriod.compliance(api);
  try {
    const [card, alerts] = await Promise.all([
      api(`/api/v1/scorecard?${q}`).then(json),
      api("/api/v1/alerts?state=firing").then(json),
    ]);
    const focused = focusedButton();
    renderScorecard(card);
    renderAlerts(alerts.alerts);
    if (focused) document.querySelector(focused)?.focus();
  } catch (err) {
    $("#asof").textContent = `cannot show the scorecard: ${err.message || err}`;
  }
}

// The saved views (/api/v1/views) in the View picker, opened on the caller's landing view.
async function loadViews() {
  const res = await api("/api/v1/views");
  if (!res.ok) return;
  const body = await res.json();
  const select = $("#view");
  for (const v of body.views) select.append(el("option", { value: v.id, title: v.description || "" }, v.name));
  view = body.landing || "";
  select.value = view;
}

$("#view").addEventListener("change", () => {
  view = $("#view").value;
  $("#landing").textContent = "Make this my landing view";
  refresh();
});
$("#landing").addEventListener("click", async () => {
  if (!view) { notify("Choose a view first: the landing view is one of the saved views."); return; }
  const res = await api(`/api/v1/views/${encodeURIComponent(view)}/landing`, { method: "PUT" });
  if (res.ok) notify("");
  else {
    const p = await res.json().catch(() => ({}));
    notify(`Landing view not saved (${res.status} ${p.title || ""}): ${p.detail || "refused"}`);
  }
  $("#landing").textContent = res.ok ? "Landing view saved" : "Make this my landing view";
});
$("#month").addEventListener("change", () => refresh());

$("#history-close").addEventListener("click", () => window.carescoreHistory.close());

window.carescoreSignIn.start().then(
  (signedIn) => {
    token = signedIn;
    loadViews().finally(refresh);
    setInterval(refresh, 5000);
    if (window.EventSource && !token) { // EventSource sends no Authorization: signed in, the page polls
      const source = new EventSource("/api/v1/stream");
      source.addEventListener("alert", () => refresh());
    }
  },
  (err) => { $("#asof").textContent = `cannot sign in: ${err.message || err}`; },
);
