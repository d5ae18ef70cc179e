// The REST API as the dashboard uses it: the same routes and the same bearer token as any
// client. The token is held here, in memory only.

export const session = { token: "", username: "", roles: [], groups: [] };

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function claims(token) {
  // for display only (who is logged in, which links to show); the server decides access
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
  } catch {
    return {};
  }
}

export function login(token, info = {}) {
  const c = claims(token);
  session.token = token;
  session.username = info.username || c.sub || "";
  session.roles = info.roles || c.roles || [];
  session.groups = info.groups || c.groups || [];
}

export function logout() {
  session.token = "";
  session.username = "";
  session.roles = [];
  session.groups = [];
}

export async function api(method, path, body, { anonymous = false } = {}) {
  const headers = { Accept: "application/json" };
  if (session.token && !anonymous) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store", credentials: "omit", redirect: "error",
  });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) {
    if (r.status === 401 && session.token && !anonymous) {
      logout();
      location.hash = "#/login";
    }
    throw new ApiError(r.status, (data && data.error) || `${r.status} ${r.statusText}`, data);
  }
  return { data, status: r.status, headers: r.headers };
}

// Server-sent events read with fetch (EventSource cannot send the Authorization header).
// Answers false when the server has no stream (then the caller polls); `onEnd` runs if a
// stream that was open ends while the view is still shown.
export async function follow(ctx, path, onEvent, onEnd) {
  const ac = new AbortController();
  ctx.onStop(() => ac.abort());
  let r;
  try {
    r = await fetch(path, {
      headers: { Accept: "text/event-stream", Authorization: `Bearer ${session.token}` },
      cache: "no-store", credentials: "omit", signal: ac.signal,
    });
  } catch {
    return false;
  }
  if (!r.ok || !(r.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
    ac.abort();
    return false;
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  (async () => {
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const ev = { event: "message", data: "" };
        for (const line of block.split("\n")) {
          const i = line.indexOf(":");
          if (i <= 0) continue;
          const k = line.slice(0, i), v = line.slice(i + 1).replace(/^ /, "");
          if (k === "data") ev.data += v;
          else if (k === "event" || k === "id") ev[k] = v;
        }
        try { ev.data = ev.data ? JSON.parse(ev.data) : null; } catch { /* keep the text */ }
        onEvent(ev);
      }
    }
  })().catch(() => {}).finally(() => { if (ctx.alive && onEnd) onEnd(); });
  return true;
}
