"""Metrics, health and logs of real coordinator and worker processes.

One cluster (coordinator and worker processes with ``AGENTICFLOW_METRICS_PORT=0``)
runs a completed workflow with a retry, a failed one and one whose capability
nobody serves; then the processes are found through their NATS micro
services, and their HTTP endpoints, Prometheus metrics and JSON logs are
checked against what happened.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.state import WorkflowStatus
from agenticflow.shared.bus.nats_backend import FetchTimeout
from agenticflow.shared.bus.nats_backend import NatsBus as Bus
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.ops.health import HealthService, cluster_health
from agenticflow.shared.ops.telemetry import TRACE_FILE_ENV
from agenticflow.shared.wire.codec import unpack
from tests.conftest import TEST_APP, unique_prefix
from tests.integration.helpers import agenticflow, run, spans_in, wf
from tests.support.natsbus import connected

Samples = dict[str, list[tuple[dict[str, str], float]]]


def samples(text: str) -> Samples:
    """Prometheus text as {sample name: [(labels, value)]}."""
    out: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name].append((dict(sample.labels), float(sample.value)))
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    """The sum of a sample's values over the series matching ``labels``."""
    return sum(
        v for have, v in found.get(name, []) if all(have.get(k) == x for k, x in labels.items())
    )


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{url}/metrics")
    assert response.status_code == 200
    return samples(response.text)


async def coordinator_heartbeat_after(bus: Bus, since_ns: int, *, timeout: float = 20) -> None:
    """Wait for a coordinator heartbeat stamped after ``since_ns``: its queue
    gauges were read after that moment."""
    store = await bus.kv(bus.names.agents_bucket)
    watcher = await store.watchall(inactive_threshold=5.0)
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    entry = await watcher.updates(timeout=1.0)
                except FetchTimeout:
                    continue
                info = unpack(entry.value) if entry is not None and entry.value else {}
                if info.get("role") == "coordinator" and info.get("heartbeat", 0) > since_ns:
                    return
    finally:
        await watcher.stop()


def by_kind(reports: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in reports if r["kind"] == kind]


async def test_metrics_health_and_logs_of_real_processes(
    nats_server: NatsServer, log_dir: Path, tmp_path: Path
) -> None:
    prefix = unique_prefix("obs")
    logs = log_dir / prefix
    async with (
        DevCluster(
            app=TEST_APP,
            workers=1,
            concurrency=4,
            nats_url=nats_server.url,
            prefix=prefix,
            log_dir=logs,
            settings={"heartbeat_s": 0.5, "metrics_port": 0, "log_format": "json"},
            env={TRACE_FILE_ENV: str(tmp_path / "spans-{pid}.jsonl")},
        ) as cluster,
        connected(cluster.settings, name="observability-test") as bus,
    ):
        client = Client(bus=bus, node_id="observability-test")
        good = await run(
            client,
            wf(
                {"id": "e", "capability": "echo", "params": {"x": 1}},
                {"id": "f", "capability": "flaky", "params": {"succeed_on": 2}},
                default_retry={"max_attempts": 3, "initial_interval_s": 0.05},
            ),
        )
        assert good.status == WorkflowStatus.COMPLETED
        bad = await run(client, wf({"id": "x", "capability": "fatal", "params": {"item": "q"}}))
        assert bad.status == WorkflowStatus.FAILED
        stuck = await client.submit(wf({"id": "n", "capability": "nobody"}))

        # Discovery through the micro services, as `nats micro` and `agenticflow health` do.
        reports = await cluster_health(bus, wait_s=20, expect=2)
        [coord], [work] = by_kind(reports, "coordinator"), by_kind(reports, "worker")
        assert coord["ready"]
        assert work["ready"]
        assert coord["coordinator"]["role"] == "active"
        assert work["worker"]["tasks_done"] == 4  # echo, flaky twice, fatal
        assert work["worker"]["capabilities"] == sorted(work["worker"]["capabilities"])
        assert "echo" in work["worker"]["capabilities"]
        for report in (coord, work):
            assert report["prefix"] == prefix
            assert report["nats"]["connected"]
            assert report["nats"]["reconnects"] == 0
            assert report["process"]["rss_bytes"] > 10 * 2**20
            assert report["process"]["pid"] in {
                p.pid for p in [*cluster.coordinators, *cluster.worker_procs]
            }
            assert report["http"].startswith("http://")
        # The per-instance health endpoint answers with the same report.
        reply = await bus.nc.request(f"{prefix}.health.{work['node']}", b"", timeout=5)
        assert json.loads(reply.data)["node"] == work["node"]
        ping = await bus.nc.request("$SRV.PING.agenticflow-worker", b"", timeout=5)
        assert json.loads(ping.data)["name"] == "agenticflow-worker"

        # HTTP probes.
        async with httpx.AsyncClient(timeout=5) as http:
            for report in (coord, work):
                assert (await http.get(f"{report['http']}/healthz")).status_code == 200
                ready = await http.get(f"{report['http']}/readyz")
                assert (ready.status_code, ready.text) == (200, "ready\n")
                health = (await http.get(f"{report['http']}/health")).json()
                assert health["node"] == report["node"]
            missing = await http.get(f"{work['http']}/nope")
            assert missing.status_code == 404
            assert "/metrics" in missing.text

        # Coordinator metrics: counted from the events it folded.
        # The unserved task is stored in its queue once the coordinator says so.
        await client.wait_for(stuck, lambda s: s.tasks["n"].note is not None, timeout=20)
        await coordinator_heartbeat_after(bus, time.time_ns())
        found = await scrape(coord["http"])
        assert value(found, "agenticflow_queue_lag", capability="nobody") == 1
        total = "agenticflow_tasks_{}_total"
        assert value(found, total.format("dispatched"), capability="echo") == 1
        assert value(found, total.format("dispatched"), capability="flaky") == 2
        assert value(found, total.format("retried"), capability="flaky") == 1
        assert value(found, total.format("retried"), capability="echo") == 0
        assert value(found, total.format("completed"), capability="flaky") == 1
        assert value(found, total.format("failed"), capability="flaky") == 1
        assert value(found, total.format("failed"), capability="fatal") == 1
        assert value(found, "agenticflow_queue_pending", capability="nobody") == 1
        assert value(found, "agenticflow_queue_lag", capability="echo") == 0
        assert value(found, "agenticflow_events_total", type="workflow.completed") == 1
        assert value(found, "agenticflow_events_total", type="workflow.failed") == 1
        assert value(found, "agenticflow_events_total", type="task.unserved") == 1

        # Worker metrics: measured around the handlers.
        found = await scrape(work["http"])
        duration = "agenticflow_task_duration_seconds_count"
        assert value(found, duration, capability="flaky", outcome="failed") == 1
        assert value(found, duration, capability="flaky", outcome="completed") == 1
        assert value(found, duration, capability="fatal", outcome="failed") == 1
        assert value(found, "agenticflow_task_queue_wait_seconds_count", capability="echo") == 1
        hosted = sum(work["worker"]["instances"].values())
        assert value(found, "agenticflow_agent_instances") == hosted
        assert value(found, "agenticflow_agent_instances", state="idle") == hosted

        # A standby coordinator says so.
        cluster.add_coordinator()
        reports = await cluster_health(bus, wait_s=20, expect=3)
        roles = sorted(r["coordinator"]["role"] for r in by_kind(reports, "coordinator"))
        assert roles == ["active", "standby"]
        assert all(r["ready"] for r in reports)
        await client.abort(stuck, reason="test over")

    # The processes have stopped: their logs and spans are complete.
    lines = [
        json.loads(line)
        for line in (logs / "worker-0.log").read_text().splitlines()
        if line.startswith("{")
    ]
    failed = [line for line in lines if line.get("event") == "task failed"]
    fatal = next(line for line in failed if line.get("workflow_id") == bad.workflow_id)
    assert fatal["task_id"] == "x"
    assert fatal["agent"] == "fatal"
    assert fatal["level"] == "info"
    task_span = next(
        s
        for s in spans_in(tmp_path)
        if s["name"] == "task fatal" and s["attributes"].get("workflow.id") == bad.workflow_id
    )
    assert (fatal["trace_id"], fatal["span_id"]) == (task_span["trace_id"], task_span["span_id"])


class _Service:
    """A service that is not ready until told."""

    def __init__(self) -> None:
        self.problem: str | None = "starting"

    def ready(self) -> str | None:
        return self.problem

    def health(self) -> dict[str, Any]:
        return {"detail": 1}


async def test_readiness_follows_the_service_and_the_service_deregisters(
    nats_server: NatsServer,
) -> None:
    settings = Settings(nats_url=nats_server.url, prefix=unique_prefix("ready"))
    bus = await Bus.connect(settings, name="readiness-test")
    try:
        service = _Service()
        async with HealthService(
            bus=bus, service=service, kind="worker", node_id="n1", port=0
        ) as health:
            url = health.url
            assert url is not None
            async with httpx.AsyncClient(timeout=5) as http:
                ready = await http.get(f"{url}/readyz")
                assert (ready.status_code, ready.text) == (503, "not ready: starting\n")
                assert (await http.get(f"{url}/healthz")).status_code == 200
                report = await http.get(f"{url}/health")
                assert report.status_code == 503
                assert report.json()["worker"] == {"detail": 1}
                assert (await http.post(f"{url}/readyz")).status_code == 405
                service.problem = None
                assert (await http.get(f"{url}/readyz")).status_code == 200
            [found] = await cluster_health(bus, wait_s=5, expect=1)
            assert (found["node"], found["ready"]) == ("n1", True)
        assert await cluster_health(bus, wait_s=0.3) == []
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(timeout=2) as http:
                await http.get(f"{url}/healthz")
    finally:
        await bus.close()


async def test_health_cli(nats_server: NatsServer, log_dir: Path) -> None:
    prefix = unique_prefix("hcli")
    async with DevCluster(
        app=TEST_APP,
        workers=1,
        concurrency=2,
        nats_url=nats_server.url,
        prefix=prefix,
        log_dir=log_dir / prefix,
    ) as cluster:
        shown = await asyncio.to_thread(
            agenticflow, cluster.settings, "health", "--json", "--expect", "2", "--wait", "20"
        )
        assert shown.returncode == 0, shown.stderr
        reports = json.loads(shown.stdout)
        assert sorted(r["kind"] for r in reports) == ["coordinator", "worker"]
        assert all(r["http"] is None for r in reports)  # no port asked for
        table = await asyncio.to_thread(
            agenticflow, cluster.settings, "health", "--expect", "2", "--wait", "20"
        )
        assert table.returncode == 0, table.stderr
        assert "coordinator" in table.stdout
        assert "ready" in table.stdout
        assert "tasks in hand" in table.stdout
        too_many = await asyncio.to_thread(
            agenticflow, cluster.settings, "health", "--expect", "3", "--wait", "1"
        )
        assert too_many.returncode == 1
        assert "2 of 3 processes answered" in too_many.stderr
    other = Settings(nats_url=nats_server.url, prefix=unique_prefix("nobody"))
    none = await asyncio.to_thread(agenticflow, other, "health", "--wait", "0.3")
    assert none.returncode == 3
    assert "no AgenticFlow process" in none.stderr
