// DOM helpers. Every string that reaches the page goes through textContent or
// setAttribute: nothing here parses HTML, so user data can never become markup.

export const SVG_NS = "http://www.w3.org/2000/svg";

/** Set properties on an element. Keys:
 *  class (string or array), testid (-> data-testid), data ({k: v} -> data-k),
 *  on ({event: handler}), text (textContent), value/checked (DOM properties),
 *  anything else -> setAttribute (true -> empty attribute, false/null -> skipped).
 *  "style" and on* attributes are refused: CSP forbids them and they are a smell. */
function applyProps(el, props) {
  let value;
  for (const [key, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (key === "class") {
      el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : String(v));
    } else if (key === "testid") {
      el.setAttribute("data-testid", String(v));
    } else if (key === "data") {
      for (const [dk, dv] of Object.entries(v)) {
        if (dv !== null && dv !== undefined) el.setAttribute(`data-${dk}`, String(dv));
      }
    } else if (key === "on") {
      for (const [event, handler] of Object.entries(v)) el.addEventListener(event, handler);
    } else if (key === "text") {
      el.textContent = String(v);
    } else if (key === "value") {
      value = v;
    } else if (key === "checked") {
      el.checked = Boolean(v);
    } else if (key === "style" || /^on/i.test(key)) {
      throw new Error(`refusing attribute ${key}`);
    } else {
      el.setAttribute(key, v === true ? "" : String(v));
    }
  }
  return value;
}

function appendChildren(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) appendChildren(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** An HTML element: h("td", {class: "num"}, "42"). Children: nodes, strings (as text), arrays. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  const value = applyProps(el, props);
  appendChildren(el, children);
  if (value !== undefined) el.value = String(value); // after <option>s exist
  return el;
}

/** An SVG element, same conventions as h(). */
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  applyProps(el, props);
  appendChildren(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Replace el's children with the given ones. */
export function replace(el, ...children) {
  clear(el);
  appendChildren(el, children);
  return el;
}

// Formatting -------------------------------------------------------------------

/** Any timestamp (ns, ms or s since the epoch, or ISO text) as a Date, or null. */
export function toDate(t) {
  if (t === null || t === undefined || t === "") return null;
  if (typeof t === "string" && !/^\d+(\.\d+)?$/.test(t)) {
    const d = new Date(t);
    return Number.isNaN(d.getTime()) ? null : d;
  }
  const n = Number(t);
  if (!Number.isFinite(n) || n <= 0) return null;
  if (n > 1e17) return new Date(n / 1e6); // ns
  if (n > 1e14) return new Date(n / 1e3); // us
  if (n > 1e11) return new Date(n); // ms
  return new Date(n * 1000); // s
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

/** Local date and time, "2026-12-08 00:41:48". */
export function fmtTime(t) {
  const d = toDate(t);
  if (!d) return "—";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Time of day with milliseconds, for event lists. */
export function fmtClock(t) {
  const d = toDate(t);
  if (!d) return "—";
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** "3s ago", "5m ago"... */
export function fmtAgo(t) {
  const d = toDate(t);
  if (!d) return "—";
  return `${fmtDuration((Date.now() - d.getTime()) / 1000)} ago`;
}

/** Seconds as "850ms", "12.3s", "4m 05s", "2h 03m", "3d 4h". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const abs = Math.max(0, seconds);
  if (abs < 1) return `${Math.round(abs * 1000)}ms`;
  if (abs < 60) return `${abs.toFixed(abs < 10 ? 1 : 0)}s`;
  if (abs < 3600) return `${Math.floor(abs / 60)}m ${pad(Math.floor(abs % 60))}s`;
  if (abs < 86400) return `${Math.floor(abs / 3600)}h ${pad(Math.floor((abs % 3600) / 60))}m`;
  return `${Math.floor(abs / 86400)}d ${Math.floor((abs % 86400) / 3600)}h`;
}

export function fmtNumber(n, digits = 0) {
  if (n === null || n === undefined || n === "") return "—";
  const x = Number(n);
  if (!Number.isFinite(x)) return String(n);
  return x.toLocaleString("en-US", { maximumFractionDigits: digits });
}

/** A value as readable text: strings as they are, everything else as indented JSON. */
export function asText(value, indent = 2) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, indent);
  } catch {
    return String(value);
  }
}

/** A compact one-line rendering of a value for table cells. */
export function compact(value, max = 120) {
  let text;
  if (value === null || value === undefined) return "—";
  if (typeof value === "string") text = value;
  else if (typeof value === "number" || typeof value === "boolean") text = String(value);
  else if (Array.isArray(value) && value.every((v) => typeof v !== "object")) text = value.join(", ");
  else if (typeof value === "object" && !Array.isArray(value) &&
    Object.values(value).every((v) => v === null || typeof v !== "object")) {
    text = Object.entries(value).map(([k, v]) => `${k}: ${v}`).join(", ");
  } else text = asText(value, 0);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

// Widgets ------------------------------------------------------------------------

const KNOWN_STATES = new Set([
  "pending", "ready", "dispatched", "running", "completed", "failed", "skipped", "cancelled",
  "waiting_approval", "waiting", "retrying", "submitted", "aborted", "rejected", "paused",
  "scheduled", "retry_wait", "auction", "processing", "error",
  // agent instance FSM states and others get their own colours when they match
  "idle", "busy", "starting", "stopping", "stopped", "suspended", "suspending", "draining",
  "open", "closed", "half_open", "leader", "follower", "active", "standby", "ok", "broken",
]);

/** A CSS-safe state key: unknown states share the grey "other" colour. */
export function stateClass(state) {
  const key = String(state ?? "").toLowerCase().replace(/[^a-z_]/g, "");
  return KNOWN_STATES.has(key) ? `st-${key}` : "st-other";
}

/** A coloured state pill. */
export function pill(state, extra = {}) {
  const label = state === null || state === undefined || state === "" ? "unknown" : String(state);
  return h("span", { class: ["pill", stateClass(label)], data: { state: label }, ...extra },
    label.replace(/_/g, " "));
}

/** A <pre> holding text (never markup). */
export function pre(value, props = {}) {
  return h("pre", { class: "code", ...props }, asText(value));
}

/** A table from column specs [{label, cell: row => node|string, class}]. */
export function table(columns, rows, { rowProps, empty = "Nothing here.", testid } = {}) {
  const head = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.class }, c.label))));
  const body = h("tbody");
  if (!rows.length) {
    body.appendChild(h("tr", { class: "empty" }, h("td", { colspan: columns.length }, empty)));
  }
  for (const row of rows) {
    const tr = h("tr", rowProps ? rowProps(row) : {});
    for (const c of columns) {
      const v = c.cell(row);
      tr.appendChild(h("td", { class: c.class }, v === null || v === undefined || v === "" ? "—" : v));
    }
    body.appendChild(tr);
  }
  return h("table", { class: "table", testid }, head, body);
}

/** A titled card. */
export function card(title, ...children) {
  return h("section", { class: "card" }, title ? h("h2", { class: "card-title" }, title) : null, ...children);
}

// Notices ------------------------------------------------------------------------

/** Show a message in the top-right notice area (kind: "error" | "ok" | "info"). */
export function notify(message, kind = "info", timeoutMs = kind === "error" ? 15000 : 8000) {
  const area = document.getElementById("notices");
  if (!area) return;
  const close = h("button", { type: "button", class: "notice-close", "aria-label": "Dismiss" }, "×");
  const note = h("div", { class: ["notice", `notice-${kind}`], testid: "notice", data: { kind }, role: "status" },
    h("span", { class: "notice-text" }, String(message)), close);
  close.addEventListener("click", () => note.remove());
  area.appendChild(note);
  while (area.children.length > 5) area.firstChild.remove();
  setTimeout(() => note.remove(), timeoutMs);
}

/** Call fn at most once per `ms` after the last call. */
export function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}
