// Action plans on the page (issue 16): "Create action" from an alert or from a KPI's history
// dialog (POST /api/v1/actions; from an alert the API takes the alert's KPI and place), and
// the list of actions still to finish (open, in progress; overdue ones marked) whose status is
// changed with PATCH. Who creates or changes is the signed-in caller, never the form.
"use strict";

(function (global) {
  const doc = global.document;
  const state = { about: null, api: null, shown: "", onChange: null };
  const NEXT = { open: ["open", "in_progress", "done", "cancelled"], in_progress: ["in_progress", "open", "done", "cancelled"] };

  const { el } = global.carescoreDom;

  // about: {alert_id, summary} or {kpi, name, facility, department, unit}
  function create(about, api) {
    state.about = about;
    state.api = api;
    const form = doc.getElementById("action-form");
    form.reset();
    doc.getElementById("action-note").textContent = "";
    const where = [about.unit, about.department, about.facility].find((x) => x) || "";
    doc.getElementById("action-about").textContent = about.alert_id ? `From the alert: ${about.summary}` : `For ${about.name}${where ? " at " + where : ""}`;
    doc.getElementById("action-dialog").showModal();
    form.elements.title.focus();
  }

  async function submit(event) {
    event.preventDefault();
    const form = event.target, about = state.about;
    const body = { title: form.elements.title.value, owner: form.elements.owner.value, due: form.elements.due.value };
    if (about.alert_id) body.alert_id = about.alert_id;
    else for (const k of ["kpi", "facility", "department", "unit"]) if (about[k]) body[k] = about[k];
    const res = await state.api("/api/v1/actions", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!res.ok) {
      const p = await res.json().catch(() => ({}));
      doc.getElementById("action-note").textContent = `Not created (${res.status}): ${p.detail || p.title || "refused"}`;
      return;
    }
    doc.getElementById("action-dialog").close();
    if (state.onChange) state.onChange();
    refresh(state.api);
  }

  // late from the day after `due` (a date) or from `due` (a date-time), as the API's overdue alert
  function overdue(a) {
    const due = /^\d{4}-\d{2}-\d{2}$/.test(a.due) ? Date.parse(`${a.due}T23:59:59.999`) : Date.parse(a.due);
    return Number.isFinite(due) && due < Date.now();
  }

  async function setStatus(a, status, api) {
    const res = await api(`/api/v1/actions/${encodeURIComponent(a.id)}`, {
      method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ status }),
    });
    if (!res.ok) {
      const p = await res.json().catch(() => ({}));
      global.alert(`Status not changed (${res.status}): ${p.detail || p.title || "refused"}`);
    }
    if (state.onChange) state.onChange();
    refresh(api);
  }

  // Redrawn only when the list changed: a 5 s refresh does not take the keyboard focus away.
  async function refresh(api) {
    state.api = api;
    const res = await api("/api/v1/actions");
    if (!res.ok) return;
    const open = (await res.json()).actions.filter((a) => a.status in NEXT);
    const key = JSON.stringify(open.map((a) => [a.id, a.status, a.title, a.due, overdue(a)]));
    if (key === state.shown) return;
    state.shown = key;
    const list = doc.getElementById("action-list");
    list.replaceChildren();
    if (!open.length) list.append(el("li", { class: "empty" }, "none"));
    for (const a of open) {
      const status = el("select", { class: "action-status", "aria-label": `Status of ${a.title}` },
        ...NEXT[a.status].map((s) => el("option", { value: s }, s.replace("_", " "))));
      status.addEventListener("change", () => setStatus(a, status.value, api));
      const where = [a.unit, a.department, a.facility].find((x) => x) || "";
      const item = el("li", { "data-action": a.id, class: overdue(a) ? "overdue" : "" },
        el("span", { class: "title" }, a.title),
        el("span", { class: "meta" }, `${a.kpi} at ${where} · owner ${a.owner} · due ${a.due}`),
        status);
      if (overdue(a)) item.prepend(el("span", { class: "status critical" }, "overdue"));
      list.append(item);
    }
  }

  doc.getElementById("action-form").addEventListener("submit", submit);
  doc.getElementById("action-cancel").addEventListener("click", () => doc.getElementById("action-dialog").close());

  global.carescoreActions = { create, refresh, state };
})(window);
