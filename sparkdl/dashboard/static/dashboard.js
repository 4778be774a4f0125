// sparkdl's live dashboard: polls api/state (relative to this page, whose path carries the
// token) for the points it does not have yet, and redraws every chart as inline SVG.
"use strict";

(function () {
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
  const MAX_DRAWN = 1500;         // vertices per line; longer series are thinned evenly
  const W = 480, H = 220, PAD = { l: 52, r: 12, t: 8, b: 26 };
  const SVGNS = "http://www.w3.org/2000/svg";
  let points = [], epochs = [], fit = {}, status = "loading", lastOk = null, failures = 0;

  function $(id) { return document.getElementById(id); }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    return Number(v.toPrecision(4)).toString();
  }

  function fmtBytes(v) {
    if (v === null || v === undefined) return "–";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return fmt(v) + " " + units[i];
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined) return "–";
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + sec + "s";
  }

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVGNS, name);
    for (const k in attrs) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }

  // One chart: a figure with a caption, a legend and an SVG of line series
  // [{name, xs, ys}], each drawn as a polyline whose data-points counts its vertices.
  function chart(id, title, series, yFormat) {
    let fig = $(id);
    if (!fig) {
      fig = document.createElement("figure");
      fig.className = "chart";
      fig.id = id;
      const cap = document.createElement("figcaption");
      cap.textContent = title;
      fig.appendChild(cap);
      const legend = document.createElement("div");
      legend.className = "legend";
      fig.appendChild(legend);
      el("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": title }, fig);
      $("charts").appendChild(fig);
    }
    const legend = fig.querySelector(".legend");
    legend.textContent = "";
    series.forEach(function (s, i) {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = COLORS[i % COLORS.length];
      item.appendChild(swatch);
      const last = s.ys.length ? s.ys[s.ys.length - 1] : null;
      item.appendChild(document.createTextNode(s.name + " " + (yFormat || fmt)(last)));
      legend.appendChild(item);
    });
    const svg = fig.querySelector("svg");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    series.forEach(function (s) {
      s.xs.forEach(function (x, j) {
        const y = s.ys[j];
        if (y === null || y === undefined) return;
        x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      });
    });
    if (x0 === Infinity) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
    if (x1 === x0) { x1 = x0 + 1; }
    if (y1 === y0) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
    const sx = function (x) { return PAD.l + (x - x0) / (x1 - x0) * (W - PAD.l - PAD.r); };
    const sy = function (y) { return H - PAD.b - (y - y0) / (y1 - y0) * (H - PAD.t - PAD.b); };
    el("line", { class: "axis", x1: PAD.l, y1: H - PAD.b, x2: W - PAD.r, y2: H - PAD.b }, svg);
    el("line", { class: "axis", x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: H - PAD.b }, svg);
    for (let k = 0; k <= 3; k++) {
      const y = y0 + (y1 - y0) * k / 3;
      el("text", { x: PAD.l - 4, y: sy(y) + 3, "text-anchor": "end" }, svg).textContent = (yFormat || fmt)(y);
    }
    // x counts rounds, batches or epochs: whole numbers, about five of them.
    const xStep = Math.max(1, Math.ceil((x1 - x0) / 5));
    for (let x = Math.ceil(x0); x <= x1; x += xStep) {
      el("text", { x: sx(x), y: H - PAD.b + 14, "text-anchor": "middle" }, svg).textContent = String(x);
    }
    let drawn = 0;
    series.forEach(function (s, i) {
      const pairs = [];
      const step = Math.max(1, Math.ceil(s.xs.length / MAX_DRAWN));
      for (let j = 0; j < s.xs.length; j += step) {
        if (s.ys[j] !== null && s.ys[j] !== undefined) pairs.push([s.xs[j], s.ys[j]]);
      }
      const n = s.xs.length - 1;       // the last point is always drawn
      if (n >= 0 && n % step !== 0 && s.ys[n] !== null && s.ys[n] !== undefined) pairs.push([s.xs[n], s.ys[n]]);
      const color = COLORS[i % COLORS.length];
      el("polyline", { stroke: color, "data-series": s.name, "data-points": pairs.length,
                       points: pairs.map(function (p) { return sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1); }).join(" ") }, svg);
      if (pairs.length) {
        const p = pairs[pairs.length - 1];
        el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: color }, svg);
      }
      drawn += pairs.length;
    });
    return drawn;
  }

  function column(rows, key) { return rows.map(function (r) { return r[key] === undefined ? null : r[key]; }); }
  function has(rows, key) { return rows.some(function (r) { return r[key] !== undefined && r[key] !== null; }); }

  function render(state) {
    const unit = fit.unit || "round";
    const statusEl = $("status");
    statusEl.textContent = status;
    statusEl.setAttribute("data-status", status);
    const parts = [fit.who, fit.model, fit.mode && ("mode " + fit.mode), fit.execution].filter(Boolean);
    $("describe").textContent = parts.join(" · ");
    const pr = state.progress;
    $("epoch").textContent = (pr.epoch || 0) + " / " + (pr.epochs === null || pr.epochs === undefined ? "–" : pr.epochs);
    $("unit-label").textContent = unit;
    $("round").textContent = pr.points + " / " + (pr.points_total === null || pr.points_total === undefined ? "–" : pr.points_total);
    $("elapsed").textContent = fmtSeconds(pr.elapsed_seconds);
    $("eta").textContent = fmtSeconds(pr.eta_seconds);
    $("dropped").textContent = String(state.dropped_events);
    if (epochs.length) {
      const loss = epochs[epochs.length - 1].logs.loss;
      $("last-loss").textContent = fmt(loss);
      $("last-loss").setAttribute("data-value", String(loss));
    }
    if (points.length) {
      const last = points[points.length - 1];
      $("last-point-loss").textContent = fmt(last.loss);
      $("last-point-loss").setAttribute("data-value", String(last.loss));
      $("throughput").textContent = fmt(last.samples_per_second);
    }
    const xs = points.map(function (p) { return p.index + 1; });
    let drawn = 0;
    drawn += chart("chart-loss-" + unit, "training loss per " + unit,
                   [{ name: "loss", xs: xs, ys: column(points, "loss") }]);
    const ex = epochs.map(function (e) { return e.epoch; });
    const logs = epochs.map(function (e) { return e.logs; });
    const names = [];
    logs.forEach(function (l) { Object.keys(l).forEach(function (k) { if (k.indexOf("val_") !== 0 && names.indexOf(k) < 0) names.push(k); }); });
    if (!names.length) names.push("loss");
    names.forEach(function (name) {
      const series = [{ name: name, xs: ex, ys: column(logs, name) }];
      if (has(logs, "val_" + name)) series.push({ name: "val_" + name, xs: ex, ys: column(logs, "val_" + name) });
      drawn += chart("chart-epoch-" + name, name + " per epoch", series);
    });
    if (has(points, "compute_seconds")) {
      drawn += chart("chart-time", "seconds per " + unit + ": slowest worker's compute vs Spark/communication",
                     [{ name: "compute", xs: xs, ys: column(points, "compute_seconds") },
                      { name: "overhead", xs: xs, ys: column(points, "overhead_seconds") }]);
    }
    if (has(points, "samples_per_second")) {
      drawn += chart("chart-throughput", "samples/s", [{ name: "samples/s", xs: xs, ys: column(points, "samples_per_second") }]);
    }
    if (has(points, "bytes")) {
      drawn += chart("chart-bytes", "bytes moved per " + unit, [{ name: "bytes", xs: xs, ys: column(points, "bytes") }], fmtBytes);
    }
    if (has(points, "pushes")) {
      drawn += chart("chart-pushes", "pushes per " + unit + " (parameter server)",
                     [{ name: "pushes", xs: xs, ys: column(points, "pushes") },
                      { name: "duplicates", xs: xs, ys: column(points, "duplicate_pushes") }]);
    }
    if (has(points, "staleness")) {
      drawn += chart("chart-staleness", "staleness (ssp): widest clock gap seen",
                     [{ name: "staleness", xs: xs, ys: column(points, "staleness") }]);
    }
    $("charts").setAttribute("data-points", String(drawn));
  }

  function schedule() {
    if (status === "finished" || status === "failed") return;   // the final state is drawn
    setTimeout(poll, failures ? Math.min(1000 * (failures + 1), 5000) : 1000);
  }

  function poll() {
    fetch("api/state?since=" + points.length, { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (state) {
        failures = 0;
        lastOk = Date.now();
        if (state.since === points.length) points = points.concat(state.points);
        epochs = state.epochs;
        fit = state.fit;
        status = state.status;
        $("connection").hidden = true;
        render(state);
      })
      .catch(function (err) {
        failures++;
        const conn = $("connection");
        conn.hidden = false;
        conn.textContent = "No answer from the driver (" + err.message + "): the fit may have ended and " +
          "its dashboard stopped; this page shows the last state it received.";
      })
      .then(schedule);
  }

  poll();
}());
