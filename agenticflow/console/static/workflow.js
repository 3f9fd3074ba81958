// One workflow: summary, steering, pending approvals, the DAG with live task
// states, a time-travel slider (the graph as of any event: replay --until),
// fork and diff, the event list with vector clocks and concurrency marks, the
// Gantt timeline and the streamed output. Live through two SSE feeds.
import { get, post, follow, wfPath, withQuery } from "./api.js";
import {
  h, s, pill, replace, clear, pre, asText, compact, fmtTime, fmtClock, fmtDuration, toDate,
  notify, debounce,
} from "./dom.js";
import { DagView, TASK_STATES } from "./dag.js";
import { renderGantt } from "./timeline.js";

const ENDED = new Set(["completed", "failed", "cancelled", "aborted", "rejected"]);
const SAFETY_POLL_MS = 5000;

/** a <= b for vector clocks: every entry of a is <= the same entry of b (0 if absent). */
export function vcLeq(a, b) {
  for (const [node, n] of Object.entries(a || {})) if (n > ((b || {})[node] || 0)) return false;
  return true;
}

/** What `agenticflow replay` marks ∥: neither clock happened before the other. */
export function concurrent(a, b) {
  return !vcLeq(a, b) && !vcLeq(b, a);
}

/** A small clock drawn in SVG (no icon font: the CSP allows no remote fonts). */
function clockIcon() {
  return s("svg", { class: "icon", viewBox: "0 0 16 16", width: 14, height: 14, "aria-hidden": "true" },
    s("circle", { cx: 8, cy: 8, r: 6.2 }), s("path", { d: "M8,4.5 V8 L10.5,9.5" }));
}

function eventCategory(type) {
  const t = String(type || "");
  if (t.includes("approval")) return "ev-approval";
  if (t.includes("intervention")) return "ev-intervention";
  if (/failed|dead_lettered|timed_out|rejected|aborted|refused/.test(t)) return "ev-bad";
  if (/completed/.test(t)) return "ev-good";
  if (t.startsWith("workflow.")) return "ev-workflow";
  return "ev-task";
}

export function workflowPage(root, id, params) {
  const st = {
    graph: null, // the live graph (until = null)
    shown: null, // the graph on screen (live or historic)
    describe: null,
    events: [],
    seqs: new Set(),
    until: null, // stream sequence the view is pinned at, or null for live
    selected: params.get("task") || null,
    ended: false,
    stopped: false,
    autoSelected: false,
  };
  const closers = [];
  let pollTimer = null;

  // Layout ------------------------------------------------------------------------
  const titleState = h("span", { class: "title-pills" });
  const reasonBox = h("div", { class: "reason", testid: "workflow-reason" });
  const meta = h("dl", { class: "meta", testid: "workflow-meta" });
  const outputBox = h("details", { class: "output-box" });
  const steerBar = h("div", { class: "steer-bar", testid: "steer-bar" });
  const steerForm = h("div", { class: "steer-form-area" });
  const approvals = h("div", { class: "approvals", testid: "approvals" });
  const travel = h("div", { class: "travel card", testid: "time-travel" });
  const historic = h("div", { class: "historic-banner", testid: "historic-banner" });
  historic.hidden = true;
  const dagBox = h("div", { class: "dag-wrap", testid: "dag-wrap" });
  const detail = h("aside", { class: "task-detail", testid: "task-detail" });
  const legend = h("div", { class: "legend" }, TASK_STATES.map((s) => pill(s)));
  // Large graphs: shrink the drawing to the panel's width, or show it at full size and scroll.
  const fit = h("button", { type: "button", class: "btn btn-small", testid: "dag-fit", "aria-pressed": "false" }, "Fit to width");
  fit.addEventListener("click", () => {
    const on = !dagBox.classList.contains("fit");
    dagBox.classList.toggle("fit", on);
    fit.setAttribute("aria-pressed", String(on));
    fit.textContent = on ? "Actual size" : "Fit to width";
  });
  const dag = new DagView(dagBox, { onSelect: (task) => { st.selected = task; st.autoSelected = true; renderDetail(); } });

  const tabs = {
    events: { label: "Events", panel: h("div", { class: "tab-panel", testid: "panel-events" }) },
    timeline: { label: "Timeline", panel: h("div", { class: "tab-panel", testid: "panel-timeline" }) },
    output: { label: "Output", panel: h("div", { class: "tab-panel", testid: "panel-output" }) },
    diff: { label: "Diff", panel: h("div", { class: "tab-panel", testid: "panel-diff" }) },
  };
  let activeTab = tabs[params.get("tab")] ? params.get("tab") : "events";
  const tabBar = h("div", { class: "tabs", role: "tablist" });
  for (const [key, tab] of Object.entries(tabs)) {
    tab.button = h("button", { type: "button", class: "tab", role: "tab", testid: `tab-${key}` }, tab.label);
    tab.button.addEventListener("click", () => showTab(key));
    tabBar.appendChild(tab.button);
  }

  replace(root,
    h("div", { class: "crumbs" }, h("a", { href: "#/workflows" }, "Workflows"), " / ",
      h("span", { class: "mono" }, id)),
    h("div", { class: "page-head" },
      h("div", {}, h("h1", { class: "mono wf-title", testid: "workflow-id" }, id), titleState),
      steerBar),
    steerForm,
    h("div", { class: "card summary" }, reasonBox, meta, outputBox),
    approvals,
    travel,
    h("section", { class: "card graph-card" },
      h("div", { class: "card-head" }, h("h2", { class: "card-title" }, "Graph"), legend, fit),
      historic,
      h("div", { class: "graph-body" }, dagBox, detail)),
    h("section", { class: "card" }, tabBar, Object.values(tabs).map((t) => t.panel)));

  function showTab(key) {
    activeTab = key;
    for (const [k, tab] of Object.entries(tabs)) {
      tab.panel.hidden = k !== key;
      tab.button.classList.toggle("active", k === key);
      tab.button.setAttribute("aria-selected", String(k === key));
    }
    if (key === "timeline") loadTimeline();
  }

  // Summary -------------------------------------------------------------------------
  function renderSummary() {
    const d = st.describe || {};
    const g = st.graph || {};
    const state = d.state || g.state || "submitted";
    replace(titleState, pill(state, { testid: "workflow-state" }),
      g.paused ? pill("paused", { testid: "workflow-paused" }) : null,
      d.name || g.name ? h("span", { class: "wf-name" }, d.name || g.name) : null);
    const problems = Array.isArray(d.problems) ? d.problems : [];
    replace(reasonBox,
      d.reason || g.reason ? h("p", { class: state === "completed" ? "muted" : "error-text" }, d.reason || g.reason) : null,
      problems.length ? h("ul", { class: "problems" }, problems.map((p) => h("li", {}, compact(p, 300)))) : null,
      d.failed_task ? h("p", { class: "error-text" }, "Failed task: ", h("span", { class: "mono" }, d.failed_task)) : null);
    reasonBox.hidden = !reasonBox.firstChild;
    const created = toDate(d.created_at);
    const finished = toDate(d.finished_at);
    const rows = [
      ["Created", fmtTime(d.created_at)],
      ["Finished", finished ? fmtTime(d.finished_at) : "—"],
      ["Duration", created ? fmtDuration(((finished || new Date()) - created) / 1000) : "—"],
      ["Tasks", d.counts ? compact(d.counts) : `${(g.nodes || []).length}`],
    ];
    if (d.parent) rows.push(["Parent", wfLink(typeof d.parent === "string" ? d.parent : d.parent.workflow_id || d.parent.id, "parent-link")]);
    if (d.origin) rows.push(["Origin", originNode(d.origin)]);
    if (d.resumes) rows.push(["Resumes", compact(d.resumes)]);
    if (d.route) rows.push(["Route", compact(d.route)]);
    const usage = d.llm_usage;
    if (usage && usage.calls) rows.push(["LLM usage", compact(usage)]);
    replace(meta, rows.map(([k, v]) => h("div", { class: "meta-item" }, h("dt", {}, k), h("dd", {}, v))));
    const output = d.output !== undefined ? d.output : g.output;
    const empty = output === null || output === undefined ||
      (typeof output === "object" && Object.keys(output).length === 0 && !ENDED.has(state));
    if (!empty) {
      const open = outputBox.open;
      replace(outputBox, h("summary", {}, "Workflow output"), pre(output, { testid: "workflow-output" }));
      outputBox.open = open;
      outputBox.hidden = false;
    } else {
      outputBox.hidden = true;
    }
    renderSteering(state, Boolean(g.paused));
  }

  function wfLink(target, testid) {
    if (!target) return "—";
    return h("a", { href: `#/workflows/${encodeURIComponent(target)}`, class: "mono", testid }, String(target));
  }

  function originNode(origin) {
    if (typeof origin === "string") return wfLink(origin, "origin-link");
    const from = origin.workflow_id || origin.forked_from || origin.from || origin.id;
    return h("span", {}, from ? wfLink(from, "origin-link") : null, " ", h("span", { class: "muted small" }, compact(origin)));
  }

  // Steering ------------------------------------------------------------------------
  let steerState = null;
  function renderSteering(state, paused) {
    const key = `${state}|${paused}`;
    if (key === steerState) return;
    steerState = key;
    const ended = ENDED.has(state);
    const button = (action, label, { danger = false, enabled = true, form = null } = {}) => {
      const b = h("button", { type: "button", class: ["btn", danger && "btn-danger"], testid: `steer-${action}` }, label);
      b.disabled = !enabled;
      b.addEventListener("click", () => (form ? openForm(action, form) : steer(action, {})));
      return b;
    };
    replace(steerBar,
      button("pause", "Pause", { enabled: !ended && !paused }),
      button("resume", "Resume", { enabled: paused || state === "failed" }),
      button("feedback", "Feedback…", { enabled: !ended, form: "feedback" }),
      button("modify", "Modify…", { enabled: !ended, form: "modify" }),
      button("cancel", "Cancel…", { enabled: !ended, danger: true, form: "cancel" }),
      button("terminate", "Terminate…", { enabled: !ended, danger: true, form: "terminate" }));
  }

  function openForm(action) {
    const specs = {
      cancel: { label: "Reason for cancelling (tasks may finish cleanly)", field: "reason", submit: "Cancel workflow", danger: true },
      terminate: { label: "Reason for terminating (stops at once)", field: "reason", submit: "Terminate workflow", danger: true },
      feedback: { label: "Feedback for the running tasks", field: "text", submit: "Send feedback", area: true },
      modify: {
        label: 'Changes (JSON), e.g. {"add": [...], "remove": ["task"], "params": {"task": {...}}}',
        field: "changes", submit: "Apply changes", area: true, json: true,
      },
    };
    const spec = specs[action];
    const input = spec.area
      ? h("textarea", { rows: spec.json ? 6 : 3, class: spec.json ? "mono" : "", testid: "steer-input", spellcheck: "false" })
      : h("input", { type: "text", testid: "steer-input" });
    if (spec.json) {
      // Start from the params of the tasks that have not started (what modify may change).
      const params = {};
      for (const n of (st.graph && st.graph.nodes) || []) {
        if (n.state === "pending" && n.input && typeof n.input === "object") params[n.id] = n.input;
      }
      input.value = JSON.stringify({ params }, null, 2);
    }
    const submit = h("button", { type: "submit", class: ["btn", spec.danger ? "btn-danger" : "btn-primary"], testid: "steer-submit" }, spec.submit);
    const close = h("button", { type: "button", class: "btn btn-ghost" }, "Close");
    const form = h("form", { class: "card steer-form", testid: "steer-form", data: { action } },
      h("label", {}, spec.label, input), h("div", { class: "actions" }, close, submit));
    close.addEventListener("click", () => clear(steerForm));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      let value = input.value;
      if (spec.json) {
        try {
          value = JSON.parse(value);
        } catch (err) {
          notify(`Not valid JSON: ${err.message}`, "error");
          return;
        }
      }
      submit.disabled = true;
      const ok = await steer(action, { [spec.field]: value });
      submit.disabled = false;
      if (ok) clear(steerForm);
    });
    replace(steerForm, form);
    input.focus();
  }

  /** POST a steering action; show the answer (or the refusal) as a notice. */
  async function steer(action, body) {
    try {
      const answer = await post(wfPath(id, action), body);
      const by = answer && answer.by ? ` by ${answer.by}` : "";
      const summary = answer && answer.summary ? `: ${compact(answer.summary, 200)}` : "";
      notify(`${action} accepted${by}${summary}`, "ok");
      refreshSoon();
      return true;
    } catch (err) {
      notify(`${action} refused: ${err.message}`, "error");
      return false;
    }
  }

  // Approvals -----------------------------------------------------------------------
  /** A comment box with Approve and Reject for one gated task. */
  function decisionForm(node) {
    const comment = h("input", { type: "text", placeholder: "Comment (optional)", testid: "approval-comment",
      data: { task: node.id }, "aria-label": `Comment on ${node.id}` });
    const approve = h("button", { type: "button", class: "btn btn-approve", testid: "approve-button", data: { task: node.id } }, "Approve");
    const reject = h("button", { type: "button", class: "btn btn-danger", testid: "reject-button", data: { task: node.id } }, "Reject");
    const decide = async (action) => {
      approve.disabled = reject.disabled = true;
      const ok = await steer(action, { task: node.id, comment: comment.value });
      if (!ok) approve.disabled = reject.disabled = false;
    };
    approve.addEventListener("click", () => decide("approve"));
    reject.addEventListener("click", () => decide("reject"));
    return h("div", { class: "decision" }, comment, approve, reject);
  }

  let approvalKey = null;
  function renderApprovals() {
    const waiting = ((st.graph && st.graph.nodes) || []).filter((n) => n.waiting_approval);
    const key = waiting.map((n) => n.id).join("\u0000");
    if (key === approvalKey) return; // keep typed comments while polling
    approvalKey = key;
    if (!waiting.length) {
      clear(approvals);
      approvals.hidden = true;
      return;
    }
    approvals.hidden = false;
    replace(approvals, h("div", { class: "card approval-card" },
      h("h2", { class: "card-title" }, `Waiting for approval (${waiting.length})`),
      waiting.map((node) => h("div", { class: "approval-item", testid: "approval-item", data: { task: node.id } },
        h("div", {}, h("span", { class: "mono strong" }, node.id), " ",
          h("span", { class: "muted" }, node.capability || ""),
          node.note ? h("div", { class: "small" }, compact(node.note, 300)) : null),
        decisionForm(node)))));
  }

  // Task detail ---------------------------------------------------------------------
  function renderDetail() {
    const nodes = (st.shown && st.shown.nodes) || [];
    const node = nodes.find((n) => n.id === st.selected);
    dag.select(node ? node.id : null);
    if (!node) {
      replace(detail, h("p", { class: "muted" }, "Select a task to see its input, result and error."));
      return;
    }
    const started = toDate(node.started_at);
    const finished = toDate(node.finished_at);
    const rows = [
      ["Capability", node.capability],
      ["Attempts", node.attempts],
      ["Worker", node.worker],
      ["Agent", node.agent],
      ["Started", node.started_at ? fmtTime(node.started_at) : null],
      ["Finished", node.finished_at ? fmtTime(node.finished_at) : null],
      ["Duration", started ? fmtDuration(((finished || new Date()) - started) / 1000) : null],
      ["Depends on", (node.depends_on || []).join(", ")],
    ];
    if (node.wait) rows.push(["Waits for", node.wait.kind === "signal" ? `signal ${node.wait.signal}` : node.wait.kind]);
    if (node.gate) rows.push(["Approval", node.waiting_approval ? "waiting for a decision" : "gated"]);
    const live = st.until === null;
    replace(detail,
      h("div", { class: "detail-head" }, h("h3", { class: "mono", testid: "task-detail-id" }, node.id), pill(node.state, { testid: "task-detail-state" })),
      node.child ? h("p", {}, "Child workflow: ", wfLink(node.child, "child-link")) : null,
      h("dl", { class: "kv" }, rows.filter(([, v]) => v !== null && v !== undefined && v !== "")
        .map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
      live && node.waiting_approval ? decisionForm(node) : null,
      live && node.wait && node.wait.kind === "signal" && node.state === "waiting" ? signalForm(node.wait.signal) : null,
      live && (node.state === "failed" || node.state === "cancelled") && st.graph && st.graph.state === "failed"
        ? rerunButton(node.id) : null,
      node.description ? h("p", { class: "muted small" }, node.description) : null,
      node.note ? section("Note", pre(node.note, { testid: "task-note" })) : null,
      node.error ? section("Error", errorView(node.error)) : null,
      node.result !== null && node.result !== undefined ? section("Result", pre(node.result, { testid: "task-result" })) : null,
      node.input !== null && node.input !== undefined ? section("Input", pre(node.input, { testid: "task-input" })) : null);
  }

  function section(title, body) {
    return h("div", { class: "detail-section" }, h("h4", {}, title), body);
  }

  function errorView(error) {
    if (typeof error !== "object") return pre(error, { testid: "task-error", class: "code error" });
    const { type, message, ...rest } = error;
    return h("div", { testid: "task-error", class: "error-box" },
      h("div", { class: "strong" }, type || "error"), h("div", { class: "error-text" }, message || ""),
      Object.keys(rest).length ? pre(rest) : null);
  }

  /** Send the signal a wait node waits for, with JSON data (its result). */
  function signalForm(name) {
    const data = h("textarea", { rows: 2, class: "mono", testid: "signal-data", spellcheck: "false",
      "aria-label": `Data of signal ${name}` });
    data.value = "null";
    const send = h("button", { type: "button", class: "btn btn-primary", testid: "signal-button" }, `Send signal ${name}`);
    send.addEventListener("click", async () => {
      let value;
      try {
        value = JSON.parse(data.value || "null");
      } catch (err) {
        notify(`Not valid JSON: ${err.message}`, "error");
        return;
      }
      send.disabled = true;
      try {
        await post(wfPath(id, `signals/${encodeURIComponent(name)}`), { data: value });
        notify(`signal ${name} sent`, "ok");
        refreshSoon();
      } catch (err) {
        notify(`signal refused: ${err.message}`, "error");
      } finally {
        send.disabled = false;
      }
    });
    return h("div", { class: "signal-form" }, data, send);
  }

  function rerunButton(task) {
    const b = h("button", { type: "button", class: "btn", testid: "rerun-button" }, "Resume from this task");
    b.addEventListener("click", () => steer("resume", { from_task: task }));
    return b;
  }

  // Graph and time travel -----------------------------------------------------------
  const slider = h("input", { type: "range", min: 0, max: 0, step: 1, value: 0, testid: "time-slider",
    "aria-label": "Show the state at event", class: "slider" });
  const travelLabel = h("span", { class: "travel-label", testid: "time-label" }, "Live");
  const liveButton = h("button", { type: "button", class: "btn btn-small", testid: "time-live" }, "Back to live");
  const forkButton = h("button", { type: "button", class: "btn btn-small", testid: "fork-button" }, "Fork from here");
  replace(travel, h("span", { class: "travel-title" }, "State at event"), slider, travelLabel, liveButton, forkButton);

  const travelTo = debounce(() => loadGraph(), 150);
  slider.addEventListener("input", () => {
    const i = Number(slider.value);
    st.until = i >= st.events.length ? null : st.events[i - 1] ? st.events[i - 1].seq : null;
    renderTravel();
    travelTo();
  });
  liveButton.addEventListener("click", () => pinAt(null));
  forkButton.addEventListener("click", async () => {
    forkButton.disabled = true;
    try {
      const forked = await post(wfPath(id, "fork"), { at: st.until });
      notify(`Forked as ${forked.id}`, "ok");
      location.hash = `#/workflows/${encodeURIComponent(forked.id)}`;
    } catch (err) {
      notify(`fork refused: ${err.message}`, "error");
    } finally {
      forkButton.disabled = false;
    }
  });

  /** Show the state as of stream sequence `seq` (null: live). */
  function pinAt(seq) {
    st.until = seq;
    renderTravel();
    loadGraph();
  }

  function renderTravel() {
    const n = st.events.length;
    slider.max = String(Math.max(n, 1));
    slider.min = n ? "1" : "0";
    if (st.until === null) {
      slider.value = String(n);
      travelLabel.textContent = n ? `Live · ${n} events` : "Live · no events yet";
      liveButton.disabled = true;
      forkButton.textContent = "Fork from latest";
    } else {
      const i = st.events.findIndex((e) => e.seq === st.until);
      slider.value = String(i + 1);
      const e = st.events[i];
      travelLabel.textContent = e
        ? `Event ${i + 1} of ${n} · #${e.seq} ${e.type}${e.task_id ? ` (${e.task_id})` : ""} · ${fmtClock(e.timestamp)}`
        : `As of #${st.until}`;
      liveButton.disabled = false;
      forkButton.textContent = "Fork from this event";
    }
    historic.hidden = st.until === null;
    replace(historic, st.until === null ? "" :
      `Showing the state as of event #${st.until} (replay --until ${st.until}). Steering acts on the live workflow.`);
    for (const row of eventBody.querySelectorAll("tr.event")) {
      row.classList.toggle("future", st.until !== null && Number(row.dataset.seq) > st.until);
      row.classList.toggle("current", st.until !== null && Number(row.dataset.seq) === st.until);
    }
  }

  let graphRequest = 0;
  async function loadGraph() {
    const ticket = ++graphRequest;
    const until = st.until;
    try {
      const graph = await get(wfPath(id, "graph"), until === null ? {} : { until });
      if (st.stopped || ticket !== graphRequest) return;
      if (until === null) st.graph = graph;
      st.shown = graph;
      if (!st.autoSelected && !st.selected) {
        const pick = (graph.nodes || []).find((n) => n.waiting_approval) || (graph.nodes || []).find((n) => n.state === "failed");
        if (pick) st.selected = pick.id;
      }
      dag.update(graph);
      dagBox.parentElement.parentElement.classList.toggle("historic", until !== null);
      renderDetail();
      if (until === null) {
        renderApprovals();
        renderSummary();
        st.ended = ENDED.has(graph.state);
      }
    } catch (err) {
      if (!st.stopped && err.status !== 401) {
        // (Only the summary's 404 stops the page: a workflow just submitted may
        // have no graph for a moment.) The next graph is drawn afresh.
        dag.signature = null;
        replace(dagBox, h("p", { class: "error-text", testid: "workflow-missing" },
          err.status === 404 ? `No workflow ${id}.` : err.message));
      }
    }
  }

  async function loadDescribe() {
    try {
      st.describe = await get(wfPath(id));
      if (!st.stopped) renderSummary();
    } catch (err) {
      if (!st.stopped && err.status === 404) {
        st.missing = true;
        reasonBox.hidden = false;
        reasonBox.textContent = `No workflow ${id}: it does not exist, or you may not see it.`;
      }
    }
  }

  // Events --------------------------------------------------------------------------
  const eventFilter = h("input", { type: "search", placeholder: "Filter by type or task…", testid: "event-filter",
    "aria-label": "Filter events" });
  const eventCount = h("span", { class: "muted small", testid: "event-count" });
  const followToggle = h("input", { type: "checkbox", checked: true, testid: "event-follow" });
  const eventBody = h("tbody");
  const eventTable = h("table", { class: "table events", testid: "event-list" },
    h("thead", {}, h("tr", {}, ["", "Seq", "Time", "Type", "Task", "Att.", "Source", "Vector clock", ""].map((t) => h("th", {}, t)))),
    eventBody);
  replace(tabs.events.panel,
    h("div", { class: "panel-tools" }, eventFilter, eventCount,
      h("label", { class: "inline-label" }, followToggle, "follow new events")),
    h("div", { class: "table-wrap events-wrap" }, eventTable),
    h("p", { class: "muted small" }, "∥ marks an event concurrent with the one before it: neither vector clock " +
      "happened before the other (as agenticflow replay shows)."));
  eventFilter.addEventListener("input", debounce(() => rerenderEvents(), 200));

  function matchesFilter(e) {
    const f = eventFilter.value.trim().toLowerCase();
    return !f || String(e.type).toLowerCase().includes(f) || String(e.task_id || "").toLowerCase().includes(f);
  }

  function eventRow(e, prev) {
    const par = prev && concurrent(prev.vclock, e.vclock);
    const clock = Object.entries(e.vclock || {}).map(([k, v]) => `${k}:${v}`).join(" ");
    const travelBtn = h("button", { type: "button", class: "btn btn-tiny", testid: "event-travel",
      title: "Show the state at this event", "aria-label": `Show the state at event ${e.seq}` }, clockIcon());
    travelBtn.addEventListener("click", (event) => {
      event.stopPropagation();
      pinAt(e.seq);
    });
    const row = h("tr", { class: ["event", eventCategory(e.type)], testid: "event-row",
      data: { seq: e.seq, type: e.type, task: e.task_id || null, concurrent: par ? "true" : "false" } },
    h("td", { class: "par", title: par ? `concurrent with #${prev.seq}` : "" },
      par ? h("span", { testid: "event-concurrent", class: "par-mark" }, "∥") : ""),
    h("td", { class: "mono small" }, String(e.seq)),
    h("td", { class: "mono small nowrap", title: fmtTime(e.timestamp) }, fmtClock(e.timestamp)),
    h("td", {}, h("span", { class: ["ev-type", eventCategory(e.type)], testid: "event-type" }, e.type)),
    h("td", { class: "mono small" }, e.task_id || ""),
    h("td", { class: "small" }, e.attempt ?? ""),
    h("td", { class: "mono small clip" }, e.source || ""),
    h("td", { class: "mono small vclock", testid: "event-vclock" }, clock),
    h("td", {}, travelBtn));
    row.addEventListener("click", () => {
      const open = row.nextSibling && row.nextSibling.classList && row.nextSibling.classList.contains("event-data");
      if (open) {
        row.nextSibling.remove();
        return;
      }
      row.after(h("tr", { class: "event-data", testid: "event-data" },
        h("td", { colspan: 9 }, pre({ id: e.id, source: e.source, vclock: e.vclock, data: e.data }))));
    });
    return row;
  }

  function rerenderEvents() {
    clear(eventBody);
    let prev = null;
    for (const e of st.events) {
      if (matchesFilter(e)) eventBody.appendChild(eventRow(e, prev));
      prev = e;
    }
    eventCount.textContent = `${st.events.length} events`;
    renderTravel();
  }

  /** Add events (from the first fetch, the SSE feed or a poll) in stream order. */
  function addEvents(list) {
    let added = false;
    for (const e of list) {
      if (!e || st.seqs.has(e.seq)) continue;
      const prev = st.events[st.events.length - 1];
      if (prev && e.seq < prev.seq) {
        // out of order (should not happen): insert and redraw
        st.seqs.add(e.seq);
        st.events.push(e);
        st.events.sort((a, b) => a.seq - b.seq);
        rerenderEvents();
        added = true;
        continue;
      }
      st.seqs.add(e.seq);
      st.events.push(e);
      if (matchesFilter(e)) eventBody.appendChild(eventRow(e, prev));
      added = true;
    }
    if (added) {
      eventCount.textContent = `${st.events.length} events`;
      renderTravel();
      if (followToggle.checked && activeTab === "events") {
        const wrap = eventTable.parentElement;
        wrap.scrollTop = wrap.scrollHeight;
      }
    }
    return added;
  }

  const lastSeq = () => (st.events.length ? st.events[st.events.length - 1].seq : null);

  async function loadEvents() {
    try {
      const body = await get(wfPath(id, "events"), { after: lastSeq() });
      if (!st.stopped) addEvents(body.events || []);
    } catch (err) {
      if (!st.stopped && err.status !== 401 && err.status !== 404) notify(`events: ${err.message}`, "error");
    }
  }

  function followEvents() {
    const close = follow(withQuery(wfPath(id, "events/sse"), { after: lastSeq() }), {
      event: (e) => {
        if (addEvents([e])) {
          refreshSoon();
          settle();
        }
      },
      end: () => {
        st.ended = true;
        refreshSoon();
      },
      error: () => {
        // The feed was refused (e.g. too many open): fall back to the poll below.
        st.sseFailed = true;
      },
    });
    closers.push(close);
  }

  // Timeline ------------------------------------------------------------------------
  const ganttBox = h("div", { class: "gantt-wrap" });
  replace(tabs.timeline.panel, ganttBox,
    h("p", { class: "muted small" }, "One row per task, one bar per attempt, labelled with the worker that ran it."));
  async function loadTimeline() {
    try {
      const data = await get(wfPath(id, "timeline"));
      if (!st.stopped) renderGantt(ganttBox, data, { ended: st.ended });
    } catch (err) {
      if (!st.stopped && err.status !== 401) replace(ganttBox, h("p", { class: "error-text" }, err.message));
    }
  }

  // Streamed output -----------------------------------------------------------------
  const outputs = new Map();
  const outputList = h("div", { class: "outputs", testid: "output-list" });
  const outputEmpty = h("p", { class: "muted" }, "No streamed output yet.");
  replace(tabs.output.panel, outputEmpty, outputList);

  function outputFor(task) {
    if (!outputs.has(task)) {
      const text = h("pre", { class: "code stream", testid: "output-text" });
      const notes = h("ul", { class: "stream-notes" });
      const head = h("div", { class: "output-head" }, h("span", { class: "mono strong" }, task));
      const box = h("div", { class: "output-task", testid: "output-task", data: { task } }, head, text, notes);
      outputs.set(task, { text, notes, head, tokens: 0, attempt: null });
      outputList.appendChild(box);
      outputEmpty.hidden = true;
    }
    return outputs.get(task);
  }

  function onChunk(chunk) {
    const out = outputFor(chunk.task_id || "?");
    const data = chunk.data;
    const text = typeof data === "string" ? data : asText(data, 0);
    if (chunk.attempt !== undefined && chunk.attempt !== out.attempt) {
      // A retry streams again from the start: mark where each attempt begins.
      if (out.attempt !== null) out.text.appendChild(document.createTextNode(`\n── attempt ${chunk.attempt} ──\n`));
      out.attempt = chunk.attempt;
    }
    switch (chunk.kind) {
      case "token":
        if (chunk.encoding && chunk.encoding !== "utf-8" && chunk.encoding !== "text") {
          out.text.appendChild(document.createTextNode(`[${chunk.encoding} data, ${text.length} chars]`));
        } else {
          out.text.appendChild(document.createTextNode(text));
        }
        out.tokens += 1;
        break;
      case "dropped":
        out.notes.appendChild(h("li", { class: "warn" }, `Output dropped: ${text}`));
        break;
      default:
        out.notes.appendChild(h("li", {}, h("span", { class: "muted" }, `${chunk.kind} · ${fmtClock(chunk.at_ns)} `), text));
    }
    out.head.dataset.chunks = String(out.tokens);
  }

  function followOutput() {
    closers.push(follow(wfPath(id, "stream/sse"), { chunk: onChunk }));
  }

  // Diff ----------------------------------------------------------------------------
  const diffInput = h("input", { type: "text", placeholder: "Another workflow id", testid: "diff-input", class: "mono grow",
    "aria-label": "Workflow to compare with" });
  const diffButton = h("button", { type: "button", class: "btn btn-primary", testid: "diff-button" }, "Compare histories");
  const diffResult = h("div", { class: "diff-result", testid: "diff-result" });
  replace(tabs.diff.panel,
    h("p", { class: "muted" }, "Compare this run's event history with another run's (e.g. a fork): the first event where they differ."),
    h("div", { class: "panel-tools" }, diffInput, diffButton), diffResult);
  const runDiff = async () => {
    const other = diffInput.value.trim();
    if (!other) return;
    try {
      const d = await get(wfPath(id, "diff"), { other });
      replace(diffResult,
        h("p", { class: d.same ? "ok-text strong" : "error-text strong", testid: "diff-verdict" },
          d.same ? "Same history." : `The histories differ${d.why ? `: ${d.why}` : "."}`),
        d.first || d.second ? h("div", { class: "two-cols" },
          h("div", {}, h("h4", {}, `This run (${id})`), pre(d.first ?? "(no event)")),
          h("div", {}, h("h4", {}, `Other run (${other})`), pre(d.second ?? "(no event)"))) : null);
    } catch (err) {
      replace(diffResult, h("p", { class: "error-text", testid: "diff-verdict" }, err.message));
    }
  };
  diffButton.addEventListener("click", runDiff);
  diffInput.addEventListener("keydown", (e) => { if (e.key === "Enter") runDiff(); });

  // Refresh loop --------------------------------------------------------------------
  const refreshSoon = debounce(() => {
    if (st.stopped) return;
    if (st.until === null) loadGraph();
    loadDescribe();
    if (activeTab === "timeline") loadTimeline();
  }, 300);

  // The state we read can lag the feed by up to a second (an intervention seen
  // over SSE, not yet folded): read it once more when the events pause.
  const settle = debounce(() => refreshSoon(), 1500);

  async function safetyPoll() {
    if (st.stopped || st.missing) return;
    if (!st.ended || st.sseFailed) {
      if (st.sseFailed) await loadEvents();
      refreshSoon();
    }
    pollTimer = setTimeout(safetyPoll, SAFETY_POLL_MS);
  }

  (async () => {
    showTab(activeTab);
    renderTravel();
    await Promise.all([loadGraph(), loadDescribe(), loadEvents()]);
    if (st.stopped || st.missing) return;
    const d = st.describe || {};
    if (d.origin && !diffInput.value) {
      const from = typeof d.origin === "string" ? d.origin : d.origin.workflow_id || d.origin.forked_from || d.origin.from;
      if (typeof from === "string") diffInput.value = from;
    }
    followEvents();
    followOutput();
    pollTimer = setTimeout(safetyPoll, SAFETY_POLL_MS);
  })();

  return () => {
    st.stopped = true;
    closers.forEach((close) => close());
    clearTimeout(pollTimer);
    refreshSoon.cancel();
    settle.cancel();
    travelTo.cancel();
  };
}
