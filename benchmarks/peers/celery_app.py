"""The Celery side of W1-W3: a Redis broker and result backend, two no-op tasks.

The Redis URL comes from ``PEERS_REDIS_URL`` (set by
:mod:`benchmarks.peers.celery_bench` for itself and its workers).
"""

from __future__ import annotations

import os

from celery import Celery

REDIS_URL = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("peers", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=3600,
)


@app.task(name="peers.noop")  # type: ignore[untyped-decorator]
def noop(x: int) -> int:
    """Return the (small) input unchanged."""
    return x


@app.task(name="peers.join")  # type: ignore[untyped-decorator]
def join(xs: list[int]) -> int:
    """The diamond's last task: takes both branches' results."""
    return sum(xs)


__all__ = ["app", "join", "noop"]
