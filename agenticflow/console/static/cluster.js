// The cluster: throughput, coordinators and partitions, workers and agent
// instances (FSM states, versions), queues and lag, tool breakers and rate
// limits, dead letters (with Retry) and the audit chain. Polled every 2 s.
import { get, post, wfPath } from "./api.js";
import { h, pill, replace, table, card, compact, fmtNumber, fmtAgo, fmtTime, notify } from "./dom.js";

const POLL_MS = 2000;

const rate = (x) => (x === null || x === undefined ? "—" : `${fmtNumber(x, 1)}/s`);
const count = (x) => fmtNumber(x);
const wfLink = (id) => h("a", { href: `#/workflows/${encodeURIComponent(id)}`, class: "mono" }, String(id));

function tile(label, value, testid) {
  return h("div", { class: "tile", testid }, h("div", { class: "tile-value" }, value), h("div", { class: "tile-label" }, label));
}

/** A dict of counts ({idle: 2, busy: 1}) as pills with numbers. */
function statePills(states) {
  const entries = Object.entries(states || {});
  if (!entries.length) return "—";
  return h("span", { class: "pills" }, entries.map(([k, n]) => h("span", { class: "pill-count" }, pill(k), ` ${n}`)));
}

/** The registry has one entry per agent of each worker ({worker, agent, capabilities,
 *  version, instances, idle, suspended, open_breakers, heartbeat, app}); the
 *  Workers table shows one row per worker node, its agents and their versions. */
function workerRows(entries) {
  const byNode = new Map();
  for (const e of entries) {
    const node = e.worker || e.node || e.instance || "?";
    if (!byNode.has(node)) {
      byNode.set(node, { node, app: e.app, agents: [], versions: {}, instances: 0, idle: 0, suspended: 0, breakers: [], heartbeat: 0 });
    }
    const w = byNode.get(node);
    if (e.agent) w.agents.push(e.agent);
    if (e.version !== null && e.version !== undefined) w.versions[e.agent || e.instance] = e.version;
    for (const [k, v] of Object.entries(e.versions || {})) w.versions[k] = v;
    w.instances += Number(e.instances) || 0;
    w.idle += Number(e.idle) || 0;
    w.suspended += Number(e.suspended) || 0;
    for (const b of e.open_breakers || []) if (!w.breakers.includes(String(b))) w.breakers.push(String(b));
    w.heartbeat = Math.max(w.heartbeat, Number(e.heartbeat) || 0);
  }
  return [...byNode.values()].sort((a, b) => a.node.localeCompare(b.node));
}

/** A card whose table is redrawn in place on every poll (scroll position kept). */
function section(title, ...tools) {
  const wrap = h("div", { class: "table-wrap" });
  const el = card(title, tools.length ? h("div", { class: "card-tools" }, tools) : null, wrap);
  return {
    el,
    fill(node) {
      const top = wrap.scrollTop;
      replace(wrap, node);
      wrap.scrollTop = top;
    },
  };
}

export function clusterPage(root) {
  let stopped = false;
  let timer = null;
  let last = null;
  const updated = h("span", { testid: "cluster-updated" }, "Loading…");

  // Instances can number in the hundreds: a filter and a state choice.
  const instanceFilter = h("input", { type: "search", placeholder: "Filter by agent, worker or id…", testid: "instance-filter",
    "aria-label": "Filter agent instances" });
  const instanceState = h("select", { testid: "instance-state-filter", "aria-label": "Instance state" },
    h("option", { value: "" }, "Any state"));
  const instanceCount = h("span", { class: "muted small", testid: "instance-count" });
  const rerender = () => { if (last) render(last); };
  instanceFilter.addEventListener("input", rerender);
  instanceState.addEventListener("change", rerender);

  const tiles = h("div", { class: "tiles" });
  const coordinators = section("Coordinators");
  const partitions = section("Partitions");
  const workersCard = section("Workers");
  const instancesCard = section("Agent instances", instanceFilter, instanceState, instanceCount);
  const agentsCard = section("Agents");
  const queuesCard = section("Queues");
  const toolsCard = section("Breakers and rate limits");
  const deadCard = section("Dead letters");
  const failuresCard = section("Recent failures");

  const auditResult = h("div", { class: "audit-result", testid: "audit-result" });
  const auditButton = h("button", { type: "button", class: "btn", testid: "audit-verify" }, "Verify audit chain");
  auditButton.addEventListener("click", async () => {
    auditButton.disabled = true;
    replace(auditResult, h("span", { class: "muted" }, "Verifying… (this reads the whole audit stream)"));
    try {
      const r = await post("/cluster/audit/verify", {});
      replace(auditResult,
        h("p", { class: r.ok ? "ok-text strong" : "error-text strong", testid: "audit-verdict", data: { ok: String(r.ok) } },
          r.ok ? `Audit chain intact: ${fmtNumber(r.records)} records verified.` :
            `Audit chain broken (${fmtNumber(r.records)} records read).`),
        (r.problems || []).length ? h("ul", { class: "problems" }, r.problems.map((p) => h("li", {}, compact(p, 400)))) : null);
    } catch (err) {
      replace(auditResult, h("p", { class: "error-text", testid: "audit-verdict" }, err.message));
    } finally {
      auditButton.disabled = false;
    }
  });
  const auditCard = card("Audit chain", h("p", { class: "muted" },
    "Each audit record is chained to the one before it (and signed in secure mode). Verification re-reads the chain."),
  h("div", { class: "actions left" }, auditButton), auditResult);

  replace(root,
    h("div", { class: "page-head" }, h("h1", {}, "Cluster"),
      h("div", { class: "page-head-side" }, h("span", { class: "live" }, h("span", { class: "live-dot" }), updated))),
    h("div", { class: "cluster" },
      tiles,
      h("div", { class: "two-cols" }, coordinators.el, partitions.el),
      workersCard.el, instancesCard.el, agentsCard.el, queuesCard.el,
      h("div", { class: "two-cols" }, toolsCard.el, deadCard.el),
      failuresCard.el, auditCard));

  let lastText = null;
  async function refresh() {
    clearTimeout(timer);
    if (document.hidden) {
      // A background tab does not poll; it catches up when shown again.
      timer = setTimeout(refresh, POLL_MS);
      return;
    }
    try {
      const data = await get("/cluster");
      if (stopped) return;
      const text = JSON.stringify(data);
      if (text !== lastText) {
        lastText = text;
        last = data;
        render(data);
      }
      updated.textContent = `Updated ${fmtTime(Date.now())}`;
    } catch (err) {
      if (stopped) return;
      updated.textContent = `Update failed: ${err.message}`;
      if (err.status === 401) return;
    }
    if (!stopped) timer = setTimeout(refresh, POLL_MS);
  }

  function render(data) {
    const view = data.view || {};
    const throughput = view.throughput || {};
    const workers = workerRows(data.workers || []);
    const instances = view.instances || [];
    const dead = data.dead_letters || [];
    const wf = view.workflows || {};
    const failures = (view.failures && view.failures.items) || [];

    replace(tiles,
      tile("Tasks / s", rate(throughput.tasks_per_s), "tile-tasks"),
      tile("Events / s", rate(throughput.events_per_s), "tile-events"),
      tile("Queue lag", count(view.lag), "tile-lag"),
      tile("Running workflows", count(wf.running), "tile-running"),
      tile("Workers", count(workers.length), "tile-workers"),
      tile("Agent instances", count(instances.length), "tile-instances"),
      tile("Dead letters", count(dead.length), "tile-dead"));

    coordinators.fill(table([
      { label: "Node", cell: (c) => h("span", { class: "mono" }, c.node) },
      { label: "State", cell: (c) => pill(c.state) },
      { label: "Workflows cached", class: "num", cell: (c) => count(c.workflows_cached) },
      { label: "Events folded", class: "num", cell: (c) => count(c.events_folded) },
      { label: "Heartbeat", cell: (c) => h("span", { title: fmtTime(c.heartbeat) }, fmtAgo(c.heartbeat)) },
    ], view.coordinators || [], { testid: "coordinators", empty: "No coordinator is registered.",
      rowProps: (c) => ({ testid: "coordinator-row", data: { node: c.node } }) }));

    partitions.fill(table([
      { label: "Partition", class: "num", cell: (p) => (p.partitions ? `${p.partition} of ${p.partitions}` : String(p.partition)) },
      { label: "Owner", cell: (p) => h("span", { class: "mono" }, p.owner || "unowned") },
      { label: "State", cell: (p) => (p.state ? pill(p.state) : "—") },
      { label: "Heartbeat", cell: (p) => (p.heartbeat ? h("span", { title: fmtTime(p.heartbeat) }, fmtAgo(p.heartbeat)) : "—") },
      { label: "Lease expires", cell: (p) => (p.expires_ns ? fmtTime(p.expires_ns) : "—") },
    ], data.partitions || [], { testid: "partitions", empty: "No partition is owned.",
      rowProps: (p) => ({ testid: "partition-row", data: { owner: p.owner } }) }));

    workersCard.fill(table([
      { label: "Node", cell: (w) => h("span", { class: "mono strong" }, w.node) },
      { label: "App", cell: (w) => w.app || "—" },
      { label: "Agents", cell: (w) => h("span", { class: "small" }, compact(w.agents, 240)) },
      { label: "Versions", cell: (w) => (Object.keys(w.versions).length ? compact(w.versions, 200) : "unversioned") },
      { label: "Instances", class: "num nowrap", cell: (w) => `${count(w.instances)} (${count(w.idle)} idle${w.suspended ? `, ${w.suspended} suspended` : ""})` },
      { label: "Open breakers", cell: (w) => (w.breakers.length ? h("span", { class: "error-text" }, w.breakers.join(", ")) : "none") },
      { label: "Heartbeat", class: "nowrap", cell: (w) => h("span", { title: fmtTime(w.heartbeat) }, fmtAgo(w.heartbeat)) },
    ], workers, { testid: "workers", empty: "No worker is registered.",
      rowProps: (w) => ({ testid: "worker-row", data: { node: w.node } }) }));

    // Instance state choices follow what exists; the current choice is kept.
    const states = [...new Set(instances.map((i) => i.state))].sort();
    const chosen = instanceState.value;
    replace(instanceState, h("option", { value: "" }, "Any state"), states.map((s) => h("option", { value: s }, s)));
    instanceState.value = states.includes(chosen) ? chosen : "";
    const needle = instanceFilter.value.trim().toLowerCase();
    const shown = instances.filter((i) => (!instanceState.value || i.state === instanceState.value) &&
      (!needle || [i.id, i.agent, i.worker].some((x) => String(x || "").toLowerCase().includes(needle))));
    instanceCount.textContent = shown.length === instances.length ? `${instances.length} instances` :
      `${shown.length} of ${instances.length} instances`;
    instancesCard.fill(table([
      { label: "Instance", cell: (i) => h("span", { class: "mono" }, i.id) },
      { label: "Agent", cell: (i) => i.agent },
      { label: "Worker", cell: (i) => h("span", { class: "mono" }, i.worker) },
      { label: "State", cell: (i) => h("span", {}, pill(i.state, { testid: "instance-state" }), i.suspending ? pill("suspending") : null) },
      { label: "Since", cell: (i) => h("span", { title: fmtTime(i.since) }, fmtAgo(i.since)) },
      { label: "Tasks done", class: "num", cell: (i) => count(i.tasks_done) },
    ], shown, { testid: "instances", empty: "No agent instance.",
      rowProps: (i) => ({ testid: "instance-row", data: { agent: i.agent, state: i.state } }) }));

    agentsCard.fill(table([
      { label: "Agent", cell: (a) => h("span", { class: "strong" }, a.agent) },
      { label: "Capabilities", cell: (a) => compact(a.capabilities, 160) },
      { label: "Workers", class: "num", cell: (a) => count(a.workers) },
      { label: "Instances", class: "num", cell: (a) => count(a.instances) },
      { label: "States", cell: (a) => statePills(a.states) },
      { label: "Tasks done", class: "num", cell: (a) => count(a.tasks_done) },
      { label: "Tasks / s", class: "num", cell: (a) => rate(a.tasks_per_s) },
    ], view.agents || [], { testid: "agents", rowProps: (a) => ({ testid: "agent-row", data: { agent: a.agent } }) }));

    queuesCard.fill(table([
      { label: "Queue", cell: (q) => h("span", { class: "mono" }, q.queue) },
      { label: "Consumer", cell: (q) => h("span", { class: "mono small" }, q.consumer) },
      { label: "Pending", class: "num", cell: (q) => count(q.pending) },
      { label: "In flight", class: "num", cell: (q) => count(q.in_flight) },
      { label: "Redelivered", class: "num", cell: (q) => count(q.redelivered) },
      { label: "Waiting pulls", class: "num", cell: (q) => count(q.waiting_pulls) },
      { label: "Delivered", class: "num", cell: (q) => count(q.delivered) },
      { label: "Rate", class: "num", cell: (q) => rate(q.delivered_per_s) },
      { label: "Workers", class: "num", cell: (q) => count(q.workers) },
      { label: "Lag", class: "num", cell: (q) => h("span", { class: q.lag > 0 ? "strong" : "" }, count(q.lag)) },
    ], view.queues || [], { testid: "queues", empty: "No task queue.",
      rowProps: (q) => ({ testid: "queue-row", data: { queue: q.queue, lag: q.lag } }) }));

    toolsCard.fill(table([
      { label: "Kind", cell: (x) => (x.role === "rate_limit" ? "rate limit" : x.role || "—") },
      { label: "Tool", cell: (x) => h("span", { class: "mono" }, x.tool) },
      { label: "State", cell: (x) => (x.state ? pill(x.state) : "—") },
      { label: "Details", cell: (x) => h("span", { class: "small muted" },
        compact(Object.fromEntries(Object.entries(x).filter(([k]) => !["role", "tool", "state"].includes(k))), 200)) },
    ], data.tools || [], { testid: "tools", empty: "No breaker or rate limit has state.",
      rowProps: (x) => ({ testid: "tool-row", data: { tool: x.tool, role: x.role } }) }));

    deadCard.fill(table([
      { label: "Workflow", cell: (d) => wfLink(d.workflow_id) },
      { label: "Task", cell: (d) => h("span", { class: "mono" }, d.task_id) },
      { label: "Attempt", class: "num", cell: (d) => String(d.attempt ?? "—") },
      { label: "Capability", cell: (d) => d.capability },
      { label: "Reason", cell: (d) => h("span", { class: "clip", title: compact(d.reason, 1000) }, compact(d.reason, 160)) },
      { label: "When", cell: (d) => h("span", { title: fmtTime(d.timestamp) }, fmtAgo(d.timestamp)) },
      { label: "", cell: (d) => retryButton(d) },
    ], dead, { testid: "dead-letters", empty: "No dead letter.",
      rowProps: (d) => ({ testid: "dead-letter-row", data: { workflow: d.workflow_id, task: d.task_id } }) }));

    failuresCard.el.hidden = !failures.length;
    failuresCard.fill(table([
      { label: "When", cell: (f) => h("span", { title: fmtTime(f.timestamp) }, fmtAgo(f.timestamp)) },
      { label: "Workflow", cell: (f) => wfLink(f.workflow_id) },
      { label: "Task", cell: (f) => h("span", { class: "mono" }, f.task_id || "—") },
      { label: "Error", cell: (f) => h("span", {}, h("span", { class: "strong" }, f.error_type || ""), " ", compact(f.message, 200)) },
      { label: "Worker", cell: (f) => h("span", { class: "mono small" }, f.worker || "—") },
    ], failures.slice(-50).reverse(), { testid: "failures" }));
  }

  function retryButton(d) {
    const b = h("button", { type: "button", class: "btn btn-small", testid: "retry-button" }, "Retry");
    b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        await post(wfPath(d.workflow_id, "resume"), { from_task: d.task_id });
        notify(`Retrying ${d.task_id} of ${d.workflow_id}`, "ok");
        refresh();
      } catch (err) {
        notify(`retry refused: ${err.message}`, "error");
        b.disabled = false;
      }
    });
    return b;
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
