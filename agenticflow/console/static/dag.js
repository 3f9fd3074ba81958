// The workflow DAG, drawn in SVG by hand (no library):
//   1. layer = longest path from a root (Kahn's topological order);
//   2. an edge spanning several layers gets a virtual point per layer crossed,
//      so that it is routed around nodes and counted by the ordering;
//   3. nodes within a layer are ordered by the barycentre of their neighbours,
//      sweeping down then up a few times (reduces crossings);
//   4. left-to-right columns, edges as Bezier paths, colour per task state.
import { s, stateClass } from "./dom.js";

const W = 184; // node width
const H = 54; // node height
const COL_GAP = 88;
const ROW_GAP = 20;
const PAD = 24;
const SWEEPS = 4;

/** Positions for the nodes of a graph: {items, edges, width, height}. */
export function layout(nodes) {
  const byId = new Map();
  for (const node of nodes) byId.set(node.id, { id: node.id, node, up: [], down: [], layer: 0, pos: 0 });
  const deps = [];
  for (const node of nodes) {
    for (const dep of node.depends_on || []) {
      if (byId.has(dep) && dep !== node.id) deps.push([byId.get(dep), byId.get(node.id)]);
    }
  }
  // 1. Longest path from a root.
  const indegree = new Map([...byId.values()].map((it) => [it, 0]));
  const succ = new Map([...byId.values()].map((it) => [it, []]));
  for (const [a, b] of deps) {
    indegree.set(b, indegree.get(b) + 1);
    succ.get(a).push(b);
  }
  const order = [...byId.values()].filter((it) => indegree.get(it) === 0);
  for (let i = 0; i < order.length; i++) {
    for (const next of succ.get(order[i])) {
      next.layer = Math.max(next.layer, order[i].layer + 1);
      indegree.set(next, indegree.get(next) - 1);
      if (indegree.get(next) === 0) order.push(next);
    }
  }
  if (order.length < byId.size) {
    // A cycle cannot be a valid workflow; still show every node, after the rest.
    const seen = new Set(order);
    const last = Math.max(0, ...order.map((it) => it.layer)) + 1;
    for (const it of byId.values()) if (!seen.has(it)) it.layer = last;
  }
  const depth = Math.max(0, ...[...byId.values()].map((it) => it.layer)) + 1;
  const layers = Array.from({ length: depth }, () => []);
  for (const it of byId.values()) layers[it.layer].push(it);

  // 2. Virtual points on long edges (and edges that go "back" after a cycle).
  const edges = [];
  for (const [a, b] of deps) {
    const chain = [a];
    let prev = a;
    for (let l = a.layer + 1; l < b.layer; l++) {
      const v = { id: null, node: null, up: [prev], down: [], layer: l, pos: 0 };
      prev.down.push(v);
      layers[l].push(v);
      chain.push(v);
      prev = v;
    }
    if (b.layer > a.layer) {
      prev.down.push(b);
      b.up.push(prev);
    }
    chain.push(b);
    edges.push({ from: a, to: b, chain });
  }

  // 3. Barycentre ordering.
  const number = (layer) => layer.forEach((it, i) => { it.pos = i; });
  layers.forEach(number);
  const bary = (it, side) => {
    const ns = it[side];
    return ns.length ? ns.reduce((sum, n) => sum + n.pos, 0) / ns.length : it.pos;
  };
  for (let sweep = 0; sweep < SWEEPS; sweep++) {
    for (let l = 1; l < depth; l++) {
      const keys = new Map(layers[l].map((it) => [it, bary(it, "up")]));
      layers[l].sort((x, y) => keys.get(x) - keys.get(y) || x.pos - y.pos);
      number(layers[l]);
    }
    for (let l = depth - 2; l >= 0; l--) {
      const keys = new Map(layers[l].map((it) => [it, bary(it, "down")]));
      layers[l].sort((x, y) => keys.get(x) - keys.get(y) || x.pos - y.pos);
      number(layers[l]);
    }
  }

  // 4. Coordinates: one column per layer, each column centred vertically.
  const slot = H + ROW_GAP;
  const tallest = Math.max(1, ...layers.map((l) => l.length));
  for (const layer of layers) {
    const offset = ((tallest - layer.length) * slot) / 2;
    for (const it of layer) {
      it.x = PAD + it.layer * (W + COL_GAP);
      it.y = PAD + offset + it.pos * slot;
    }
  }
  return {
    items: [...byId.values()],
    edges,
    width: PAD * 2 + depth * W + (depth - 1) * COL_GAP,
    height: PAD * 2 + tallest * slot - ROW_GAP,
  };
}

/** The SVG path of an edge: right side of the source, through its virtual
 *  points (straight across a column), to the left side of the target. */
function edgePath(chain) {
  const mid = H / 2;
  const pts = [];
  chain.forEach((it, i) => {
    if (i > 0) pts.push([it.x, it.y + mid]);
    if (i < chain.length - 1) pts.push([it.x + W, it.y + mid]);
  });
  let d = `M${pts[0][0]},${pts[0][1]}`;
  for (let i = 1; i < pts.length; i++) {
    const [x0, y0] = pts[i - 1];
    const [x1, y1] = pts[i];
    if (i % 2 === 1) {
      const dx = (x1 - x0) / 2;
      d += ` C${x0 + dx},${y0} ${x1 - dx},${y1} ${x1},${y1}`;
    } else {
      d += ` L${x1},${y1}`; // across a virtual point's column
    }
  }
  return d;
}

const clip = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/** The small icons drawn on a node's corner. */
function gateIcon(waiting) {
  return s("g", { class: ["badge", "badge-gate", waiting && "badge-active"], testid: "gate-badge" },
    s("title", {}, waiting ? "Approval gate: waiting for a decision" : "Approval gate"),
    s("circle", { r: 9 }),
    // a gate: two posts and a bar
    s("path", { d: "M-4,5 V-4 M4,5 V-4 M-6,-1 H6 M-6,2.5 H6", class: "badge-glyph" }));
}

function waitIcon(wait) {
  const what = wait.kind === "signal" ? `Waits for signal ${wait.signal ?? ""}` : `Waits (${wait.kind})`;
  return s("g", { class: "badge badge-wait", testid: "wait-badge" },
    s("title", {}, what),
    s("circle", { r: 9 }),
    s("path", { d: "M0,-5 V0 L3.5,2.5", class: "badge-glyph" }));
}

function childIcon() {
  return s("g", { class: "badge badge-child", testid: "child-badge" },
    s("title", {}, "Child workflow: click to open"),
    s("circle", { r: 9 }),
    s("path", { d: "M-3,3 L4,-4 M-1,-4 H4 V1", class: "badge-glyph" }));
}

/** Fill a node group's content for its current state. */
function drawNode(g, node, selected) {
  while (g.firstChild) g.removeChild(g.firstChild);
  const state = node.state || "unknown";
  g.setAttribute("class", ["dag-node", stateClass(state), selected && "selected",
    node.waiting_approval && "waiting-approval"].filter(Boolean).join(" "));
  g.setAttribute("data-state", state);
  g.setAttribute("data-gate", node.gate ? "true" : "false");
  if (node.child) g.setAttribute("data-child", node.child);
  else g.removeAttribute("data-child");
  const attempts = node.attempts ? ` · attempt ${node.attempts}` : "";
  g.appendChild(s("title", {}, `${node.id}\n${node.capability ?? ""}\nstate: ${state}${attempts}` +
    (node.child ? `\nchild workflow: ${node.child}` : "")));
  g.appendChild(s("rect", { class: "node-box", width: W, height: H, rx: 8 }));
  g.appendChild(s("rect", { class: "node-stripe", width: 6, height: H, rx: 3 }));
  g.appendChild(s("text", { class: "node-title", x: 16, y: 22 }, clip(String(node.id), 21)));
  const sub = `${node.capability ?? "?"} · ${state.replace(/_/g, " ")}`;
  g.appendChild(s("text", { class: "node-sub", x: 16, y: 41 }, clip(sub, 26)));
  let corner = W - 4;
  const badge = (el) => {
    el.setAttribute("transform", `translate(${corner},4)`);
    g.appendChild(el);
    corner -= 22;
  };
  if (node.gate || node.waiting_approval) badge(gateIcon(node.waiting_approval));
  if (node.wait) badge(waitIcon(node.wait));
  if (node.child) badge(childIcon());
  if (node.attempts > 1) {
    g.appendChild(s("text", { class: "node-attempts", x: W - 8, y: H - 8, "text-anchor": "end" },
      `×${node.attempts}`));
  }
}

/**
 * A DAG view bound to a container. update(graph) redraws: when the structure
 * (ids, edges, children) is unchanged the nodes are recoloured in place, so a
 * live workflow does not flicker and clicks are not lost.
 */
export class DagView {
  constructor(container, { onSelect } = {}) {
    this.container = container;
    this.onSelect = onSelect || (() => {});
    this.signature = null;
    this.groups = new Map();
    this.selected = null;
    this.nodes = new Map();
  }

  select(id) {
    this.selected = id;
    for (const [nid, g] of this.groups) g.classList.toggle("selected", nid === id);
  }

  update(graph) {
    const nodes = graph.nodes || [];
    const signature = JSON.stringify(nodes.map((n) => [n.id, n.depends_on || [], n.child || null]));
    this.nodes = new Map(nodes.map((n) => [n.id, n]));
    if (signature === this.signature) {
      for (const node of nodes) drawNode(this.groups.get(node.id), node, node.id === this.selected);
      return;
    }
    this.signature = signature;
    this.groups.clear();
    const { items, edges, width, height } = layout(nodes);
    const svg = s("svg", {
      class: "dag", testid: "dag", viewBox: `0 0 ${width} ${height}`,
      width, height, role: "img", "aria-label": "Workflow graph",
    });
    svg.appendChild(s("defs", {},
      s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow-head" }))));
    const edgeLayer = s("g", { class: "edges" });
    for (const edge of edges) {
      if (edge.to.layer <= edge.from.layer) continue; // only after a cycle
      edgeLayer.appendChild(s("path", {
        class: ["edge", stateClass(edge.from.node.state)], d: edgePath(edge.chain), "marker-end": "url(#arrow)",
        data: { from: edge.from.id, to: edge.to.id },
      }));
    }
    svg.appendChild(edgeLayer);
    const nodeLayer = s("g", { class: "nodes" });
    for (const it of items) {
      const node = it.node;
      const g = s("g", { testid: "dag-node", data: { task: node.id }, transform: `translate(${it.x},${it.y})`,
        tabindex: 0, role: "button" });
      drawNode(g, node, node.id === this.selected);
      const choose = (event) => {
        // A child node opens the child workflow; a plain click elsewhere selects.
        const current = this.nodes.get(node.id) || node;
        if (current.child && (event.target.closest(".badge-child") || event.detail === 2)) {
          location.hash = `#/workflows/${encodeURIComponent(current.child)}`;
          return;
        }
        this.select(node.id);
        this.onSelect(node.id);
      };
      g.addEventListener("click", choose);
      g.addEventListener("dblclick", choose);
      g.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          this.select(node.id);
          this.onSelect(node.id);
        }
      });
      this.groups.set(node.id, g);
      nodeLayer.appendChild(g);
    }
    svg.appendChild(nodeLayer);
    while (this.container.firstChild) this.container.removeChild(this.container.firstChild);
    if (!nodes.length) {
      const empty = document.createElement("p");
      empty.className = "muted";
      empty.textContent = "No tasks yet.";
      this.container.appendChild(empty);
      return;
    }
    this.container.appendChild(svg);
  }
}

/** The colour legend shown under the graph. */
export const TASK_STATES = ["pending", "scheduled", "auction", "running", "waiting", "waiting_approval",
  "retry_wait", "completed", "failed", "skipped", "cancelled"];
