// The IceProd dashboard: one page, views drawn from the REST API with the user's token.
//
// Safety rules kept throughout: the token lives in this module's memory only (never in a
// cookie or storage); every string from the server is put in the page as text (the `h`
// helper appends text nodes; nothing here assigns innerHTML); no inline script or style
// (the server's Content-Security-Policy forbids them).

import { api, ApiError, session, login, logout, follow } from "./api.js";
import { h, clear, statusBadge, fmtDate, fmtNum, table, section, message, field, countsText }
  from "./dom.js";
import { lineChart, histogram } from "./plots.js";

const TASK_STATUSES = ["waiting", "queued", "processing", "failed", "suspended", "complete"];
const DATASET_STATUSES = ["processing", "suspended", "errors", "complete"];
const POLL_MS = 2000;
const PAGE = 25;

// -- what this server offers (routes being added over time), from its OpenAPI document -------

let featureCache = null;
async function features() {
  if (!featureCache) {
    const spec = (await api("GET", "/openapi.json", undefined, { anonymous: true })).data;
    const paths = spec.paths || {};
    // does an operation's body take `dry_run` (issue 9's previews)?
    const dryRun = (path, verb) => {
      let schema = paths[path]?.[verb]?.requestBody?.content?.["application/json"]?.schema || {};
      const ref = schema.$ref && schema.$ref.split("/").pop();
      if (ref) schema = spec.components?.schemas?.[ref] || {};
      return JSON.stringify(schema).includes('"dry_run"');
    };
    featureCache = {
      events: "/events" in paths, explain: "/tasks/{task_id}/explain" in paths,
      dryRunStatus: dryRun("/datasets/{dataset_id}/status", "put"),
      dryRunBulk: dryRun("/datasets/{dataset_id}/task_actions/bulk_status/{status}", "post"),
    };
  }
  return featureCache;
}

// -- the view lifecycle: timers and streams end when the user goes elsewhere ----------------

class ViewContext {
  constructor() { this.alive = true; this.stops = []; }
  every(ms, fn) {
    let timer = null;
    const tick = async () => {
      if (!this.alive) return;
      try { await fn(); } catch (e) { if (!(e instanceof ApiError)) throw e; }
      if (this.alive) timer = setTimeout(tick, ms);
    };
    timer = setTimeout(tick, ms);
    this.stops.push(() => clearTimeout(timer));
  }
  onStop(fn) { this.stops.push(fn); }
  stop() { this.alive = false; for (const fn of this.stops) fn(); }
}

let current = null;

// Redraw a part of a page only when its data changed: a poll that finds nothing new leaves
// the page (and the keyboard focus in it) alone.
function memo() {
  const last = {};
  return (key, value) => {
    const text = JSON.stringify(value);
    if (last[key] === text) return true;
    last[key] = text;
    return false;
  };
}
const main = () => document.getElementById("main");

const ROUTES = [
  [/^#\/login$/, viewLogin],
  [/^#\/datasets$/, viewDatasets],
  [/^#\/submit$/, viewSubmit],
  [/^#\/datasets\/([0-9a-f]{32})$/, viewDataset],
  [/^#\/datasets\/([0-9a-f]{32})\/tasks\/([0-9a-f]{32})$/, viewTask],
  [/^#\/pilots$/, viewPilots],
  [/^#\/admin$/, viewAdmin],
];

function hashParts() {
  const [path, qs] = (location.hash || "#/datasets").split("?");
  return { path, params: new URLSearchParams(qs || "") };
}

async function route() {
  if (current) current.stop();
  current = new ViewContext();
  const { path, params } = hashParts();
  if (!session.token && path !== "#/login") {
    sessionTarget = location.hash && location.hash !== "#/login" ? location.hash : "#/datasets";
    location.replace("#/login");
    return;
  }
  renderNav();
  const el = main();
  clear(el);
  for (const [re, view] of ROUTES) {
    const m = path.match(re);
    if (m) {
      try {
        await view(current, el, params, ...m.slice(1));
      } catch (e) {
        if (!(e instanceof ApiError)) throw e;
        clear(el);
        el.append(h("h1", {}, "Not available"),
          message(e.status === 404 || e.status === 403
            ? "This page does not exist or you may not read it." : e.message, "error"));
      }
      el.focus({ preventScroll: true });
      return;
    }
  }
  location.replace("#/datasets");
}

let sessionTarget = "#/datasets";

function renderNav() {
  const nav = document.getElementById("nav");
  clear(nav);
  if (!session.token) return;
  const { path } = hashParts();
  const link = (href, text) => h("a", { href, "aria-current": path === href ? "page" : null }, text);
  nav.append(link("#/datasets", "Datasets"), link("#/submit", "Submit"), link("#/pilots", "Pilots"));
  if (session.roles.includes("admin")) nav.append(link("#/admin", "Admin"));
  nav.append(h("span", { class: "who" }, session.username),
    h("button", { type: "button", class: "link", onclick: () => { logout(); location.hash = "#/login"; } },
      "Log out"));
}

// -- login ----------------------------------------------------------------------------------

async function viewLogin(ctx, el) {
  if (session.token) { location.replace("#/datasets"); return; }
  renderNav();
  el.append(h("h1", {}, "Log in"));
  const status = h("div", { role: "status", "aria-live": "polite" });
  el.append(status);
  const done = () => { location.hash = sessionTarget || "#/datasets"; };

  // the LDAP form shows only when the server has LDAP configured (the page says so)
  const ldap = document.querySelector('meta[name="iceprod-ldap"]')?.content === "on";
  if (ldap) {
    const user = h("input", { id: "ldap-user", name: "username", autocomplete: "username", required: true });
    const pass = h("input", { id: "ldap-pass", name: "password", type: "password", autocomplete: "current-password", required: true });
    const form = h("form", { class: "card", id: "ldap-form" },
      h("h2", {}, "Directory account"), field("Username", user), field("Password", pass),
      h("button", { type: "submit" }, "Log in"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clear(status);
      try {
        const r = await api("POST", "/ldap", { username: user.value, password: pass.value }, { anonymous: true });
        login(r.data.token, r.data);
        done();
      } catch (e) {
        status.append(message(e.status === 401 ? "Wrong username or password." : e.message, "error"));
      }
    });
    el.append(form);
  }
  const token = h("textarea", { id: "token", name: "token", rows: 4, autocomplete: "off", spellcheck: "false", required: true });
  const tform = h("form", { class: "card", id: "token-form" },
    h("h2", {}, ldap ? "Or paste a token" : "Paste a token"),
    h("p", { class: "muted" }, "An IceProd token (from ", h("code", {}, "iceprod login"),
      " or your administrator). It is kept in this page's memory only: reloading the page logs you out."),
    field("Token", token), h("button", { type: "submit" }, "Log in"));
  tform.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clear(status);
    try {
      login(token.value.trim());
      await api("GET", "/dataset_overview?limit=1");
      done();
    } catch (e) {
      logout();
      status.append(message(e.status === 401 ? "The server refused this token." : e.message, "error"));
    }
  });
  el.append(tform);
}

// -- datasets -------------------------------------------------------------------------------

function progressOf(d) {
  const counts = d.task_counts || {};
  const total = Math.max(d.tasks_submitted || 0, Object.values(counts).reduce((a, b) => a + b, 0));
  return { done: counts.complete || 0, total };
}

function progress(done, total, label) {
  const pct = total ? Math.floor((100 * done) / total) : 0;
  return h("span", { class: "progress" },
    h("progress", { max: total || 1, value: done, "aria-label": label || "progress" }),
    h("span", { class: "pct" }, `${pct}%`));
}

async function viewDatasets(ctx, el, params) {
  el.append(h("h1", {}, "Datasets"));
  const status = h("select", { id: "f-status", name: "status" },
    h("option", { value: "" }, "any status"),
    DATASET_STATUSES.map((s) => h("option", { value: s, selected: params.get("status") === s }, s)));
  const user = h("input", { id: "f-user", name: "user", value: params.get("user") || "", placeholder: "username" });
  const group = h("input", { id: "f-group", name: "group", value: params.get("group") || "", placeholder: "group" });
  const search = h("input", { id: "f-search", name: "search", type: "search", value: params.get("q") || "", placeholder: "words or a number" });
  const form = h("form", { class: "filters", role: "search" },
    field("Status", status), field("User", user), field("Group", group), field("Search", search),
    h("button", { type: "submit" }, "Filter"));
  const apply = (offset) => {
    const q = new URLSearchParams();
    if (status.value) q.set("status", status.value);
    if (user.value.trim()) q.set("user", user.value.trim());
    if (group.value.trim()) q.set("group", group.value.trim());
    if (search.value.trim()) q.set("q", search.value.trim());
    if (offset) q.set("offset", String(offset));
    location.hash = "#/datasets" + (q.toString() ? "?" + q : "");
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); apply(0); });
  status.addEventListener("change", () => apply(0));
  el.append(form);

  const body = h("div", { id: "datasets-table" });
  const pager = h("nav", { class: "pager", "aria-label": "pages" });
  el.append(body, pager);
  const offset = Number(params.get("offset") || 0);
  const query = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
  if (params.get("status")) query.set("status", params.get("status"));
  if (params.get("user")) query.set("username", params.get("user"));
  if (params.get("group")) query.set("group", params.get("group"));
  if (params.get("q")) query.set("search", params.get("q"));

  const same = memo();
  const load = async () => {
    const r = await api("GET", "/dataset_overview?" + query);
    if (same("rows", r.data)) return;
    const { datasets, total } = r.data;
    const rows = datasets.map((d) => {
      const p = progressOf(d);
      return [
        h("a", { href: `#/datasets/${d.dataset_id}` }, String(d.dataset)),
        h("span", { class: "desc" }, d.description || ""),
        d.username || "", d.group || "", statusBadge(d.status),
        progress(p.done, p.total, `dataset ${d.dataset} progress`),
        countsText(d.task_counts || {}, TASK_STATUSES),
        fmtNum(d.priority), fmtDate(d.start_date),
      ];
    });
    const t = table(["#", "Description", "Owner", "Group", "Status", "Progress", "Tasks", "Priority", "Submitted"],
      rows, "No datasets match.");
    clear(body); body.append(t);
    clear(pager);
    const last = Math.min(offset + datasets.length, total);
    pager.append(h("span", {}, total ? `${offset + 1}–${last} of ${total}` : "0 datasets"));
    if (offset > 0) pager.append(h("button", { type: "button", onclick: () => apply(Math.max(0, offset - PAGE)) }, "Previous"));
    if (last < total) pager.append(h("button", { type: "button", onclick: () => apply(offset + PAGE) }, "Next"));
  };
  await load();
  ctx.every(POLL_MS * 2, load);
}

// -- submit ---------------------------------------------------------------------------------

const SAMPLE_CONFIG = `{
  "version": 3,
  "tasks": [
    {
      "name": "generate",
      "requirements": {"cpu": 1, "memory": 0.5, "time": 0.1},
      "steps": [
        {"name": "hello", "command": "/bin/sh", "args": ["-c", "echo hello from job $(job_index)"]}
      ]
    }
  ]
}
`;

async function viewSubmit(ctx, el) {
  el.append(h("h1", {}, "Submit a dataset"));
  const desc = h("input", { id: "s-description", name: "description", required: true, maxlength: 10000 });
  const group = h("select", { id: "s-group", name: "group" },
    session.groups.map((g) => h("option", { value: g }, g)));
  const jobs = h("input", { id: "s-jobs", name: "jobs", type: "number", min: 1, value: 1, required: true });
  const config = h("textarea", { id: "s-config", name: "config", rows: 18, spellcheck: "false", class: "code" });
  config.value = SAMPLE_CONFIG;
  const out = h("div", { id: "s-result", role: "status", "aria-live": "polite" });
  const check = async () => {
    clear(out);
    const r = await api("POST", "/config_check", { text: config.value });
    if (r.data.valid) {
      out.append(message(`The config is valid: ${r.data.tasks} task(s) per job.`, "ok"));
      return r.data;
    }
    out.append(message("The config has problems; nothing was created.", "error"),
      h("ul", { class: "problems" }, r.data.problems.map((p) => h("li", {},
        p.line ? h("strong", {}, `line ${p.line}${p.column ? `, column ${p.column}` : ""}: `) : null,
        p.field ? h("code", {}, p.field) : null, p.field ? ": " : "", p.message))));
    return null;
  };
  const checkBtn = h("button", { type: "button", onclick: () => check().catch(showError(out)) }, "Check");
  const form = h("form", { class: "card" },
    field("Description", desc), field("Group", group), field("Jobs", jobs), field("Config (JSON)", config),
    h("div", { class: "actions" }, checkBtn, h("button", { type: "submit" }, "Submit")), out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const ok = await check();
      if (!ok) return;
      const n = Number(jobs.value);
      const parsed = JSON.parse(config.value);
      const r = await api("POST", "/datasets", {
        description: desc.value, group: group.value, jobs_submitted: n,
        tasks_per_job: ok.tasks, tasks_submitted: n * ok.tasks,
      });
      await api("PUT", `/config/${r.data.dataset_id}`, parsed);
      location.hash = `#/datasets/${r.data.dataset_id}`;
    } catch (e) { showError(out)(e); }
  });
  el.append(form);
}

const showError = (box) => (e) => {
  if (!(e instanceof ApiError)) throw e;
  clear(box); box.append(message(e.message, "error"));
};

// -- one dataset ----------------------------------------------------------------------------

async function viewDataset(ctx, el, params, id) {
  const ds = (await api("GET", `/datasets/${id}`)).data;
  // whether to offer the actions (the server checks every one of them anyway)
  const rules0 = (await api("GET", `/auths/${id}`)).data;
  const writable = mayWrite(rules0);

  const title = h("h1", {}, `Dataset ${ds.dataset}: `, h("span", { class: "desc" }, ds.description || ""));
  const summary = h("dl", { class: "facts", id: "ds-facts" });
  const prog = h("div", { id: "ds-progress" });
  const notice = h("div", { role: "status", "aria-live": "polite", id: "ds-notice" });
  el.append(title, summary, prog, notice);

  const actions = h("div", { class: "actions", id: "ds-actions" });
  if (writable) el.append(section("Actions", actions));
  const matrix = h("div", { id: "ds-matrix" });
  el.append(section("Tasks by name and status", matrix));
  const tasksBox = h("div", { id: "ds-tasks" });
  const taskFilter = h("select", { id: "t-status", name: "task-status" },
    h("option", { value: "" }, "any status"), TASK_STATUSES.map((s) => h("option", { value: s }, s)));
  el.append(section("Tasks", h("div", { class: "filters" }, field("Status", taskFilter)), tasksBox));
  const jobsBox = h("div", { id: "ds-jobs" });
  el.append(section("Jobs", jobsBox));
  const plots = h("div", { class: "plots", id: "ds-plots" });
  el.append(section("Plots", plots));
  const rulesBox = h("div", { id: "ds-rules" });
  if (writable) el.append(section("Who may read and write", rulesBox));
  const configBox = h("pre", { class: "code", id: "ds-config", tabindex: 0 });
  el.append(section("Config", configBox));

  let state = { ds, counts: {} };
  const same = memo();
  const loadHead = async () => {
    const [d, counts] = await Promise.all([
      api("GET", `/datasets/${id}`), api("GET", `/datasets/${id}/task_counts/status`)]);
    state = { ds: d.data, counts: counts.data };
    if (same("head", state)) return;
    const x = state.ds;
    clear(summary);
    const fact = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
    summary.append(...fact("Status", statusBadge(x.status)), ...fact("Owner", x.username || ""),
      ...fact("Group", x.group || ""), ...fact("Priority", fmtNum(x.priority)),
      ...fact("Jobs", String(x.jobs_submitted)), ...fact("Submitted", fmtDate(x.start_date)));
    const total = Math.max(x.tasks_submitted || 0, Object.values(state.counts).reduce((a, b) => a + b, 0));
    clear(prog);
    prog.append(progress(state.counts.complete || 0, total, "dataset progress"), " ",
      h("span", { id: "ds-counts" }, countsText(state.counts, TASK_STATUSES)));
    if (writable) drawActions();
  };
  const loadMatrix = async () => {
    const m = (await api("GET", `/datasets/${id}/task_counts/name_status`)).data;
    if (same("matrix", m)) return;
    clear(matrix);
    matrix.append(table(["Task", ...TASK_STATUSES],
      Object.entries(m).map(([name, c]) => [name, ...TASK_STATUSES.map((s) => String(c[s] || 0))]),
      "No tasks yet."));
  };
  const loadTasks = async () => {
    const q = new URLSearchParams({ limit: "50", keys: "task_id|name|job_index|task_index|status|failures|reason|site" });
    if (taskFilter.value) q.set("status", taskFilter.value);
    const tasks = Object.values((await api("GET", `/datasets/${id}/tasks?${q}`)).data);
    tasks.sort((a, b) => (a.job_index - b.job_index) || (a.task_index - b.task_index));
    if (same("tasks", [taskFilter.value, tasks])) return;
    clear(tasksBox);
    tasksBox.append(table(["Task", "Job", "Status", "Failures", "Site", "Last reason"],
      tasks.map((t) => [h("a", { href: `#/datasets/${id}/tasks/${t.task_id}` }, t.name || t.task_id),
        String(t.job_index ?? ""), statusBadge(t.status), String(t.failures || 0), t.site || "",
        h("span", { class: "desc" }, t.reason || "")]), "No tasks."));
  };
  taskFilter.addEventListener("change", () => loadTasks());
  const loadJobs = async () => {
    const jobs = Object.values((await api("GET",
      `/datasets/${id}/jobs?limit=50&keys=job_id|job_index|status|status_changed`)).data);
    jobs.sort((a, b) => (a.job_index ?? 0) - (b.job_index ?? 0));
    if (same("jobs", jobs)) return;
    clear(jobsBox);
    jobsBox.append(table(["Job", "Status", "Changed"],
      jobs.map((j) => [String(j.job_index), statusBadge(j.status), fmtDate(j.status_changed)]), "No jobs yet."));
  };
  const loadPlots = async () => {
    const p = (await api("GET", `/datasets/${id}/task_plots`)).data;
    clear(plots);
    let sum = 0;
    plots.append(lineChart("Tasks completed over time", p.completed.map((c) => Date.parse(c.time) / 1000),
      p.completed.map((c) => (sum += c.count))));
    for (const [kind, unit] of [["walltime", "hours"], ["memory", "GB"]]) {
      for (const [name, hist] of Object.entries(p[kind]).slice(0, 6)) {
        plots.append(histogram(`${kind === "walltime" ? "Walltime" : "Memory"} of ${name}`,
          hist.edges, hist.counts, unit));
      }
    }
    const f = Object.entries(p.failures);
    plots.append(h("figure", { class: "plot" }, h("figcaption", {}, "Failures by reason class"),
      f.length ? table(["Class", "Failed runs"], f.map(([k, v]) => [k, String(v)])) : h("p", { class: "muted" }, "No failures.")));
  };
  // the plots are redrawn when the task counts change (not on every poll)
  let plotted = "";
  const refresh = async () => {
    await Promise.all([loadHead(), loadMatrix(), loadTasks(), loadJobs()]);
    const key = JSON.stringify(state.counts);
    if (key !== plotted) { plotted = key; await loadPlots(); }
  };

  // actions: each shows the preview (the server's dry run, or a count-based estimate) first
  const drawActions = () => {
    clear(actions);
    const s = state.ds.status;
    if (s === "processing" || s === "errors") {
      actions.append(h("button", { type: "button", id: "act-suspend", onclick: () => act("suspend") }, "Suspend"));
    }
    if (s === "suspended" || s === "errors") {
      actions.append(h("button", { type: "button", id: "act-resume", onclick: () => act("resume") }, "Resume"));
    }
    actions.append(h("button", { type: "button", id: "act-reset", onclick: () => act("reset") }, "Reset failed tasks"));
    const prio = h("input", { id: "act-priority-value", type: "number", min: 0, max: 1, step: 0.05, value: state.ds.priority ?? 0.5 });
    actions.append(h("span", { class: "inline" }, field("Priority", prio),
      h("button", { type: "button", id: "act-priority", onclick: () => act("priority", Number(prio.value)) }, "Set priority")));
  };
  const ACTIONS = {
    suspend: { title: "Suspend the dataset", method: "PUT", path: `/datasets/${id}/status`, body: { status: "suspended" },
      estimate: (c) => ({ from: ["waiting", "queued", "processing"], to: "suspended" }) },
    resume: { title: "Resume the dataset", method: "PUT", path: `/datasets/${id}/status`, body: { status: "processing" },
      estimate: () => ({ from: ["suspended"], to: "waiting" }) },
    reset: { title: "Reset the failed tasks", method: "POST", path: `/datasets/${id}/task_actions/bulk_status/waiting`,
      body: { filter: { status: ["failed"] } }, estimate: () => ({ from: ["failed"], to: "waiting" }) },
  };
  const act = async (name, value) => {
    clear(notice);
    if (name === "priority") {
      if (!(value >= 0 && value <= 1)) { notice.append(message("Priority must be between 0 and 1.", "error")); return; }
      const ok = await confirmDialog("Change the priority",
        [`Priority ${fmtNum(state.ds.priority)} → ${fmtNum(value)}.`,
          "No task changes status; the scheduler weighs this dataset's queued tasks by the new priority from its next cycle."]);
      if (!ok) return;
      await api("PUT", `/datasets/${id}/priority`, { priority: value }).catch(showError(notice));
      await loadHead();
      return;
    }
    const a = ACTIONS[name];
    const f = await features();
    let lines = null;
    if (name === "reset" ? f.dryRunBulk : f.dryRunStatus) {
      try {
        const r = await api(a.method, a.path, { ...a.body, dry_run: true });
        if (r.data && r.data.dry_run === true) {
          lines = [`Matched: ${r.data.matched}; would change: ${r.data.changed}.`,
            r.data.by_status ? `By status: ${countsText(r.data.by_status, Object.keys(r.data.by_status))}.` : "",
            r.data.sample && r.data.sample.length ? `For example: ${r.data.sample.slice(0, 5).join(", ")}` : ""];
        }
      } catch (e) {
        if (!(e instanceof ApiError)) throw e;
        if (e.status !== 400) { showError(notice)(e); return; }
      }
    }
    if (!lines) {
      // a server without dry runs: estimate from the task counts
      const est = a.estimate(state.counts);
      const n = est.from.reduce((sum, s) => sum + (state.counts[s] || 0), 0);
      lines = [`About ${n} task(s) would go to ${est.to} (${est.from.map((s) => `${s}: ${state.counts[s] || 0}`).join(", ")}).`,
        "Estimated from the current task counts (this server has no dry run)."];
    }
    if (!(await confirmDialog(a.title, lines.filter(Boolean)))) return;
    try {
      const r = await api(a.method, a.path, a.body);
      const changed = r.data.changed ?? r.data.tasks_changed ?? 0;
      notice.append(message(`Done: ${changed} task(s) changed.`, "ok"));
    } catch (e) { showError(notice)(e); }
    await refresh();
  };

  const drawRules = async () => {
    const rules = (await api("GET", `/auths/${id}`)).data;
    const inputs = {};
    const form = h("form", { class: "card", id: "rules-form" });
    for (const k of ["read_users", "read_groups", "write_users", "write_groups"]) {
      inputs[k] = h("input", { id: `rule-${k}`, name: k, value: (rules[k] || []).join(", ") });
      form.append(field(k.replace("_", " "), inputs[k]));
    }
    const out = h("div", { role: "status", "aria-live": "polite" });
    form.append(h("button", { type: "submit" }, "Save rules"), out);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = {};
      for (const [k, input] of Object.entries(inputs)) body[k] = input.value.split(",").map((s) => s.trim()).filter(Boolean);
      clear(out);
      try { await api("PUT", `/auths/${id}`, body); out.append(message("Saved.", "ok")); }
      catch (e) { showError(out)(e); }
    });
    clear(rulesBox); rulesBox.append(form);
  };

  await refresh().catch(showError(plots));
  const cfg = await api("GET", `/config/${id}`).catch((e) => { if (e instanceof ApiError) return null; throw e; });
  configBox.textContent = cfg ? JSON.stringify(cfg.data, null, 2) : "(no config)";
  if (writable) await drawRules();

  // live: server-sent events when the server has them, else short polling
  let pending = null;
  const streamed = (await features()).events && await follow(ctx, `/events?dataset_id=${id}`, () => {
    if (pending) return;
    pending = setTimeout(async () => { pending = null; if (ctx.alive) await refresh().catch(() => {}); }, 300);
  }, () => ctx.every(POLL_MS, refresh));
  if (!streamed) ctx.every(POLL_MS, refresh);
  ctx.onStop(() => clearTimeout(pending));
}

function mayWrite(rules) {
  if (session.roles.includes("admin") || session.roles.includes("system")) return true;
  return (rules.write_users || []).includes(session.username)
    || (rules.write_groups || []).some((g) => session.groups.includes(g));
}

function confirmDialog(title, lines) {
  return new Promise((resolve) => {
    const dlg = h("dialog", { id: "confirm", "aria-labelledby": "confirm-title" },
      h("h2", { id: "confirm-title" }, title),
      h("div", { id: "confirm-preview" }, lines.map((l) => h("p", {}, l))),
      h("div", { class: "actions" },
        h("button", { type: "button", id: "confirm-yes", onclick: () => { dlg.close("yes"); } }, "Confirm"),
        h("button", { type: "button", id: "confirm-no", class: "secondary", onclick: () => { dlg.close("no"); } }, "Cancel")));
    dlg.addEventListener("close", () => { dlg.remove(); resolve(dlg.returnValue === "yes"); });
    document.body.append(dlg);
    dlg.showModal();
    dlg.querySelector("#confirm-no").focus();
  });
}

// -- one task -------------------------------------------------------------------------------

async function viewTask(ctx, el, params, datasetId, taskId) {
  const ds = (await api("GET", `/datasets/${datasetId}?keys=dataset|description`)).data;
  el.append(h("p", {}, h("a", { href: `#/datasets/${datasetId}` }, `← Dataset ${ds.dataset}`)));
  const title = h("h1", {});
  const explain = h("section", { id: "explain", class: "card explain", hidden: true, "aria-live": "polite" });
  const details = h("dl", { class: "facts", id: "task-facts" });
  const reqs = h("div", { id: "task-reqs" });
  const attempts = h("div", { id: "task-attempts" });
  el.append(title, explain, details, section("Requirements", reqs), section("Attempts", attempts));

  const logName = h("select", { id: "log-name", name: "log" }, ["stderr", "stdout", "stdlog"].map((n) => h("option", { value: n }, n)));
  const tail = h("select", { id: "log-tail", name: "tail" }, [100, 1000, 0].map((n) => h("option", { value: n }, n ? `last ${n} lines` : "everything")));
  const followBox = h("input", { id: "log-follow", type: "checkbox" });
  const logView = h("pre", { id: "log", class: "log", tabindex: 0, "aria-label": "log" });
  el.append(section("Logs", h("div", { class: "filters" }, field("Log", logName), field("Show", tail),
    h("label", { class: "check" }, followBox, " follow")), logView));

  const same = memo();
  const loadTask = async () => {
    const t = (await api("GET", `/datasets/${datasetId}/tasks/${taskId}`)).data;
    if (same("task", t)) return t;
    clear(title); title.append(`Task ${t.name || ""} `, h("span", { class: "muted" }, `job ${t.job_index}`), " ", statusBadge(t.status));
    clear(details);
    const fact = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
    details.append(...fact("Task id", h("code", {}, t.task_id)), ...fact("Status", t.status),
      ...fact("Changed", fmtDate(t.status_changed)), ...fact("Failures", String(t.failures || 0)),
      ...fact("Evictions", String(t.evictions || 0)), ...fact("Site", t.site || "—"),
      ...fact("Pilot", t.pilot_id ? h("code", {}, t.pilot_id) : "—"),
      ...fact("Walltime (h)", fmtNum(t.walltime)), ...fact("Error walltime (h)", fmtNum(t.walltime_err)),
      ...fact("Last reason", h("span", { class: "desc" }, t.reason || "—")));
    clear(reqs);
    const r = t.requirements || {};
    reqs.append(table(["cpu", "gpu", "memory (GB)", "disk (GB)", "time (h)", "os", "site"],
      [[fmtNum(r.cpu), fmtNum(r.gpu), fmtNum(r.memory), fmtNum(r.disk), fmtNum(r.time), (r.os || []).join(", "), r.site || ""]]));
    return t;
  };
  const loadAttempts = async () => {
    const runs = Object.values((await api("GET", `/datasets/${datasetId}/tasks/${taskId}/task_stats?limit=100`)).data);
    runs.sort((a, b) => String(a.create_date).localeCompare(String(b.create_date)));
    if (same("runs", runs)) return;
    clear(attempts);
    attempts.append(table(["When", "Outcome", "Site", "Host", "Pilot", "Walltime (s)", "CPU (s)", "Peak memory (GB)", "Requested", "Reason"],
      runs.map((x) => {
        const s = x.stats || {};
        const req = s.requirements || {};
        return [fmtDate(x.create_date), s.outcome || "", s.site || "", s.host || "",
          s.pilot_id ? h("code", {}, s.pilot_id.slice(0, 8)) : "", fmtNum(s.walltime), fmtNum(s.cpu_time),
          s.max_rss != null ? fmtNum(s.max_rss / 1e9) : "",
          Object.entries(req).filter(([, v]) => v != null && v !== "").map(([k, v]) => `${k}=${v}`).join(" "),
          h("span", { class: "desc" }, s.reason || "")];
      }), "No attempts recorded yet."));
  };
  const loadExplain = async (t) => {
    if (!(await features()).explain) return;
    try {
      const x = (await api("GET", `/tasks/${taskId}/explain`)).data;
      clear(explain);
      explain.append(h("h2", {}, "Why isn't it running?"), h("p", {}, x.summary || ""),
        h("ul", {}, (x.blockers || []).map((b) => h("li", {}, h("strong", {}, b.kind || ""), ": ", b.message || ""))));
      explain.hidden = false;
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      explain.hidden = true; // no such route on this server, or not for this caller
    }
  };
  const loadLog = async () => {
    const logs = Object.values((await api("GET",
      `/datasets/${datasetId}/tasks/${taskId}/logs?group=true&order=desc&num=100`)).data);
    const log = logs.find((l) => l.name === logName.value);
    let text = log ? String(log.data ?? "") : `(no ${logName.value} yet)`;
    const n = Number(tail.value);
    if (n) { const lines = text.split("\n"); if (lines.length > n) text = lines.slice(-n).join("\n"); }
    const atBottom = logView.scrollTop + logView.clientHeight >= logView.scrollHeight - 4;
    logView.textContent = text;
    if (followBox.checked || atBottom) logView.scrollTop = logView.scrollHeight;
  };
  logName.addEventListener("change", () => loadLog());
  tail.addEventListener("change", () => loadLog());

  const t = await loadTask();
  await Promise.all([loadAttempts(), loadLog(), loadExplain(t)]);
  ctx.every(POLL_MS, async () => {
    const t2 = await loadTask();
    if (followBox.checked) await loadLog();
    await loadAttempts();
    if (t2.status !== "complete") await loadExplain(t2);
  });
}

// -- pilots and grids -----------------------------------------------------------------------

async function viewPilots(ctx, el) {
  el.append(h("h1", {}, "Pilots and grids"));
  const grids = h("div", { id: "grids" }), pilots = h("div", { id: "pilots" }), demand = h("div", { id: "demand" });
  el.append(section("Grids", grids), section("Pilots by grid and site", pilots), section("Queued demand by resource shape", demand));
  const res = (r) => Object.entries(r || {}).filter(([, v]) => v != null && v !== "")
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join("/") : typeof v === "number" ? fmtNum(v) : v}`).join(" ");
  const same = memo();
  const load = async () => {
    const [g, p] = await Promise.all([
      api("GET", "/grids?limit=200").catch((e) => { if (e instanceof ApiError) return { data: {} }; throw e; }),
      api("GET", "/pilots?limit=1000&status=submitted|running").catch((e) => { if (e instanceof ApiError) return { data: {} }; throw e; })]);
    // queued demand: grid managers' and administrators' (others are refused it)
    const mayDemand = session.roles.some((r) => ["admin", "system", "grid"].includes(r));
    const d = mayDemand ? (await api("GET", "/task_demand").catch((e) => {
      if (e instanceof ApiError) return null; throw e;
    }))?.data : null;
    if (same("pilots", [g.data, p.data, d])) return;
    const gridList = Object.values(g.data);
    const names = Object.fromEntries(gridList.map((x) => [x.grid_id, x.host || x.grid_id]));
    clear(grids);
    grids.append(table(["Grid", "Queues", "Version", "Last update"], gridList.map((x) => [x.host || x.grid_id,
      Object.keys(x.queues || {}).join(", "), x.version || "", fmtDate(x.last_update)]), "No grids registered."));
    const groups = {};
    for (const x of Object.values(p.data)) {
      const key = `${names[x.grid_id] || x.grid_name || x.queue_host || "—"} / ${x.site || "—"}`;
      (groups[key] ||= []).push(x);
    }
    clear(pilots);
    const keys = Object.keys(groups).sort();
    if (!keys.length) pilots.append(h("p", { class: "muted" }, "No pilots running."));
    for (const k of keys) {
      pilots.append(h("h3", {}, `${k} (${groups[k].length})`), table(["Pilot", "Status", "Host", "Resources", "Available", "Running tasks", "Last heartbeat"],
        groups[k].map((x) => [h("code", {}, x.pilot_id.slice(0, 8)), x.status || "", x.host || "", res(x.resources), res(x.resources_available),
          String((x.tasks || []).length), fmtDate(x.last_update)])));
    }
    clear(demand);
    if (!d) {
      demand.append(h("p", { class: "muted" }, "Visible to grid managers and administrators."));
      return;
    }
    const rows = Array.isArray(d) ? d : d.demand || [];
    demand.append(table(["Requirements", "Queued tasks"], rows.map((x) => [res(x.requirements) || "(none)", String(x.count)]), "Nothing queued."));
  };
  await load();
  ctx.every(POLL_MS * 3, load);
}

// -- admin ----------------------------------------------------------------------------------

async function viewAdmin(ctx, el) {
  el.append(h("h1", {}, "Administration"));
  const out = h("div", { role: "status", "aria-live": "polite", id: "admin-notice" });
  const users = h("div", { id: "admin-users" }), groups = h("div", { id: "admin-groups" }), roles = h("div", { id: "admin-roles" });
  const rules = h("div", { id: "admin-rules" });
  el.append(out, section("Users", users), section("Groups", groups), section("Roles", roles), section("Dataset rules", rules));
  const load = async () => {
    const [u, g, r] = await Promise.all([api("GET", "/users?limit=500"), api("GET", "/groups?limit=500"), api("GET", "/roles")]);
    clear(users);
    users.append(table(["User", "Roles", "Groups", "Tokens"], Object.values(u.data).map((x) => [x.username, (x.roles || []).join(", "),
      (x.groups || []).join(", "),
      h("button", { type: "button", class: "secondary", onclick: async () => {
        if (!(await confirmDialog(`Revoke ${x.username}'s tokens`, ["Every token this user holds stops working at once; they must log in again."]))) return;
        clear(out);
        try { await api("POST", `/users/${x.user_id}/actions/revoke_tokens`); out.append(message(`Revoked ${x.username}'s tokens.`, "ok")); }
        catch (e) { showError(out)(e); }
      } }, "Revoke tokens")])));
    clear(groups);
    groups.append(table(["Group"], Object.values(g.data).map((x) => [x.name || x.group_id])));
    clear(roles);
    const roleRows = Array.isArray(r.data) ? r.data.map((x) => [x.name || x.role_name, (x.scopes || []).join(" ")])
      : Object.entries(r.data).map(([k, v]) => [k, (Array.isArray(v) ? v : v.scopes || []).join(" ")]);
    roles.append(table(["Role", "Scopes"], roleRows));
  };
  const number = h("input", { id: "rules-dataset", name: "dataset", placeholder: "dataset number" });
  const rulesOut = h("div", {});
  const rform = h("form", { class: "filters" }, field("Dataset", number), h("button", { type: "submit" }, "Show rules"));
  rform.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clear(rulesOut);
    try {
      const x = (await api("GET", `/auths/${encodeURIComponent(number.value.trim())}`)).data;
      rulesOut.append(table(["Rule", "Names"], Object.entries(x).filter(([k]) => k !== "dataset_id")
        .map(([k, v]) => [k, Array.isArray(v) ? v.join(", ") : String(v)])));
    } catch (e) { showError(rulesOut)(e); }
  });
  rules.append(rform, rulesOut);
  await load();
}

// the skip link moves the focus to the content (its #main would be taken for a route)
document.querySelector(".skip").addEventListener("click", (ev) => {
  ev.preventDefault();
  main().focus();
});
window.addEventListener("hashchange", () => { route(); });
route();
