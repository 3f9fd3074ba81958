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

export function clusterPage(root) {
  let stopped = false;
  let timer = null;
  const updated = h("span", { testid: "cluster-updated" }, "Loading…");
  const body = h("div", { class: "cluster" });
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
    body, auditCard);

  let lastText = null;
  async function refresh() {
    clearTimeout(timer);
    try {
      const data = await get("/cluster");
      if (stopped) return;
      const text = JSON.stringify(data);
      if (text !== lastText) {
        lastText = text;
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
    const workers = data.workers || [];
    const coordinators = view.coordinators || [];
    const instances = view.instances || [];
    const queues = view.queues || [];
    const tools = data.tools || [];
    const dead = data.dead_letters || [];
    const wf = view.workflows || {};
    const failures = (view.failures && view.failures.items) || [];

    replace(body,
      h("div", { class: "tiles" },
        tile("Tasks / s", rate(throughput.tasks_per_s), "tile-tasks"),
        tile("Events / s", rate(throughput.events_per_s), "tile-events"),
        tile("Queue lag", count(view.lag), "tile-lag"),
        tile("Running workflows", count(wf.running), "tile-running"),
        tile("Workers", count(workerRows(workers).length), "tile-workers"),
        tile("Agent instances", count(instances.length), "tile-instances"),
        tile("Dead letters", count(dead.length), "tile-dead")),

      h("div", { class: "two-cols" },
        card("Coordinators", table([
          { label: "Node", cell: (c) => h("span", { class: "mono" }, c.node) },
          { label: "State", cell: (c) => pill(c.state) },
          { label: "Workflows cached", class: "num", cell: (c) => count(c.workflows_cached) },
          { label: "Events folded", class: "num", cell: (c) => count(c.events_folded) },
          { label: "Heartbeat", cell: (c) => h("span", { title: fmtTime(c.heartbeat) }, fmtAgo(c.heartbeat)) },
        ], coordinators, { testid: "coordinators", rowProps: (c) => ({ testid: "coordinator-row", data: { node: c.node } }) })),
        card("Partitions", table([
          { label: "Partition", class: "num", cell: (p) => (p.partitions ? `${p.partition} of ${p.partitions}` : String(p.partition)) },
          { label: "Owner", cell: (p) => h("span", { class: "mono" }, p.owner || "unowned") },
          { label: "State", cell: (p) => (p.state ? pill(p.state) : "—") },
          { label: "Heartbeat", cell: (p) => (p.heartbeat ? h("span", { title: fmtTime(p.heartbeat) }, fmtAgo(p.heartbeat)) : "—") },
          { label: "Lease expires", cell: (p) => (p.expires_ns ? fmtTime(p.expires_ns) : "—") },
        ], data.partitions || [], { testid: "partitions", empty: "No partition is owned.",
          rowProps: (p) => ({ testid: "partition-row", data: { owner: p.owner } }) }))),

      card("Workers", table([
        { label: "Node", cell: (w) => h("span", { class: "mono strong" }, w.node) },
        { label: "App", cell: (w) => w.app || "—" },
        { label: "Agents", cell: (w) => compact(w.agents, 200) },
        { label: "Versions", cell: (w) => (Object.keys(w.versions).length ? compact(w.versions, 200) : "unversioned") },
        { label: "Instances", class: "num", cell: (w) => `${count(w.instances)} (${count(w.idle)} idle${w.suspended ? `, ${w.suspended} suspended` : ""})` },
        { label: "Open breakers", cell: (w) => (w.breakers.length ? h("span", { class: "error-text" }, w.breakers.join(", ")) : "none") },
        { label: "Heartbeat", cell: (w) => h("span", { title: fmtTime(w.heartbeat) }, fmtAgo(w.heartbeat)) },
      ], workerRows(workers), { testid: "workers", empty: "No worker is registered.",
        rowProps: (w) => ({ testid: "worker-row", data: { node: w.node } }) })),

      card("Agent instances", table([
        { label: "Instance", cell: (i) => h("span", { class: "mono" }, i.id) },
        { label: "Agent", cell: (i) => i.agent },
        { label: "Worker", cell: (i) => h("span", { class: "mono" }, i.worker) },
        { label: "State", cell: (i) => h("span", {}, pill(i.state, { testid: "instance-state" }), i.suspending ? pill("suspending") : null) },
        { label: "Since", cell: (i) => h("span", { title: fmtTime(i.since) }, fmtAgo(i.since)) },
        { label: "Tasks done", class: "num", cell: (i) => count(i.tasks_done) },
      ], instances, { testid: "instances", empty: "No agent instance.",
        rowProps: (i) => ({ testid: "instance-row", data: { agent: i.agent, state: i.state } }) })),

      card("Agents", table([
        { label: "Agent", cell: (a) => h("span", { class: "strong" }, a.agent) },
        { label: "Capabilities", cell: (a) => compact(a.capabilities, 160) },
        { label: "Workers", class: "num", cell: (a) => count(a.workers) },
        { label: "Instances", class: "num", cell: (a) => count(a.instances) },
        { label: "States", cell: (a) => statePills(a.states) },
        { label: "Tasks done", class: "num", cell: (a) => count(a.tasks_done) },
        { label: "Tasks / s", class: "num", cell: (a) => rate(a.tasks_per_s) },
      ], view.agents || [], { testid: "agents", rowProps: (a) => ({ testid: "agent-row", data: { agent: a.agent } }) })),

      card("Queues", table([
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
      ], queues, { testid: "queues", empty: "No task queue.", rowProps: (q) => ({ testid: "queue-row", data: { queue: q.queue } }) })),

      card("Breakers and rate limits", table([
        { label: "Kind", cell: (t) => (t.role === "rate_limit" ? "rate limit" : t.role || "—") },
        { label: "Tool", cell: (t) => h("span", { class: "mono" }, t.tool) },
        { label: "State", cell: (t) => (t.state ? pill(t.state) : "—") },
        { label: "Details", cell: (t) => h("span", { class: "small muted" },
          compact(Object.fromEntries(Object.entries(t).filter(([k]) => !["role", "tool", "state"].includes(k))), 200)) },
      ], tools, { testid: "tools", empty: "No breaker or rate limit has state.",
        rowProps: (t) => ({ testid: "tool-row", data: { tool: t.tool, role: t.role } }) })),

      card("Dead letters", table([
        { label: "Workflow", cell: (d) => wfLink(d.workflow_id) },
        { label: "Task", cell: (d) => h("span", { class: "mono" }, d.task_id) },
        { label: "Attempt", class: "num", cell: (d) => String(d.attempt ?? "—") },
        { label: "Capability", cell: (d) => d.capability },
        { label: "Reason", cell: (d) => h("span", { class: "clip", title: compact(d.reason, 1000) }, compact(d.reason, 160)) },
        { label: "When", cell: (d) => h("span", { title: fmtTime(d.timestamp) }, fmtAgo(d.timestamp)) },
        { label: "", cell: (d) => retryButton(d) },
      ], dead, { testid: "dead-letters", empty: "No dead letter.",
        rowProps: (d) => ({ testid: "dead-letter-row", data: { workflow: d.workflow_id, task: d.task_id } }) })),

      failures.length ? card("Recent failures", table([
        { label: "When", cell: (f) => fmtAgo(f.timestamp) },
        { label: "Workflow", cell: (f) => wfLink(f.workflow_id) },
        { label: "Task", cell: (f) => h("span", { class: "mono" }, f.task_id || "—") },
        { label: "Error", cell: (f) => h("span", {}, h("span", { class: "strong" }, f.error_type || ""), " ", compact(f.message, 200)) },
        { label: "Worker", cell: (f) => h("span", { class: "mono small" }, f.worker || "—") },
      ], failures.slice(-20).reverse(), { testid: "failures" })) : null);
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
