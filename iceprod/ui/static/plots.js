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

export function lineChart(title, xs, ys) {
  return figure(title, xs, ys, {
    scales: { x: { time: true } },
    series: [{}, { label: "completed", stroke: "#1f5f8b", fill: "rgba(31,95,139,0.15)", points: { show: true } }],
  });
}

export function barChart(title, xs, ys) {
  return figure(title, xs, ys, {
    scales: { x: { time: false } },
    series: [{}, { label: "count", stroke: "#6a4c93", fill: "rgba(106,76,147,0.35)", paths: uPlot.paths.bars({ size: [0.9, 40] }), points: { show: false } }],
  });
}
