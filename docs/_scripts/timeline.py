"""Draw docs/images/timeline.svg: a workflow's spans as Perfetto shows them.

``.venv/bin/python docs/_scripts/timeline.py`` runs the trading example on a
throw-away nats-server (a coordinator and two workers in this process), takes
``agenticflow replay ID --format chrome-trace`` of it (the same export
function) and draws the spans: one row per worker and agent, one per
coordinator lane (queue waits, workflow events). ``--trace FILE`` draws a
trace you exported yourself instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from html import escape
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "images" / "timeline.svg"
EXAMPLES = Path(__file__).resolve().parents[2] / "agenticflow" / "examples"
ROW_H, LABEL_W, WIDTH, TOP = 26, 250, 1100, 48
CHAR_W = 6.6
"""Roughly the width of one character of the 12 px labels."""
COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1"]


async def record_trace() -> dict[str, Any]:
    """Run the trading example once and export its chrome trace."""
    from agenticflow.cluster.nats_server import NatsServer
    from agenticflow.coordinator.client import Client
    from agenticflow.coordinator.exports import to_chrome_trace
    from agenticflow.coordinator.service import Coordinator
    from agenticflow.examples.apps import app
    from agenticflow.shared.bus.transport import Bus
    from agenticflow.shared.graph.workflow import load_workflow_file
    from agenticflow.shared.ops.config import Settings
    from agenticflow.worker.runtime import Worker

    with tempfile.TemporaryDirectory() as store:
        server = NatsServer(store_dir=Path(store))
        server.start()
        try:
            settings = Settings(nats_url=server.url, prefix="tl")
            bus = await Bus.connect(settings, name="timeline")
            try:
                async with (
                    Coordinator(bus=bus, node_id="coordinator"),
                    Worker(bus=bus, app=app, node_id="worker-1", concurrency=4),
                    Worker(bus=bus, app=app, node_id="worker-2", concurrency=4),
                ):
                    client = Client(bus=bus, node_id="timeline")
                    flow = load_workflow_file(EXAMPLES / "trading" / "workflow.yaml")
                    # A first run opens the workers' pull requests; the second is drawn.
                    await client.wait(await client.submit(flow), timeout=60)
                    wid = await client.submit(flow, workflow_id="trade-timeline")
                    await client.wait(wid, timeout=60)
                    return to_chrome_trace(await client.events(wid))
            finally:
                await bus.close()
        finally:
            server.stop()


def _label(span: dict[str, Any]) -> str:
    return f"{span['name']} ({span['dur'] / 1000:.1f} ms)"


def _lanes(
    spans: list[dict[str, Any]], scale: float
) -> dict[tuple[int, int, int], list[dict[str, Any]]]:
    """Spans by (pid, tid, lane): a span goes to the first lane of its thread
    where it (and its label) does not overlap the one before, as Perfetto
    stacks overlapping slices."""
    lanes: dict[tuple[int, int, int], list[dict[str, Any]]] = {}
    ends: dict[tuple[int, int], list[float]] = {}
    for span in sorted(spans, key=lambda e: e["ts"]):
        start = span["ts"] * scale
        stop = max(span["dur"] * scale, 2.0) + start + 8 + CHAR_W * len(_label(span))
        taken = ends.setdefault((span["pid"], span["tid"]), [])
        lane = next((n for n, end in enumerate(taken) if end <= start), len(taken))
        if lane == len(taken):
            taken.append(stop)
        else:
            taken[lane] = stop
        lanes.setdefault((span["pid"], span["tid"], lane), []).append(span)
    return lanes


def draw(trace: dict[str, Any]) -> str:
    """The SVG of a chrome trace's spans and instants, Perfetto's layout."""
    events = trace["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in events if e["name"] == "thread_name"
    }
    spans = [e for e in events if e["ph"] == "X"]
    instants = [e for e in events if e["ph"] == "i"]
    end = max((e["ts"] + e.get("dur", 0) for e in spans + instants), default=1.0) or 1.0
    scale = (WIDTH - LABEL_W - 190) / end  # room for the last label
    lanes = _lanes(spans, scale)
    for instant in instants:
        lanes.setdefault((instant["pid"], instant["tid"], 0), [])
    for pid, tid in threads:
        lanes.setdefault((pid, tid, 0), [])
    rows = sorted(lanes)
    height = TOP + ROW_H * len(rows) + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#eeeeee"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#bbbbbb" stroke-width="3"/></pattern></defs>',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        '<text x="12" y="20" font-size="14" font-weight="bold">'
        "agenticflow replay --format chrome-trace (as Perfetto lays it out)</text>",
    ]
    for tick in range(6):
        ms = end / 1000 * tick / 5
        x = LABEL_W + ms * 1000 * scale
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP - 8}" x2="{x:.1f}" y2="{height - 24}" stroke="#e5e5e5"/>'
        )
        out.append(f'<text x="{x:.1f}" y="{TOP - 12}" fill="#666666">{ms:.1f} ms</text>')
    y_of: dict[tuple[int, int, int], float] = {}
    previous_pid = None
    colour_of: dict[str, str] = {}
    for n, key in enumerate(rows):
        y: float = TOP + n * ROW_H
        y_of[key] = y
        if n % 2 == 0:
            out.append(f'<rect x="0" y="{y}" width="{WIDTH}" height="{ROW_H}" fill="#f7f7f9"/>')
        if key[2] == 0:
            label = threads.get((key[0], key[1]), str(key[1]))
            if key[0] != previous_pid:
                label = f"{processes.get(key[0], key[0])} · {label}"
                previous_pid = key[0]
            out.append(f'<text x="12" y="{y + 17}" fill="#333333">{escape(label)}</text>')
        for span in lanes[key]:
            x, w = LABEL_W + span["ts"] * scale, max(2.0, span["dur"] * scale)
            queued = span.get("cat") == "queue"
            task = str(span["args"].get("task_id", span["name"]))
            colour = colour_of.setdefault(task, COLOURS[len(colour_of) % len(COLOURS)])
            out.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{ROW_H - 6}" rx="2" '
                f'fill="{"url(#hatch)" if queued else colour}"'
                f"{f' stroke={chr(34)}{colour}{chr(34)}' if queued else ''}>"
                f"<title>{escape(_label(span))}</title></rect>"
            )
            out.append(
                f'<text x="{x + w + 4:.1f}" y="{y + 17}" fill="#333333">'
                f"{escape(_label(span))}</text>"
            )
    for instant in instants:
        y = y_of[(instant["pid"], instant["tid"], 0)]
        x = LABEL_W + instant["ts"] * scale
        out.append(
            f'<path d="M{x:.1f},{y + 5} l5,8 l-5,8 l-5,-8 z" fill="#555555">'
            f"<title>{escape(instant['name'])}</title></path>"
        )
    out.append(
        f'<text x="12" y="{height - 8}" fill="#666666">a bar per task attempt on its worker '
        "and agent; hatched: waiting in the queue (outlined in the task's colour); "
        "diamonds: workflow.submitted, started, completed</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trace", type=Path, help="a chrome-trace JSON file to draw")
    args = parser.parse_args()
    trace = (
        json.loads(args.trace.read_text(encoding="utf-8"))
        if args.trace
        else asyncio.run(record_trace())
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(draw(trace), encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
