// The book's offline view of a memory snapshot: the "Active Memory Timeline" of
// Part I, "Debugging an out-of-memory error".  No library, no network: it reads the
// allocations that the chapter embeds in the page (a <script type="application/json"
// class="vl-memtl-data"> inside each <div class="vl-memtl">) and draws them as stacked
// bands in an SVG, one band per allocation, from the event that allocated it to the one
// that freed it; when a band below is freed, the bands above slide down.  Hovering a band
// names its size and the line of code that allocated it.
//
// Data: {"events": N, "allocs": [[bytes, born, freed, "label"], ...]} with born < freed
// <= N (freed == N: still live at the end of the trace).  Written by the chapter from
// vramlib.measure.allocator.snapshot_spans.
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00",
                  "#F0E442", "#999999"];

  function fmt(b) {
    const units = [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]];
    for (const [u, s] of units) if (b >= s) return (b / s).toFixed(1) + " " + u;
    return b + " B";
  }

  function el(name, attrs) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }

  // Stack the live allocations in order of birth; returns, per allocation, the points
  // [event, offset] where its offset changed, and the highest total.
  function layout(data) {
    const n = data.events, allocs = data.allocs;
    const at = Array.from({ length: n + 1 }, () => ({ born: [], freed: [] }));
    allocs.forEach((a, i) => { at[a[1]].born.push(i); at[Math.min(a[2], n)].freed.push(i); });
    const live = [], offset = new Map(), pts = allocs.map(() => []);
    let total = 0, top = 0;
    for (let t = 0; t <= n; t++) {
      for (const i of at[t].freed) {
        const k = live.indexOf(i);
        if (k < 0) continue;
        live.splice(k, 1);
        pts[i].push([t, offset.get(i)]);
        total -= allocs[i][0];
        for (let j = k; j < live.length; j++) {             // the bands above slide down
          const m = live[j];
          pts[m].push([t, offset.get(m)]);
          offset.set(m, offset.get(m) - allocs[i][0]);
          pts[m].push([t + 1, offset.get(m)]);
        }
      }
      for (const i of at[t].born) {
        if (t >= n) continue;
        offset.set(i, total);
        pts[i].push([t, total]);
        live.push(i);
        total += allocs[i][0];
      }
      top = Math.max(top, total);
    }
    for (const i of live) pts[i].push([n, offset.get(i)]);
    return { pts, top };
  }

  function draw(box, data) {
    const W = 700, H = 300, L = 60, B = 30;
    const { pts, top } = layout(data);
    const x = (t) => L + (t / Math.max(data.events, 1)) * (W - L - 10);
    const y = (b) => H - B - (b / Math.max(top, 1)) * (H - B - 10);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "vl-memtl-svg", role: "img",
                            "aria-label": "active memory timeline of the recorded snapshot" });
    const info = document.createElement("p");
    info.className = "vl-memtl-info";
    info.textContent = "Hover a band: its size and the line that allocated it.";
    data.allocs.forEach((a, i) => {
      const p = pts[i];
      if (p.length < 2) return;
      const lower = p.map(([t, o]) => `${x(t).toFixed(1)},${y(o).toFixed(1)}`);
      const upper = p.slice().reverse().map(([t, o]) => `${x(t).toFixed(1)},${y(o + a[0]).toFixed(1)}`);
      const poly = el("polygon", { points: lower.concat(upper).join(" "),
                                   fill: COLORS[i % COLORS.length], "fill-opacity": "0.85" });
      const text = `${fmt(a[0])}, ${a[3]} (events ${a[1]} to ${a[2]})`;
      const title = el("title");
      title.textContent = text;
      poly.append(title);
      poly.addEventListener("mouseenter", () => { info.textContent = text; });
      svg.append(poly);
    });
    svg.append(el("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#333" }));
    svg.append(el("line", { x1: L, y1: 10, x2: L, y2: H - B, stroke: "#333" }));
    const lab = (tx, ty, s, anchor) => {
      const e = el("text", { x: tx, y: ty, "font-size": "11", "text-anchor": anchor || "start" });
      e.textContent = s;
      svg.append(e);
    };
    lab(L - 4, y(top) + 4, fmt(top), "end");
    lab(L - 4, H - B + 4, "0", "end");
    lab((L + W) / 2, H - 8, `allocation / free event (${data.events} events)`, "middle");
    box.replaceChildren(svg, info);
  }

  function init() {
    for (const box of document.querySelectorAll("div.vl-memtl")) {
      const src = box.querySelector("script.vl-memtl-data");
      if (!src) continue;
      try {
        draw(box, JSON.parse(src.textContent));
      } catch (err) {
        box.textContent = "The snapshot could not be drawn: " + err.message;
      }
    }
  }

  if (typeof document !== "undefined") {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
    else init();
  }
  if (typeof module !== "undefined") module.exports = { layout };
})();
