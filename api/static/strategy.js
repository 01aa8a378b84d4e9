// The strategy map (issue 16): /api/v1/objectives at the chosen place drawn as SVG, the
// perspectives as rows (learning & growth at the bottom, financial at the top, the API's
// `layer`), objectives as nodes coloured by their rolled-up status, arrows for `drives`.
// SVG rather than the chart library: it is a diagram of boxes and arrows, not a plot.
"use strict";

(function (global) {
  const NS = "http://www.w3.org/2000/svg";
  const W = 960, ROW = 120, NODE_W = 200, NODE_H = 64, LABEL_W = 130;

  function svg(tag, attrs = {}, text) {
    const node = global.document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // SVG text does not wrap: split a name into lines of about `width` characters.
  function lines(text, width) {
    const out = [];
    for (const word of text.split(" ")) {
      const last = out[out.length - 1];
      if (last && (last + " " + word).length <= width) out[out.length - 1] = last + " " + word;
      else out.push(word);
    }
    return out.slice(0, 3);
  }

  // Where each objective sits: its perspective's row (top row = highest layer), spread evenly.
  function layout(map) {
    const rows = [...map.perspectives].sort((a, b) => b.layer - a.layer);
    const at = {};
    rows.forEach((p, r) => {
      const members = map.objectives.filter((o) => o.perspective === p.id);
      const span = (W - LABEL_W) / Math.max(members.length, 1);
      members.forEach((o, i) => {
        at[o.id] = { x: LABEL_W + span * i + (span - NODE_W) / 2, y: r * ROW + (ROW - NODE_H) / 2, row: r };
      });
    });
    return { rows, at };
  }

  // An arrow from the cause's edge to the effect's: up a row from top to bottom, across from side to side.
  function arrow(from, to) {
    if (from.row === to.row) {
      const right = from.x < to.x;
      return [right ? from.x + NODE_W : from.x, from.y + NODE_H / 2, right ? to.x : to.x + NODE_W, to.y + NODE_H / 2];
    }
    return [from.x + NODE_W / 2, from.y, to.x + NODE_W / 2, to.y + NODE_H];
  }

  function draw(map, box) {
    const { rows, at } = layout(map);
    const root = svg("svg", { viewBox: `0 0 ${W} ${rows.length * ROW}`, role: "group", "aria-label": "Strategy map", class: "strategy-map" });
    const defs = svg("defs");
    const head = svg("marker", { id: "arrowhead", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" });
    head.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
    defs.append(head);
    root.append(defs);
    rows.forEach((p, r) => {
      root.append(svg("rect", { x: 0, y: r * ROW, width: W, height: ROW, class: `band band-${r % 2}` }));
      root.append(svg("text", { x: 8, y: r * ROW + ROW / 2, class: "row-label" }, p.title));
    });
    for (const e of map.edges) {
      if (!at[e.from] || !at[e.to]) continue;
      const [x1, y1, x2, y2] = arrow(at[e.from], at[e.to]);
      root.append(svg("line", { x1, y1, x2, y2, class: "drives", "marker-end": "url(#arrowhead)", "data-from": e.from, "data-to": e.to }));
    }
    for (const o of map.objectives) {
      const p = at[o.id];
      if (!p) continue;
      const g = svg("g", { class: `objective ${o.status}`, "data-objective": o.id, tabindex: 0, role: "img",
        "aria-label": `${o.name}: ${o.status.replace("_", " ")}` });
      g.append(svg("title", {}, `${o.name} (${o.status.replace("_", " ")})`));
      g.append(svg("rect", { x: p.x, y: p.y, width: NODE_W, height: NODE_H, rx: 8 }));
      lines(o.name, 30).forEach((line, i, all) => {
        g.append(svg("text", { x: p.x + NODE_W / 2, y: p.y + NODE_H / 2 + (i - (all.length - 1) / 2) * 15 + 4, "text-anchor": "middle" }, line));
      });
      root.append(g);
    }
    box.replaceChildren(root);
  }

  async function show(place, api) {
    const box = global.document.getElementById("strategy-map");
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(place)) if (v) q.set(k, v);
    const response = await api(`/api/v1/objectives?${q}`);
    if (!response.ok) { box.textContent = `cannot show the strategy map: ${response.status}`; return; }
    const map = await response.json();
    // redrawn only when something changed: a 5 s refresh keeps the keyboard focus on a node
    const key = JSON.stringify([map.objectives.map((o) => [o.id, o.status]), map.edges]);
    if (box.dataset.shown === key) return;
    box.dataset.shown = key;
    draw(map, box);
  }

  global.carescoreStrategy = { show, layout };
})(window);
