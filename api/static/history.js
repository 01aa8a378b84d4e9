// A KPI's history chart in a dialog, drawn by uPlot (vendored: uPlot.iife.min.js, MIT): the closed
// windows of /api/v1/kpis/{id}/history at the chosen place and the live value, with the target
// and threshold lines and the warning/critical bands shaded behind them.
"use strict";

(function (global) {
  const BAND = { warning: "rgba(183, 121, 31, 0.20)", critical: "rgba(197, 48, 48, 0.20)" };
  const LINE = { target: "#1b7f3b", warning: "#b7791f", critical: "#c53030" };
  const NEEDED = 24; // closed windows a forecast is fitted on at least (GET .../forecast, else 422)
  const MARK = { opened: "#2b6cb0", closed: "#1b7f3b" };
  const state = { chart: null, drawn: null, markers: [] };

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

  // Vertical markers where actions on the KPI were opened and closed (?with=actions), so a review
  // sees whether they worked: blue opened/reopened, green closed.
  function mark(u, markers) {
    const { ctx, bbox } = u;
    for (const m of markers) {
      const x = u.valToPos(Date.parse(m.at) / 1000, "x", true);
      if (x < bbox.left || x > bbox.left + bbox.width) continue;
      ctx.strokeStyle = m.event.startsWith("closed") ? MARK.closed : MARK.opened;
      ctx.lineWidth = 2;
      ctx.setLineDash([2, 3]);
      ctx.beginPath();
      ctx.moveTo(x, bbox.top);
      ctx.lineTo(x, bbox.top + bbox.height);
      ctx.stroke();
      ctx.setLineDash([]);
    }
  }

  // The forecast after the last point (its mean and 80 % band), or why there is none: asked only
  // when the history has the 24 closed windows the API needs at least, else the 422's detail.
  async function forecastOf(kpi, place, api, closed) {
    if (closed < NEEDED) {
      return { points: [], why: `No forecast: a forecast needs at least ${NEEDED} closed windows with data; this history has ${closed}.` };
    }
    const q = where(place);
    q.delete("limit");
    q.delete("level");
    q.set("horizon", "2h");
    const response = await api(`/api/v1/kpis/${encodeURIComponent(kpi.id)}/forecast?${q}`);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) return { points: [], why: `No forecast: ${body.detail || response.status}.` };
    return { points: body.points, why: `Forecast (${body.model}) with its 80 % interval.` };
  }

  // Open the dialog for one KPI of the scorecard (its JSON: levels held to, live value) at a place.
  async function open(kpi, place, api) {
    const dialog = global.document.getElementById("history");
    global.document.getElementById("history-title").textContent = `History: ${kpi.name}`;
    const box = global.document.getElementById("history-chart");
    const note = global.document.getElementById("history-note");
    if (state.chart) { state.chart.destroy(); state.chart = null; }
    state.markers = [];
    if (!dialog.open) dialog.showModal();
    const q = where(place);
    q.set("with", "actions");
    const response = await api(`/api/v1/kpis/${encodeURIComponent(kpi.id)}/history?${q}`);
    if (!response.ok) { note.textContent = `cannot show the history: ${response.status}`; return; }
    const history = await response.json();
    const windows = history.windows.filter((w) => w.value !== null);
    const forecast = await forecastOf(kpi, place, api, windows.length);
    state.markers = history.actions || [];
    // one row per x: the closed windows, the live value (now) and the forecast's points after the
    // last closed window, in time order (uPlot aligns every series on one x array)
    const rows = windows.map((w) => ({ x: Date.parse(w.window.end) / 1000, v: w.value }));
    const lastClosed = rows.length ? rows[rows.length - 1].x : 0;
    if (kpi.value !== null && kpi.value !== undefined) rows.push({ x: Date.now() / 1000, v: kpi.value });
    const ahead = forecast.points.filter((p) => Date.parse(p.at) / 1000 > lastClosed);
    rows.push(...ahead.map((p) => ({ x: Date.parse(p.at) / 1000, f: p })));
    rows.sort((a, b) => a.x - b.x);
    const xs = rows.map((r) => r.x);
    const ys = rows.filter((r) => "v" in r).map((r) => r.v);
    const of = (key) => rows.map((r) => (r.f ? r.f[key] : null));
    const flat = (v) => xs.map(() => v);
    const series = [{}, { label: `value (${kpi.unit})`, stroke: "#2b6cb0", width: 2, spanGaps: true, points: { show: true, size: 6 } }];
    const data = [xs, rows.map((r) => ("v" in r ? r.v : null))];
    for (const [name, v] of [["target", kpi.target], ["warning", kpi.thresholds.warning], ["critical", kpi.thresholds.critical]]) {
      if (v === null) continue;
      series.push({ label: name, stroke: LINE[name], width: 1.5, dash: [6, 4], points: { show: false } });
      data.push(flat(v));
    }
    const bandsDrawn = [];
    if (ahead.length) {
      const first = series.length;
      series.push({ label: "forecast", stroke: "#6b46c1", width: 2, dash: [3, 3], spanGaps: true, points: { show: false } },
        { label: "80 % upper", stroke: "rgba(107, 70, 193, 0.4)", width: 1, spanGaps: true, points: { show: false } },
        { label: "80 % lower", stroke: "rgba(107, 70, 193, 0.4)", width: 1, spanGaps: true, points: { show: false } });
      data.push(of("mean"), of("upper80"), of("lower80"));
      bandsDrawn.push({ series: [first + 1, first + 2], fill: "rgba(107, 70, 193, 0.15)" });
    }
    const opened = state.markers.filter((m) => !m.event.startsWith("closed")).length;
    note.textContent = `${windows.length} closed windows${kpi.value !== null ? " and the live value" : ""}; ` +
      `target ${kpi.target ?? "none"}, warning at ${kpi.thresholds.warning ?? "none"}, critical at ${kpi.thresholds.critical ?? "none"} ${kpi.unit}. ` +
      `${forecast.why} Actions: ${opened} opened, ${state.markers.length - opened} closed.`;
    const bands = bandsOf(kpi);
    const times = xs.concat(state.markers.map((m) => Date.parse(m.at) / 1000));
    const opts = {
      width: Math.min(720, global.innerWidth - 64),
      height: 300,
      series,
      bands: bandsDrawn,
      scales: {
        x: { time: true, range: () => xRange(times) },
        y: { range: () => yRange(ys.concat(ahead.flatMap((p) => [p.lower80, p.upper80])), kpi) },
      },
      axes: [{}, { label: kpi.unit, size: 60 }],
      // state.drawn: the chart whose scales and paths are committed (uPlot commits after a microtask)
      hooks: { drawClear: [(u) => shade(u, bands)], draw: [(u) => mark(u, state.markers), (u) => { state.drawn = u; }] },
    };
    state.chart = new global.uPlot(opts, data, box);
    box.querySelector("canvas").setAttribute("aria-label", note.textContent);
    box.querySelector("canvas").setAttribute("role", "img");
  }

  // The x range: every point and every action marker, an hour wide at least.
  function xRange(times) {
    if (!times.length) return [Date.now() / 1000 - 3600, Date.now() / 1000];
    const lo = Math.min(...times), hi = Math.max(...times), pad = Math.max((hi - lo) * 0.02, 60);
    return hi - lo < 3600 ? [hi - 3600, hi + pad] : [lo - pad, hi + pad];
  }

  function close() {
    const dialog = global.document.getElementById("history");
    if (dialog.open) dialog.close();
  }

  global.carescoreHistory = { open, close, bandsOf, state };
})(window);
