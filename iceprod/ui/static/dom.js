// Building the page: elements with text children only. A string never becomes markup.

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value" && (tag === "input" || tag === "textarea")) el.value = String(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
}

export function statusBadge(status) {
  return h("span", { class: `badge s-${String(status || "unknown").replace(/[^a-z]/g, "")}` }, status || "unknown");
}

export function fmtDate(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().replace("T", " ").slice(0, 19);
}

export function fmtNum(x) {
  if (x == null || x === "") return "";
  const n = Number(x);
  if (!Number.isFinite(n)) return String(x);
  return Number.isInteger(n) ? String(n) : n.toFixed(Math.abs(n) < 10 ? 3 : 1);
}

export function countsText(counts, order) {
  const parts = order.filter((s) => counts[s]).map((s) => `${s} ${counts[s]}`);
  return parts.length ? parts.join(" · ") : "none";
}

export function table(headers, rows, empty) {
  if (!rows.length && empty) return h("p", { class: "muted" }, empty);
  return h("div", { class: "scroll", tabindex: 0 },
    h("table", {},
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))))));
}

export function section(title, ...children) {
  return h("section", {}, h("h2", {}, title), ...children);
}

export function message(text, kind) {
  return h("p", { class: `msg ${kind || ""}`, role: kind === "error" ? "alert" : null }, text);
}

let fieldSeq = 0;
export function field(label, control) {
  if (!control.id) control.id = `f${++fieldSeq}`;
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control);
}
