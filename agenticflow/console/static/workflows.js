// The workflows list: filters (state, name glob, time range, text search on id
// and input), offset paging over any number of workflows, refreshed every 2 s.
// The filters live in the URL (#/workflows?state=...&q=...) so views can be shared.
import { get, post, withQuery } from "./api.js";
import { h, pill, replace, fmtTime, fmtAgo, notify, debounce } from "./dom.js";

const STATES = ["running", "completed", "failed", "cancelled", "aborted", "rejected"];
const SINCE = [["", "Any time"], ["900", "Last 15 minutes"], ["3600", "Last hour"],
  ["86400", "Last 24 hours"], ["604800", "Last 7 days"], ["2592000", "Last 30 days"]];
const PAGE_SIZES = [25, 50, 100, 250, 1000];
const POLL_MS = 2000;

/** ISO text for a datetime-local value (interpreted in the browser's zone). */
function isoOf(local) {
  if (!local) return "";
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

/** A datetime-local value for ISO text (in the browser's zone), or "" (seconds-ago values too). */
function localOf(iso) {
  if (!iso || /^\d+(\.\d+)?$/.test(iso)) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

export function workflowsPage(root, params) {
  const filters = {
    state: (params.get("state") || "").split(",").filter((x) => STATES.includes(x)),
    name: params.get("name") || "",
    q: params.get("q") || "",
    since: params.get("since") || "",
    until: params.get("until") || "",
    offset: Math.max(0, parseInt(params.get("offset") || "0", 10) || 0),
    limit: Math.min(1000, Math.max(1, parseInt(params.get("limit") || "50", 10) || 50)),
  };
  let timer = null;
  let stopped = false;
  let lastBody = null;
  let live = true;

  // Filters -------------------------------------------------------------------
  const stateBoxes = STATES.map((state) => {
    const box = h("input", { type: "checkbox", value: state, checked: filters.state.includes(state),
      testid: `filter-state-${state}` });
    box.addEventListener("change", () => {
      filters.state = STATES.filter((_, i) => stateBoxes[i].querySelector("input").checked);
      changed();
    });
    return h("label", { class: ["chip", `chip-${state}`] }, box, state);
  });
  const name = h("input", { type: "search", placeholder: "name (glob, e.g. report-*)", value: filters.name,
    testid: "filter-name", "aria-label": "Workflow name" });
  const q = h("input", { type: "search", placeholder: "Search id or input…", value: filters.q,
    testid: "filter-q", "aria-label": "Search id or input", class: "grow" });
  // Time range: a preset ("last hour": seconds ago) or a from/to pair of local times.
  const since = h("select", { testid: "filter-since", "aria-label": "Created in" },
    SINCE.map(([v, label]) => h("option", { value: v }, label)),
    h("option", { value: "custom", hidden: true }, "Custom range"));
  const from = h("input", { type: "datetime-local", testid: "filter-from", "aria-label": "Created from" });
  const until = h("input", { type: "datetime-local", testid: "filter-until", "aria-label": "Created until" });
  if (SINCE.some(([v]) => v === filters.since)) {
    since.value = filters.since;
  } else {
    since.value = "custom";
    from.value = localOf(filters.since);
  }
  until.value = localOf(filters.until);
  const typed = debounce(() => {
    filters.name = name.value.trim();
    filters.q = q.value.trim();
    changed();
  }, 300);
  name.addEventListener("input", typed);
  q.addEventListener("input", typed);
  since.addEventListener("change", () => {
    if (since.value === "custom") return;
    filters.since = since.value;
    from.value = "";
    changed();
  });
  from.addEventListener("change", () => {
    filters.since = isoOf(from.value);
    since.value = filters.since ? "custom" : "";
    changed();
  });
  until.addEventListener("change", () => { filters.until = isoOf(until.value); changed(); });
  const reset = h("button", { type: "button", class: "btn btn-ghost", testid: "filter-reset" }, "Clear filters");
  reset.addEventListener("click", () => {
    Object.assign(filters, { state: [], name: "", q: "", since: "", until: "" });
    stateBoxes.forEach((l) => { l.querySelector("input").checked = false; });
    name.value = q.value = until.value = from.value = "";
    since.value = "";
    changed();
  });

  // Live toggle, start form, table, pager ------------------------------------
  const liveDot = h("span", { class: "live-dot" });
  const liveText = h("span", { testid: "list-updated" }, "Loading…");
  const liveButton = h("button", { type: "button", class: "btn btn-ghost btn-small", testid: "live-toggle" }, "Pause updates");
  liveButton.addEventListener("click", () => {
    live = !live;
    liveButton.textContent = live ? "Pause updates" : "Resume updates";
    liveDot.classList.toggle("off", !live);
    if (live) refresh();
  });
  const tableBox = h("div", { class: "table-wrap", testid: "workflow-table" });
  const info = h("span", { class: "page-info", testid: "page-info" });
  const first = h("button", { type: "button", class: "btn", testid: "page-first", title: "Newest" }, "⇤");
  const prev = h("button", { type: "button", class: "btn", testid: "page-prev" }, "← Newer");
  const next = h("button", { type: "button", class: "btn", testid: "page-next" }, "Older →");
  const lastPage = h("button", { type: "button", class: "btn", testid: "page-last", title: "Oldest" }, "⇥");
  let total = null;
  const size = h("select", { testid: "page-size", "aria-label": "Rows per page", value: String(filters.limit) },
    PAGE_SIZES.map((n) => h("option", { value: String(n) }, `${n} / page`)));
  if (!PAGE_SIZES.includes(filters.limit)) {
    size.appendChild(h("option", { value: String(filters.limit) }, `${filters.limit} / page`));
    size.value = String(filters.limit);
  }
  prev.addEventListener("click", () => { filters.offset = Math.max(0, filters.offset - filters.limit); changed(false); });
  next.addEventListener("click", () => { filters.offset += filters.limit; changed(false); });
  first.addEventListener("click", () => { filters.offset = 0; changed(false); });
  lastPage.addEventListener("click", () => {
    if (total) filters.offset = Math.floor((total - 1) / filters.limit) * filters.limit;
    changed(false);
  });
  size.addEventListener("change", () => { filters.limit = Number(size.value); changed(); });

  const startPanel = startForm();
  const startButton = h("button", { type: "button", class: "btn btn-primary", testid: "start-button" }, "Start workflow");
  startButton.addEventListener("click", () => { startPanel.hidden = !startPanel.hidden; });

  replace(root,
    h("div", { class: "page-head" },
      h("h1", {}, "Workflows"),
      h("div", { class: "page-head-side" }, h("span", { class: "live" }, liveDot, liveText), liveButton, startButton)),
    startPanel,
    h("div", { class: "filters card", testid: "filters" },
      h("div", { class: "filter-row" }, q, name, since,
        h("label", { class: "inline-label" }, "from", from), h("label", { class: "inline-label" }, "to", until), reset),
      h("div", { class: "filter-row chips" }, h("span", { class: "muted" }, "State"), stateBoxes)),
    h("div", { class: "card flush" }, tableBox,
      h("div", { class: "pager" }, info, h("div", { class: "pager-buttons" }, size, first, prev, next, lastPage))));

  /** Filters changed: back to the first page (unless paging), new URL, fetch now. */
  function changed(resetOffset = true) {
    if (resetOffset) filters.offset = 0;
    const query = {
      state: filters.state.join(","), name: filters.name, q: filters.q, since: filters.since,
      until: filters.until, offset: filters.offset || "", limit: filters.limit === 50 ? "" : filters.limit,
    };
    history.replaceState(null, "", withQuery(`${location.pathname}#/workflows`, query));
    lastBody = null;
    refresh();
  }

  async function refresh() {
    clearTimeout(timer);
    if (document.hidden) {
      // A background tab does not poll; it catches up when shown again.
      timer = setTimeout(refresh, POLL_MS);
      return;
    }
    const query = {
      state: filters.state.join(","), name: filters.name, q: filters.q, since: filters.since,
      until: filters.until, offset: filters.offset, limit: filters.limit,
    };
    try {
      const body = await get("/workflows", query);
      if (stopped) return;
      const text = JSON.stringify(body);
      if (text !== lastBody) {
        lastBody = text;
        render(body);
      }
      liveText.textContent = `Updated ${fmtTime(Date.now())}`;
    } catch (err) {
      if (stopped) return;
      liveText.textContent = `Update failed: ${err.message}`;
      if (err.status && err.status !== 401 && lastBody === null) notify(err.message, "error");
      if (err.status === 401) return;
    }
    if (!stopped && live) timer = setTimeout(refresh, POLL_MS);
  }

  function render(body) {
    const rows = body.workflows || [];
    total = typeof body.total === "number" ? body.total : null;
    const offset = typeof body.offset === "number" ? body.offset : filters.offset;
    replace(tableBox, table(rows));
    const last = offset + rows.length;
    info.textContent = rows.length
      ? `${(offset + 1).toLocaleString("en-US")}–${last.toLocaleString("en-US")}` +
        (total !== null ? ` of ${total.toLocaleString("en-US")}` : "")
      : total ? `Nothing at offset ${offset.toLocaleString("en-US")} of ${total.toLocaleString("en-US")}` : "No workflows";
    prev.disabled = first.disabled = offset <= 0;
    next.disabled = total !== null ? last >= total : rows.length < filters.limit;
    lastPage.disabled = total === null || last >= total;
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
    typed.cancel();
  };
}

function table(rows) {
  const body = h("tbody");
  if (!rows.length) {
    body.appendChild(h("tr", { class: "empty" }, h("td", { colspan: 6 }, "No workflow matches these filters.")));
  }
  for (const row of rows) {
    const href = `#/workflows/${encodeURIComponent(row.id)}`;
    const done = Number(row.tasks_done) || 0;
    const total = Number(row.tasks_total) || 0;
    const bar = h("progress", { max: Math.max(total, 1), value: done, class: "progress" });
    const tr = h("tr", { testid: "workflow-row", class: "clickable", data: { id: row.id, state: row.state } },
      h("td", {}, h("a", { href, class: "mono strong", testid: "workflow-link" }, row.id),
        h("div", { class: "muted small" }, row.name || "")),
      h("td", {}, pill(row.state, { testid: "workflow-state" }),
        row.paused ? pill("paused", { testid: "workflow-paused" }) : null,
        row.reason ? h("div", { class: "muted small clip", title: row.reason }, row.reason) : null),
      h("td", { class: "nowrap" }, bar, h("span", { class: "small muted" }, ` ${done}/${total}`)),
      h("td", { class: "mono small clip input-preview", title: row.input_preview || "" }, row.input_preview || "—"),
      h("td", { class: "nowrap small", title: fmtTime(row.created_at) }, fmtAgo(row.created_at)),
      h("td", { class: "nowrap small", title: fmtTime(row.updated_at) }, fmtAgo(row.updated_at)));
    tr.addEventListener("click", (event) => {
      if (event.target.closest("a") || String(window.getSelection() || "")) return;
      location.hash = href;
    });
    body.appendChild(tr);
  }
  return h("table", { class: "table" },
    h("thead", {}, h("tr", {}, ["Workflow", "State", "Tasks", "Input", "Created", "Updated"].map((t) => h("th", {}, t)))),
    body);
}

/** Start a workflow from a JSON definition (POST /workflows). */
function startForm() {
  const definition = h("textarea", { class: "mono", rows: 8, testid: "start-definition", spellcheck: "false",
    "aria-label": "Workflow definition (JSON)" });
  definition.value = JSON.stringify({ name: "hello", tasks: [{ id: "say", capability: "echo", params: { say: "hi" } }] }, null, 2);
  const input = h("textarea", { class: "mono", rows: 3, testid: "start-input", spellcheck: "false",
    "aria-label": "Input (JSON)" });
  input.value = "{}";
  const submit = h("button", { type: "submit", class: "btn btn-primary", testid: "start-submit" }, "Start");
  const form = h("form", { class: "card start-form" },
    h("h2", { class: "card-title" }, "Start a workflow"),
    h("div", { class: "two-cols" },
      h("label", {}, "Definition (JSON)", definition),
      h("label", {}, "Input (JSON)", input)),
    h("div", { class: "actions" }, submit));
  form.hidden = true;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let body;
    try {
      body = { workflow: JSON.parse(definition.value), input: JSON.parse(input.value || "{}") };
    } catch (err) {
      notify(`Not valid JSON: ${err.message}`, "error");
      return;
    }
    submit.disabled = true;
    try {
      const created = await post("/workflows", body);
      notify(`Started ${created.id}`, "ok");
      location.hash = `#/workflows/${encodeURIComponent(created.id)}`;
    } catch (err) {
      notify(err.message, "error");
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
