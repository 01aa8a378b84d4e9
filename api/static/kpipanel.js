// What the KPI dialog holds besides the chart (issue 16): the league table of units for the
// chosen month (/api/v1/compare), the analysis written for the KPI, place and month
// (/api/v1/kpis/{id}/analysis/{yyyy-mm}), and "Create action" for the KPI at the place.
"use strict";

(function (global) {
  const doc = global.document;
  const state = { kpi: null, place: null, api: null, month: null, league: [] };

  const { el } = global.carescoreDom;

  function placeQuery(place) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(place)) if (v) q.set(k, v);
    return q;
  }

  const num = (v, digits = 1) => (v === null || v === undefined ? "—" : v.toFixed(digits));

  async function league(kpi, month, api) {
    const table = doc.getElementById("league");
    table.replaceChildren(el("caption", {}, `Units, ${month}, best first`));
    const res = await api(`/api/v1/compare/${encodeURIComponent(kpi.id)}?period=${month}&by=unit`);
    if (!res.ok) { table.append(el("tr", {}, el("td", {}, `cannot show the league table: ${res.status}`))); return; }
    state.league = (await res.json()).rows;
    table.append(el("tr", {}, ...["Rank", "Unit", `Value (${kpi.unit})`, "Percentile", "vs target"].map((h) => el("th", { scope: "col" }, h))));
    for (const r of state.league) {
      const target = r.target ? `${r.target.difference >= 0 ? "+" : ""}${num(r.target.difference)}${r.target.meets ? " ✓" : ""}` : "—";
      table.append(el("tr", { "data-unit": r.group.unit || "" },
        el("td", {}, r.rank ?? "—"), el("td", {}, r.group.unit || r.group.department || r.group.facility),
        el("td", {}, num(r.value)), el("td", {}, num(r.percentile, 0)), el("td", {}, target)));
    }
    if (!state.league.length) table.append(el("tr", {}, el("td", { colspan: 5 }, "no unit has a value this month")));
  }

  async function analysis(kpi, place, month, api) {
    const form = doc.getElementById("analysis");
    form.reset();
    doc.getElementById("analysis-note").textContent = "";
    doc.getElementById("analysis-title").textContent = `Analysis, ${month}`;
    const res = await api(`/api/v1/kpis/${encodeURIComponent(kpi.id)}/analysis/${month}?${placeQuery(place)}`);
    if (!res.ok) return;
    const current = (await res.json()).current;
    if (!current) return;
    for (const k of ["happened", "why", "next"]) form.elements[k].value = current[k] || "";
    doc.getElementById("analysis-note").textContent = `by ${current.author || current.created_by || "?"}`;
  }

  async function save(event) {
    event.preventDefault();
    const form = event.target;
    const body = Object.fromEntries(["happened", "why", "next"].map((k) => [k, form.elements[k].value]));
    const res = await state.api(`/api/v1/kpis/${encodeURIComponent(state.kpi.id)}/analysis/${state.month}?${placeQuery(state.place)}`, {
      method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const p = res.ok ? {} : await res.json().catch(() => ({}));
    doc.getElementById("analysis-note").textContent = res.ok ? "saved" : `not saved (${res.status}): ${p.detail || p.title || ""}`;
  }

  // Open the KPI's dialog: the chart (history.js), then its league table and analysis for the month.
  function open(kpi, place, month, api) {
    Object.assign(state, { kpi, place: { ...place }, month, api });
    const done = global.carescoreHistory.open(kpi, place, api);
    return Promise.all([done, league(kpi, month, api), analysis(kpi, place, month, api)]);
  }

  doc.getElementById("analysis").addEventListener("submit", save);
  doc.getElementById("history-action").addEventListener("click", () => {
    const { kpi, place, api } = state;
    global.carescoreActions.create({ kpi: kpi.id, name: kpi.name, ...place }, api);
  });
  global.carescoreActions.state.onChange = () => {
    if (doc.getElementById("history").open) global.carescoreHistory.open(state.kpi, state.place, state.api);
  };

  global.carescorePanel = { open, state };
})(window);
