// Charts with uPlot (vendored; see vendor/VERSIONS.md).

import uPlot from "./vendor/uPlot.esm.js";
import { h } from "./dom.js";

function width() {
  return Math.max(260, Math.min(560, (document.getElementById("main")?.clientWidth || 600) - 40));
}

function figure(title, xs, ys, opts) {
  const fig = h("figure", { class: "plot" }, h("figcaption", {}, title));
  if (!xs.length) {
    fig.append(h("p", { class: "muted" }, "No data yet."));
    return fig;
  }
  const box = h("div", { role: "img", "aria-label": title });
  fig.append(box);
  // eslint-disable-next-line no-new
  new uPlot({ width: width(), height: 180, legend: { show: false }, ...opts }, [xs, ys], box);
  return fig;
}

const short = (v) => (v == null ? "" : Number(v.toPrecision(3)).toString());

export function lineChart(title, xs, ys) {
  const pad = (min, max) => (min === max ? [min - 60, max + 60] : [min, max]);
  return figure(title, xs, ys, {
    scales: { x: { time: true, range: (u, min, max) => pad(min, max) }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
    series: [{}, { label: "completed", stroke: "#1f5f8b", fill: "rgba(31,95,139,0.15)", points: { show: true } }],
  });
}

// a histogram from bin edges; the unit is chosen for the values (hours shown as minutes or
// seconds when they are short)
export function histogram(title, edges, counts, unit) {
  let scale = 1;
  let label = unit;
  const top = Math.max(...edges);
  if (unit === "hours" && top < 1 / 60) { scale = 3600; label = "seconds"; }
  else if (unit === "hours" && top < 1) { scale = 60; label = "minutes"; }
  const centers = counts.map((_, i) => ((edges[i] + edges[i + 1]) / 2) * scale);
  return figure(`${title} (${label})`, centers, counts, {
    scales: { x: { time: false } },
    axes: [{ values: (u, vals) => vals.map(short) }, { values: (u, vals) => vals.map(short) }],
    series: [{}, { label: "count", stroke: "#6a4c93", fill: "rgba(106,76,147,0.35)", paths: uPlot.paths.bars({ size: [0.9, 40] }), points: { show: false } }],
  });
}
