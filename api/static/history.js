// A KPI's history chart in a dialog, drawn by uPlot (vendored: uPlot.iife.min.js, MIT): the closed
// windows of /api/v1/kpis/{id}/history at the chosen place and the live value, with the target
// and threshold lines and the warning/critical bands shaded behind them.
"use strict";

(function (global) {
  const BAND = { warning: "rgba(183, 121, 31, 0.20)", critical: "rgba(197, 48, 48, 0.20)" };
  const LINE = { target: "#1b7f3b", warning: "#b7791f", critical: "#c53030" };
  const state = { chart: null };

  // The value ranges that make a status (as the engine's status_of): lower_is_better is warning
  // from `warning` and critical from `critical` up; higher_is_better the same, downwards.
  function bandsOf(kpi) {
    const { warning, critical } = kpi.thresholds;
    const lower = kpi.direction === "lower_is_better";
    const bands = [];
    if (warning !== null) {
      const edge = critical !== null ? critical : lower ? Infinity : -Infinity;
      bands.push({ status: "warning", from: warning, to: edge });
    }
    if (critical !== null) bands.push({ status: "critical", from: critical, to: lower ? Infinity : -Infinity });
    return bands;
  }

  // The y range: every value, the target and both thresholds in view, with a little margin.
  function yRange(values, kpi) {
    const marks = [kpi.target, kpi.thresholds.warning, kpi.thresholds.critical];
    const all = values.concat(marks).filter((v) => v !== null && v !== undefined);
    if (!all.length) return [0, 1];
    const lo = Math.min(...all), hi = Math.max(...all), pad = (hi - lo) * 0.1 || Math.abs(hi) * 0.1 || 1;
    return [Math.max(lo >= 0 ? 0 : -Infinity, lo - pad), hi + pad];
  }

  function shade(u, bands) {
    const { ctx, bbox } = u;
    const [min, max] = [u.scales.y.min, u.scales.y.max];
    for (const b of bands) {
      const lo = Math.max(min, Math.min(b.from, b.to)), hi = Math.min(max, Math.max(b.from, b.to));
      if (hi <= lo) continue;
      const top = u.valToPos(hi, "y", true), bottom = u.valToPos(lo, "y", true);
      ctx.fillStyle = BAND[b.status];
      ctx.fillRect(bbox.left, top, bbox.width, bottom - top);
    }
  }

  function where(place) {
    const q = new URLSearchParams({ limit: "500" });
    for (const [k, v] of Object.entries(place)) if (v) q.set(k, v);
    q.set("level", place.unit ? "unit" : place.department ? "department" : "facility");
    return q;
  }

  // Open the dialog for one KPI of the scorecard (its JSON: levels held to, live value) at a place.
  async function open(kpi, place, api) {
    const dialog = global.document.getElementById("history");
    global.document.getElementById("history-title").textContent = `History: ${kpi.name}`;
    const box = global.document.getElementById("history-chart");
    const note = global.document.getElementById("history-note");
    if (state.chart) { state.chart.destroy(); state.chart = null; }
    if (!dialog.open) dialog.showModal();
    const response = await api(`/api/v1/kpis/${encodeURIComponent(kpi.id)}/history?${where(place)}`);
    if (!response.ok) { note.textContent = `cannot show the history: ${response.status}`; return; }
    const windows = (await response.json()).windows.filter((w) => w.value !== null);
    const xs = windows.map((w) => Date.parse(w.window.end) / 1000);
    const ys = windows.map((w) => w.value);
    if (kpi.value !== null && kpi.value !== undefined) { xs.push(Date.now() / 1000); ys.push(kpi.value); }
    const flat = (v) => xs.map(() => v);
    const series = [{}, { label: `value (${kpi.unit})`, stroke: "#2b6cb0", width: 2, points: { show: true, size: 6 } }];
    const data = [xs, ys];
    for (const [name, v] of [["target", kpi.target], ["warning", kpi.thresholds.warning], ["critical", kpi.thresholds.critical]]) {
      if (v === null) continue;
      series.push({ label: name, stroke: LINE[name], width: 1.5, dash: [6, 4], points: { show: false } });
      data.push(flat(v));
    }
    note.textContent = `${windows.length} closed windows${kpi.value !== null ? " and the live value" : ""}; ` +
      `target ${kpi.target ?? "none"}, warning at ${kpi.thresholds.warning ?? "none"}, critical at ${kpi.thresholds.critical ?? "none"} ${kpi.unit}.`;
    const bands = bandsOf(kpi);
    const opts = {
      width: Math.min(720, global.innerWidth - 64),
      height: 300,
      series,
      scales: { x: { time: true }, y: { range: () => yRange(ys, kpi) } },
      axes: [{}, { label: kpi.unit, size: 60 }],
      hooks: { drawClear: [(u) => shade(u, bands)] },
    };
    state.chart = new global.uPlot(opts, data, box);
    box.querySelector("canvas").setAttribute("aria-label", note.textContent);
    box.querySelector("canvas").setAttribute("role", "img");
  }

  function close() {
    const dialog = global.document.getElementById("history");
    if (dialog.open) dialog.close();
  }

  global.carescoreHistory = { open, close, bandsOf, state };
})(window);
