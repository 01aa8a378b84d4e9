// The month the page reviews (issue 16): the links to the monthly review of the chosen place
// (/api/v1/reviews/{yyyy-mm}, HTML and PDF) and the compliance table (/api/v1/compliance).
"use strict";

(function (global) {
  const doc = global.document;
  const input = doc.getElementById("month");

  const { el } = global.carescoreDom;

  // this month in the browser's time zone, yyyy-mm (what <input type=month> holds)
  function thisMonth() {
    const d = new Date();
    return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}`;
  }
  if (!input.value) input.value = thisMonth();
  const month = () => input.value || thisMonth();

  function links(place) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(place)) if (v) q.set(k, v);
    const where = [place.unit, place.department, place.facility].find((x) => x) || "the hospital";
    for (const format of ["html", "pdf"]) {
      q.set("format", format);
      const a = doc.getElementById(`review-${format}`);
      a.href = `/api/v1/reviews/${month()}?${q}`;
      a.setAttribute("aria-label", `Monthly review ${month()}, ${where}${format === "pdf" ? ", PDF" : ""}`);
    }
  }

  const yes = (v) => (v === true ? "yes" : v === false ? "no" : "—");

  async function compliance(api) {
    const table = doc.getElementById("compliance-table");
    const res = await api(`/api/v1/compliance?period=${month()}&by=unit`);
    if (!res.ok) { table.replaceChildren(el("caption", {}, `cannot show compliance: ${res.status}`)); return; }
    const body = await res.json();
    const rows = [el("caption", {}, `Regulatory KPIs by unit, ${month()}`),
      el("tr", {}, ...["KPI", "Rule", "Unit", "Limit", "Now", "Status", "In compliance", "Minutes out"].map((h) => el("th", { scope: "col" }, h)))];
    for (const k of body.kpis) {
      for (const p of k.places) {
        rows.push(el("tr", { "data-kpi": k.id, "data-unit": p.group.unit || "" },
          el("td", {}, k.name), el("td", {}, k.compliance.rule), el("td", {}, p.group.unit || p.group.department || p.group.facility),
          el("td", {}, p.limit ?? "—"), el("td", {}, p.value === null ? "—" : p.value.toFixed(1)),
          el("td", {}, el("span", { class: `status ${p.status}` }, p.status.replace("_", " "))),
          el("td", {}, yes(p.in_compliance_now)), el("td", {}, p.minutes_out === null ? "—" : p.minutes_out.toFixed(0))));
      }
    }
    const key = rows.map((r) => r.textContent).join("|");
    if (table.dataset.shown !== key) { table.replaceChildren(...rows); table.dataset.shown = key; }
  }

  global.carescorePeriod = { month, links, compliance, input };
})(window);
