"""``agenticflow gateway`` and ``agenticflow gateway-token`` as processes, in
front of the session's cluster (a coordinator and two worker processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from pathlib import Path

import httpx
import pytest

from agenticflow.cluster.dev import DevCluster
from tests.integration.helpers import ROOT, agenticflow

pytestmark = pytest.mark.timeout(120)


def test_gateway_token_keeps_only_a_digest(cluster: DevCluster, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    made = agenticflow(cluster.settings, "gateway-token", "alice", "--file", str(tokens))
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert len(token) >= 40
    text = tokens.read_text()
    assert token not in text
    assert text.startswith('[tokens]\n"alice" = ["sha256:')
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    second = agenticflow(cluster.settings, "gateway-token", "alice", "--file", str(tokens))
    assert tokens.read_text().count("sha256:") == 2
    assert second.stdout.strip() != token
    printed = agenticflow(cluster.settings, "gateway-token", "bob")
    assert printed.stderr.startswith('"bob" = "sha256:')
    bad = agenticflow(cluster.settings, "gateway-token", "bob smith")
    assert bad.returncode == 2
    assert "must be 1-128 letters" in bad.stderr


async def test_the_gateway_process_serves_the_cluster_and_stops_on_sigterm(
    cluster: DevCluster, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.toml"
    token = agenticflow(cluster.settings, "gateway-token", "alice", "--file", str(tokens))
    secret = token.stdout.strip()
    env = {
        **os.environ,
        "AGENTICFLOW_NATS_URL": cluster.settings.nats_url,
        "AGENTICFLOW_PREFIX": cluster.settings.prefix,
        "AGENTICFLOW_LOG_LEVEL": "debug",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agenticflow",
        "gateway",
        "--port",
        "0",
        "--tokens-file",
        str(tokens),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        assert line.startswith("gateway listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {secret}"}, timeout=60
        ) as http:
            started = await http.post(
                "/workflows",
                json={
                    "workflow": {
                        "name": "cli",
                        "tasks": [{"id": "a", "capability": "add", "params": {"value": 2}}],
                    }
                },
            )
            assert started.status_code == 201, started.text
            workflow_id = started.json()["id"]
            result = await http.get(f"/workflows/{workflow_id}/result", params={"wait": 60})
            assert result.json() == {"workflow_id": workflow_id, "state": "completed", "output": 2}
            refused = await http.get("/workflows", headers={"Authorization": "Bearer nope"})
            assert refused.status_code == 401
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()[-2000:]
        logs = line + out.decode() + err.decode()
        assert "alice" in logs  # the principal is logged...
        assert secret not in logs  # ...its token never
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_the_gateway_refuses_to_start_without_tokens(cluster: DevCluster, tmp_path: Path) -> None:
    none = agenticflow(cluster.settings, "gateway", "--port", "0")
    assert none.returncode == 2
    assert "the gateway has no tokens" in none.stderr
    plain = tmp_path / "plain.toml"
    plain.write_text('[tokens]\nalice = "my-secret-token-in-clear"\n')
    stored = agenticflow(cluster.settings, "gateway", "--port", "0", "--tokens-file", str(plain))
    assert stored.returncode == 2
    assert "never the token itself" in stored.stderr
    assert "my-secret-token-in-clear" not in stored.stderr


async def test_the_console_command_prints_a_link_that_logs_in(cluster: DevCluster) -> None:
    env = {
        **os.environ,
        "AGENTICFLOW_NATS_URL": cluster.settings.nats_url,
        "AGENTICFLOW_PREFIX": cluster.settings.prefix,
    }
    env.pop("AGENTICFLOW_GATEWAY_TOKENS", None)
    env.pop("AGENTICFLOW_GATEWAY_TOKENS_FILE", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agenticflow",
        "console",
        "--port",
        "0",
        "--principal",
        "ops",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().strip()
        assert line.startswith("console at http://127.0.0.1:"), line
        link = line.split()[-1]
        base, _, fragment = link.partition("/console/#token=")
        assert fragment, link  # the token rides in the fragment, which no request carries
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            page = await http.get("/console/")
            assert page.status_code == 200
            assert "script-src 'self'" in page.headers["content-security-policy"]
            login = await http.post("/console/api/login", json={"token": fragment})
            assert login.status_code == 200, login.text
            assert login.json()["principal"] == "ops"
            cluster_view = await http.get("/cluster")
            assert cluster_view.status_code == 200
            assert cluster_view.json()["workers"], "the session's workers are listed"
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()[-2000:]
        assert fragment not in err.decode()  # the token is never logged
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
