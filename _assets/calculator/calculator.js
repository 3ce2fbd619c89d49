/* The live calculator: vramlib.estimate running in the reader's browser (Pyodide).
 *
 * Loads Pyodide's core from this site (_static/pyodide/, vendored from npm by `make assets`),
 * installs the vramlib-estimate wheel built from the book's checkout (`make calculator`), and
 * runs the page's bridge _static/calculator/calculator.py, which calls the estimator's public
 * API.  This file only draws: the form comes from the bridge's schema (choices from the
 * library), every number from its result.  The scenario lives in the URL's hash.
 * Timings for scripts/browser_test.py: window.vramlibCalculator.
 * Defined in Part I, "The live calculator".
 */
(function () {
  "use strict";
  const root = document.getElementById("vramlib-calculator");
  if (!root) return;
  const STATIC = new URL(root.dataset.static, document.baseURI).href;
  const GIB = 2 ** 30;
  const SVGNS = "http://www.w3.org/2000/svg";
  const T = (window.vramlibCalculator = {
    ready: false, failed: null, timings: {}, computeMs: [], last: null, lastJson: null, computes: 0,
  });
  const els = {};
  let schema = null, calc = null, colors = {}, state = {}, lastHash = null;

  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }
  const gib = (b) => (b / GIB).toFixed(2) + " GiB";
  const fieldOf = (name) => schema.fields.find((f) => f.name === name);

  function setStatus(text, cls) {
    els.status.textContent = text;
    els.status.className = "vc-status" + (cls ? " " + cls : "");
  }

  // ---- state <-> URL hash (only values that differ from the page's defaults)
  function readHash() {
    const s = Object.assign({}, schema.defaults);
    const p = new URLSearchParams(location.hash.replace(/^#/, ""));
    for (const [k, v] of p) {
      const f = fieldOf(k);
      if (!f) continue;
      s[k] = f.kind === "bool" ? (v === "1" || v === "true") : v;
    }
    return s;
  }
  function writeHash(relevant) {
    const p = new URLSearchParams();
    for (const f of schema.fields) {
      if (!relevant.includes(f.name)) continue;
      const v = state[f.name];
      if (String(v) !== String(f.default)) p.set(f.name, f.kind === "bool" ? (v ? "1" : "0") : v);
    }
    const hash = p.toString() ? "#" + p.toString() : "";
    lastHash = hash;
    if (hash !== location.hash) history.replaceState(null, "", location.pathname + location.search + hash);
  }

  // ---- the form, from the bridge's schema
  function control(f) {
    const id = "vc-" + f.name;
    let c;
    if (f.kind === "select") {
      c = h("select", { id, name: f.name });
      for (const [v, label] of schema.options[f.name]) c.append(h("option", { value: v, text: label }));
    } else if (f.kind === "bool") {
      c = h("input", { id, name: f.name, type: "checkbox" });
    } else if (f.kind === "textarea") {
      c = h("textarea", { id, name: f.name, rows: "6", spellcheck: "false",
        placeholder: '{"model_type": "llama", "hidden_size": 4096, ...}' });
    } else {
      c = h("input", { id, name: f.name, type: "text", inputmode: f.kind === "int" ? "numeric" : "text",
        autocomplete: "off", spellcheck: "false" });
    }
    c.addEventListener(f.kind === "select" || f.kind === "bool" ? "change" : "input", () => {
      state[f.name] = f.kind === "bool" ? c.checked : c.value;
      recompute();
    });
    return c;
  }
  function buildForm() {
    const groups = new Map();
    for (const f of schema.fields) {
      if (!groups.has(f.group)) groups.set(f.group, h("fieldset", { class: "vc-group" }, h("legend", { text: f.group })));
      const c = control(f);
      const err = h("div", { class: "vc-error", role: "alert", id: "vc-error-" + f.name });
      const wrap = h("div", { class: "vc-field vc-" + f.kind, "data-field": f.name },
        h("label", { for: c.id, text: f.label }), c,
        f.help ? h("div", { class: "vc-help", text: f.help }) : null, err);
      els[f.name] = { wrap, c, err };
      groups.get(f.group).append(wrap);
    }
    const reset = h("button", { type: "button", class: "vc-reset", text: "reset to the defaults" });
    reset.addEventListener("click", () => {
      state = Object.assign({}, schema.defaults);
      fillControls();
      recompute();
    });
    els.form.replaceChildren(...groups.values(), reset);
  }
  function fillControls() {
    for (const f of schema.fields) {
      const { c } = els[f.name];
      const v = state[f.name];
      if (f.kind === "bool") { c.checked = !!v; continue; }
      if (f.kind === "select" && ![...c.options].some((o) => o.value === String(v))) {
        c.append(h("option", { value: String(v), text: String(v) + " (from the URL)" }));
      }
      c.value = String(v);
    }
  }

  // ---- the result
  function bar(r) {
    const b = r.breakdown, cap = r.gpu.memory_bytes;
    const parts = Object.entries(b.components).filter(([, v]) => v > 0).map(([k, v]) => [k, v, false])
      .concat(Object.entries(b.overhead).filter(([, v]) => v > 0).map(([k, v]) => [k, v, true]));
    const scale = Math.max(b.total_reserved, cap) * 1.04, W = 600, x0 = 8, w = W - 16;
    const svg = document.createElementNS(SVGNS, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} 96`);
    svg.setAttribute("class", "vc-bar");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "memory per component, stacked, against the GPU's memory");
    const s = (tag, attrs, text) => {
      const e = document.createElementNS(SVGNS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text != null) e.textContent = text;
      svg.append(e);
      return e;
    };
    const defs = s("defs", {});
    const pat = document.createElementNS(SVGNS, "pattern");
    for (const [k, v] of Object.entries({ id: "vc-hatch", width: "8", height: "8", patternUnits: "userSpaceOnUse",
      patternTransform: "rotate(45)" })) pat.setAttribute(k, v);
    const line = document.createElementNS(SVGNS, "line");
    for (const [k, v] of Object.entries({ x1: "0", y1: "0", x2: "0", y2: "8", stroke: colors.overhead || "#000",
      "stroke-width": "3" })) line.setAttribute(k, v);
    pat.append(line);
    defs.append(pat);
    let x = x0;
    for (const [k, v, over] of parts) {
      const wd = (v / scale) * w;
      const rect = s("rect", { x: x.toFixed(2), y: "18", width: Math.max(wd, 0.5).toFixed(2), height: "40",
        fill: over ? "url(#vc-hatch)" : (colors[k] || "#777"), stroke: "#fff", "stroke-width": "0.5" });
      const t = document.createElementNS(SVGNS, "title");
      t.textContent = `${k}: ${gib(v)} (${v.toLocaleString("en")} B)`;
      rect.append(t);
      x += wd;
    }
    const cx = x0 + (cap / scale) * w;
    s("line", { x1: cx, y1: "8", x2: cx, y2: "66", stroke: "currentColor", "stroke-width": "2.5",
      "stroke-dasharray": "5 3" });
    s("text", { x: Math.min(cx, W - 4), y: "6", "text-anchor": cx > W - 200 ? "end" : "middle",
      "font-size": "12", fill: "currentColor", "dominant-baseline": "hanging" }, `${r.gpu.key}: ${gib(cap)}`);
    const step = [1, 2, 5, 10, 20, 40, 50, 100, 200, 500].find((st) => scale / GIB / st <= 8) || 1000;
    for (let g = 0; g * GIB <= scale; g += step) {
      const tx = x0 + ((g * GIB) / scale) * w;
      s("line", { x1: tx, y1: "60", x2: tx, y2: "66", stroke: "currentColor", "stroke-width": "1" });
      s("text", { x: tx, y: "79", "text-anchor": "middle", "font-size": "11", fill: "currentColor" }, `${g}`);
    }
    s("text", { x: W - 8, y: "94", "text-anchor": "end", "font-size": "11", fill: "currentColor" }, "GiB");
    return svg;
  }
  function table(r) {
    const b = r.breakdown, peak = Math.max(b.peak, 1);
    const tb = h("tbody", {});
    const row = (sw, name, v, share, cls) => tb.append(h("tr", { class: cls || "" },
      h("td", {}, sw ? h("span", { class: "vc-swatch" + (sw === "hatch" ? " vc-hatch" : ""),
        style: sw === "hatch" ? "" : `background:${sw}` }) : null, name),
      h("td", { class: "vc-num", title: `${v.toLocaleString("en")} B`, text: gib(v) }),
      h("td", { class: "vc-num", text: share })));
    for (const [k, v] of Object.entries(b.components)) {
      if (v > 0) row(colors[k] || "#777", k, v, ((100 * v) / peak).toFixed(1) + " %");
    }
    row(null, `peak of the tensors (at ${b.peak_phase})`, b.peak, "100 %", "vc-sum");
    for (const [k, v] of Object.entries(b.overhead)) row("hatch", "+ " + k, v, "");
    row(null, "total reserved on the GPU", b.total_reserved, "", "vc-sum");
    return h("table", { class: "vc-table" },
      h("thead", {}, h("tr", {}, h("th", { text: "component" }), h("th", { class: "vc-num", text: "memory" }),
        h("th", { class: "vc-num", text: "share of peak" }))), tb);
  }
  function solverText(res, what, unit) {
    if (res.error) return `${what}: the estimator says ${res.error}`;
    return res.value > 0 ? `${what}: ${res.value.toLocaleString("en")}${unit}`
      : `${what}: none (even 1${unit} does not fit)`;
  }
  // The options beyond the breakdown (vramlib.estimate.extend): one line per group.
  const NOT_BYTES = new Set(["ep", "tp", "cp", "sp", "ratio", "capacity_factor", "resident_params",
                             "active_params", "what", "scope", "kv_scales"]);
  function bytesText(v) {
    for (const [u, s] of [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]])
      if (Math.abs(v) >= s) return (v / s).toFixed(2) + " " + u;
    return v + " B";
  }
  function extensions(b) {
    if (!b.extensions) return null;
    const items = [];
    for (const [group, vals] of Object.entries(b.extensions)) {
      if (group === "options") continue;
      const parts = Object.entries(vals).map(([k, v]) => `${k.replace(/_/g, " ")} ` +
        (typeof v === "number" && !NOT_BYTES.has(k) ? bytesText(v)
          : typeof v === "number" ? v.toLocaleString("en", { maximumFractionDigits: 3 }) : String(v)));
      items.push(h("li", {}, h("strong", { text: group.replace(/_/g, " ") + ": " }), parts.join("; ")));
    }
    return h("div", { class: "vc-ext" },
      h("p", { text: "Beyond the breakdown (computed beside it; not in the total above):" }),
      h("ul", {}, ...items));
  }
  function render(r) {
    const b = r.breakdown, cap = r.gpu.memory_bytes;
    const lenWhat = b.stage === "train" ? "longest sequence at this batch" : "longest prompt at this batch";
    const verdict = r.fits
      ? h("span", { class: "vc-yes", text: `yes, with ${gib(r.margin)} to spare` })
      : h("span", { class: "vc-no", text: `no, ${gib(-r.margin)} short` });
    els.result.replaceChildren(
      h("p", { class: "vc-headline" },
        h("strong", { text: gib(b.total_reserved) }),
        ` per GPU: ${gib(b.peak)} of tensors at the peak (${b.peak_phase}), plus the CUDA context and the ` +
        "allocator's reserve."),
      h("p", { class: "vc-fits" }, `Fits one ${r.gpu.name} (${gib(cap)})? `, verdict),
      bar(r), table(r),
      h("ul", { class: "vc-solvers" },
        h("li", { text: solverText(r.max_batch, "largest batch that fits", "") }),
        h("li", { text: solverText(r.max_context, lenWhat, " tokens") })),
      extensions(b),
      h("p", { class: "vc-cli-label", text: "The same estimate on the command line (pip install the book's vramlib):" }),
      h("pre", { class: "vc-command" }, h("code", { id: "vc-command", text: r.command })),
      h("details", { class: "vc-json" }, h("summary", { text: "every component as JSON (what the command prints)" }),
        h("pre", {}, h("code", { id: "vc-json", text: r.json }))));
  }
  function showErrors(r) {
    for (const f of schema.fields) {
      els[f.name].err.textContent = "";
      els[f.name].wrap.classList.remove("vc-invalid");
    }
    if (r.ok) {
      els.banner.hidden = true;
      els.result.classList.remove("vc-stale");
      return;
    }
    const lines = [];
    for (const e of r.errors) {
      if (e.field && els[e.field]) {
        els[e.field].err.textContent = e.message;
        els[e.field].wrap.classList.add("vc-invalid");
        lines.push(`${fieldOf(e.field).label}: ${e.message}`);
      } else lines.push(e.message);
    }
    els.banner.textContent = "The estimator rejects this scenario — " + lines.join("; ") +
      (T.last ? ". Below: the last scenario it accepted." : ".");
    els.banner.hidden = false;
    els.result.classList.add("vc-stale");
  }

  function recompute() {
    const t0 = performance.now();
    let r;
    try {
      r = JSON.parse(calc(JSON.stringify(state)));
    } catch (exc) {
      r = { ok: false, errors: [{ field: null, message: "internal error: " + String(exc).slice(-400) }],
        relevant: schema.fields.map((f) => f.name) };
    }
    for (const f of schema.fields) els[f.name].wrap.hidden = !r.relevant.includes(f.name);
    showErrors(r);
    if (r.ok) {
      render(r);
      T.last = r;
      T.lastJson = r.json;
    }
    T.lastResult = r;
    T.state = Object.assign({}, state);
    writeHash(r.relevant);
    T.computes += 1;
    const ms = performance.now() - t0;
    T.computeMs.push(ms);
    return r;
  }

  async function fetchOk(url, how) {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
    return res[how]();
  }

  // Pyodide from the memory snapshot that `make calculator` saved after importing the
  // estimator (scripts/build_calculator_snapshot.mjs): no interpreter start-up, no imports.
  // A plain start when there is none, the browser cannot gunzip, or the restore fails.
  async function startPyodide(manifest) {
    const opts = { indexURL: STATIC + "pyodide/", packages: [] };
    const snap = manifest.snapshot;
    if (snap && "DecompressionStream" in window) {
      try {
        // a promise: Pyodide compiles its WebAssembly while the snapshot downloads
        const bytes = fetch(STATIC + "calculator/" + snap.file).then((res) => {
          if (!res.ok) throw new Error(`${snap.file}: HTTP ${res.status}`);
          return new Response(res.body.pipeThrough(new DecompressionStream("gzip"))).arrayBuffer();
        }).then((b) => new Uint8Array(b));
        const py = await loadPyodide(Object.assign({ _loadSnapshot: bytes }, opts));
        T.timings.snapshot = true;
        return py;
      } catch (exc) {
        T.timings.snapshot_error = String(exc);
      }
    }
    T.timings.snapshot = false;
    return loadPyodide(opts);
  }

  async function boot() {
    const t0 = performance.now();
    if (location.protocol === "file:") {
      throw new Error("this page runs Python from the site's files, which browsers refuse to do for a page " +
        "opened from disk: serve the folder (python -m http.server -d _build/html) and open it from there");
    }
    setStatus("Loading Python (Pyodide) …");
    const manifest = await fetchOk(STATIC + "calculator/manifest.json", "json");
    const files = Promise.all([fetchOk(STATIC + "calculator/" + manifest.wheel, "arrayBuffer"),
      fetchOk(STATIC + "calculator/calculator.py", "text")]);
    const py = await startPyodide(manifest);
    T.timings.pyodide_ms = performance.now() - t0;
    const [wheel, bridge] = await files;
    setStatus("Installing vramlib.estimate …");
    // The file system is not part of a memory snapshot: unpack the wheel and the bridge in
    // either case (after a restore, the modules are already imported and stay as they are).
    py.unpackArchive(wheel, "wheel", { extractDir: py.runPython("import site; site.getsitepackages()[0]") });
    py.FS.mkdirTree("/home/pyodide/calculator");
    py.FS.writeFile("/home/pyodide/calculator/calculator.py", bridge);
    py.runPython("import importlib, os, sys; importlib.invalidate_caches(); " +
      "d = '/home/pyodide/calculator'; d in sys.path or sys.path.insert(0, d); os.chdir(d)");
    const mod = py.pyimport("calculator");
    calc = mod.compute;
    schema = JSON.parse(mod.schema());
    colors = manifest.component_colors;
    T.timings.install_ms = performance.now() - t0 - T.timings.pyodide_ms;
    T.versions = { pyodide: py.version, vramlib: schema.vramlib };
    buildForm();
    state = readHash();
    fillControls();
    const c0 = performance.now();
    recompute();
    T.timings.first_compute_ms = performance.now() - c0;
    T.timings.first_result_ms = performance.now();  // since navigation start
    const nav = performance.getEntriesByType("navigation")[0];
    T.timings.load_event_ms = nav ? nav.loadEventStart : null;
    setStatus(`vramlib ${schema.vramlib} on Python ${py.runPython("import sys; sys.version.split()[0]")} ` +
      `(Pyodide ${py.version}) in this browser — ready in ${((performance.now() - t0) / 1000).toFixed(1)} s.`, "vc-ok");
    window.addEventListener("hashchange", () => {
      if (location.hash === lastHash) return;
      state = readHash();
      fillControls();
      recompute();
    });
    T.ready = true;
  }

  els.status = h("p", { class: "vc-status", role: "status" });
  els.form = h("form", { class: "vc-form", autocomplete: "off" });
  els.form.addEventListener("submit", (e) => e.preventDefault());
  els.banner = h("p", { class: "vc-banner", role: "alert", hidden: "" });
  els.result = h("div", { class: "vc-result", "aria-live": "polite" });
  root.replaceChildren(els.status, h("div", { class: "vc-layout" }, els.form,
    h("div", { class: "vc-out" }, els.banner, els.result)));
  boot().catch((exc) => {
    T.failed = String(exc);
    setStatus("The calculator could not start: " + String(exc), "vc-fail");
  });
})();
