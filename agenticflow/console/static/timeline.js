// The timeline: a Gantt chart in SVG, one row per task, one bar per attempt,
// each bar coloured by its outcome and labelled with the worker that ran it.
import { s, stateClass, fmtDuration, fmtClock } from "./dom.js";

const LABEL_W = 170;
const CHART_W = 820;
const ROW_H = 28;
const BAR_H = 16;
const AXIS_H = 26;

/** A "nice" tick step (1, 2, 5 x 10^n seconds) giving about `target` ticks. */
function tickStep(spanS, target = 6) {
  const raw = spanS / target;
  const exp = 10 ** Math.floor(Math.log10(raw || 1e-3));
  for (const m of [1, 2, 5, 10]) if (raw <= m * exp) return m * exp;
  return 10 * exp;
}

/** Render the timeline payload ({spans, start_ns, end_ns}) into container
 *  (ended: the workflow has ended, so open attempts stop at end_ns). */
export function renderGantt(container, data, { ended = false } = {}) {
  while (container.firstChild) container.removeChild(container.firstChild);
  const spans = (data && data.spans) || [];
  if (!spans.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "No attempt has started yet.";
    container.appendChild(p);
    return;
  }
  // An attempt still open runs to now, or to the last event once the workflow has ended.
  const nowNs = (ended && Number(data.end_ns)) || Date.now() * 1e6;
  const start = Number(data.start_ns) || Math.min(...spans.map((x) => Number(x.start_ns)));
  const endOf = (x) => (x.end_ns === null || x.end_ns === undefined ? nowNs : Number(x.end_ns));
  const end = Math.max(Number(data.end_ns) || 0, ...spans.map(endOf), start + 1e6);
  const spanS = (end - start) / 1e9;
  const x = (ns) => LABEL_W + ((ns - start) / (end - start)) * (CHART_W - 10);

  // Rows in order of each task's first start.
  const rows = [];
  const rowOf = new Map();
  for (const span of [...spans].sort((a, b) => a.start_ns - b.start_ns)) {
    if (!rowOf.has(span.task)) {
      rowOf.set(span.task, rows.length);
      rows.push(span.task);
    }
  }
  const height = AXIS_H + rows.length * ROW_H + 8;
  const width = LABEL_W + CHART_W;
  const svg = s("svg", { class: "gantt", testid: "gantt", viewBox: `0 0 ${width} ${height}`, width, height,
    role: "img", "aria-label": "Timeline of attempts" });

  // Axis: ticks relative to the workflow's first attempt.
  const step = tickStep(spanS);
  const axis = s("g", { class: "axis" });
  for (let t = 0; t <= spanS + 1e-9; t += step) {
    const tx = x(start + t * 1e9);
    axis.appendChild(s("line", { x1: tx, x2: tx, y1: AXIS_H - 6, y2: height, class: "grid" }));
    axis.appendChild(s("text", { x: tx, y: AXIS_H - 10, "text-anchor": "middle", class: "tick" },
      `+${fmtDuration(t)}`));
  }
  svg.appendChild(axis);

  rows.forEach((task, i) => {
    const y = AXIS_H + i * ROW_H;
    if (i % 2 === 0) svg.appendChild(s("rect", { class: "row-band", x: 0, y, width, height: ROW_H }));
    const label = task.length > 22 ? `${task.slice(0, 21)}…` : task;
    svg.appendChild(s("text", { class: "row-label", x: 8, y: y + ROW_H / 2 + 4 }, s("title", {}, task), label));
  });

  for (const span of spans) {
    const row = rowOf.get(span.task);
    const y = AXIS_H + row * ROW_H + (ROW_H - BAR_H) / 2;
    const x0 = x(Number(span.start_ns));
    const x1 = x(endOf(span));
    const w = Math.max(3, x1 - x0);
    const open = span.end_ns === null || span.end_ns === undefined;
    const outcome = span.outcome || (open ? "running" : "completed");
    const seconds = (endOf(span) - Number(span.start_ns)) / 1e9;
    const who = [span.worker, span.agent].filter(Boolean).join(" / ") || "unknown worker";
    const bar = s("g", {
      class: ["gantt-bar", stateClass(outcome), open && "open"], testid: "gantt-bar",
      data: { task: span.task, attempt: span.attempt, worker: span.worker, outcome },
    },
    s("title", {}, `${span.task} · attempt ${span.attempt}\n${who}\n${outcome} · ${fmtDuration(seconds)}` +
      `\nstarted ${fmtClock(span.start_ns)}`),
    s("rect", { x: x0, y, width: w, height: BAR_H, rx: 3 }));
    // The worker's name inside the bar when it fits, else after it when the
    // row has room (no later attempt starts right after), else only in the title.
    const text = `${span.worker || "?"} #${span.attempt}`;
    const inside = w > text.length * 6.2 + 10;
    const nextStart = Math.min(Infinity, ...spans.filter((o) => o.task === span.task && Number(o.start_ns) > Number(span.start_ns))
      .map((o) => x(Number(o.start_ns))));
    if (!inside && x0 + w + 8 + text.length * 6.2 > nextStart) {
      svg.appendChild(bar);
      continue;
    }
    // Past the right edge: the label goes before the bar instead.
    const before = !inside && x0 + w + 4 + text.length * 6.2 > width;
    bar.appendChild(s("text", {
      class: inside ? "bar-label inside" : "bar-label",
      x: inside ? x0 + 5 : before ? x0 - 4 : x0 + w + 4,
      y: y + BAR_H - 4,
      "text-anchor": before ? "end" : "start",
    }, text));
    svg.appendChild(bar);
  }
  container.appendChild(svg);
}
