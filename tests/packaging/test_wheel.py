"""The distribution as a user gets it: build, install anywhere, run.

``python -m build`` makes an sdist and a wheel from a copy of the checkout
(setuptools writes into the source tree while it builds; the copy keeps the
checkout untouched). The wheel must hold one top-level package, ``agenticflow``,
with real files (the checkout's ``agenticflow/coordinator`` etc. are symlinks)
and the example data; the sdist must build the same wheel.

Then the wheel goes into a fresh virtualenv, used from an empty directory that
holds its own ``worker.py``, ``shared/`` and ``coordinator.py`` (common names in
agent projects, which the old top-level packages clashed with): ``--version``,
``templates``, ``dev`` with the packaged example app, and a packaged example
workflow submitted from another process (found through the profile ``dev``
saves, as a new user's second shell would) and waited for to completion.

Slow (about a minute: two isolated builds, one install); ``make test`` runs it.
Dependencies come from pip's configured index and cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
import tomllib
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
EXAMPLE_APP = "agenticflow.examples.apps:app"
SUBPACKAGES = ("coordinator", "worker", "shared", "examples")
EXAMPLE_DATA = (
    "agenticflow/examples/templates/customer-service.yaml",
    "agenticflow/examples/templates/trading.yaml",
    "agenticflow/examples/templates/content-pipeline.yaml",
    "agenticflow/examples/customer_service/workflow.yaml",
    "agenticflow/examples/customer_service/input.json",
    "agenticflow/examples/trading/prices.csv",
    "agenticflow/examples/trading/headlines.json",
    # The scripted models the workers serve, and the MCP server they start.
    "agenticflow/examples/customer_service/llm-script.yaml",
    "agenticflow/examples/content_pipeline/llm-script.yaml",
    "agenticflow/examples/trading/llm-script.yaml",
    "agenticflow/examples/customer_service/kb_server.py",
)
CLASHING = {
    "worker.py": "raise RuntimeError('the project\\'s own worker.py was imported')\n",
    "coordinator.py": "raise RuntimeError('the project\\'s own coordinator.py was imported')\n",
    "shared/__init__.py": "raise RuntimeError('the project\\'s own shared/ was imported')\n",
}
"""A user's project files named like the old top-level packages: importing one fails loudly."""


@dataclass(frozen=True)
class Dists:
    wheel: Path
    sdist: Path
    wheel_from_sdist: Path


@dataclass(frozen=True)
class Installed:
    venv: Path
    project: Path
    env: dict[str, str]

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command from the user's project directory; fails the test on a non-zero exit."""
        done = subprocess.run(
            args,
            check=False,
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, (
            f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
        return done


def _build(source: Path, out: Path, *flags: str) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "build", *flags, "--outdir", str(out), str(source)],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"python -m build failed:\n{done.stdout[-3000:]}\n{done.stderr}"
    return out


def _copy_checkout(dest: Path) -> None:
    """The checkout's files as git sees them (tracked, and untracked but not
    ignored), symlinks kept as symlinks: what an sdist is built from."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    for rel in sorted(set(filter(None, listed.split("\0")))):
        source, target = ROOT / rel, dest / rel
        if not (source.is_symlink() or source.is_file()):
            continue  # deleted in the working tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)


def _digests(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        return {
            info.filename: hashlib.sha256(archive.read(info)).hexdigest()
            for info in archive.infolist()
            if not info.filename.endswith(".dist-info/RECORD")
        }


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    source = tmp_path_factory.mktemp("source")
    _copy_checkout(source)
    # No flags: the sdist, then the wheel built from that sdist (as pip would).
    from_sdist = _build(source, tmp_path_factory.mktemp("dist"))
    direct = _build(source, tmp_path_factory.mktemp("wheel"), "--wheel")
    return Dists(
        wheel=next(direct.glob("*.whl")),
        sdist=next(from_sdist.glob("*.tar.gz")),
        wheel_from_sdist=next(from_sdist.glob("*.whl")),
    )


@pytest.fixture(scope="module")
def installed(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    project = tmp_path_factory.mktemp("project")
    config = tmp_path_factory.mktemp("config")
    for name, text in CLASHING.items():
        (project / name).parent.mkdir(exist_ok=True)
        (project / name).write_text(text)
    # Nothing of the test run's environment: no checkout on the path, no
    # AgenticFlow settings or profiles (a new user's empty config), no coverage hooks.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AGENTICFLOW_", "COV_", "COVERAGE_", "OTEL_", "NATS_"))
        and key not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
    }
    env |= {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
        "XDG_CONFIG_HOME": str(config),
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(dists.wheel)],
        check=False,
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"pip install failed:\n{done.stdout}\n{done.stderr}"
    return Installed(venv=venv, project=project, env=env)


def test_the_wheel_installs_one_package_with_real_files(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as archive:
        infos = archive.infolist()
    names = {info.filename for info in infos}
    assert {name.split("/")[0] for name in names} == {
        "agenticflow",
        f"agenticflow-{VERSION}.dist-info",
    }
    symlinks = [info.filename for info in infos if stat.S_ISLNK(info.external_attr >> 16)]
    assert symlinks == []
    for package in SUBPACKAGES:
        assert f"agenticflow/{package}/__init__.py" in names
    for real in ("coordinator/reducer.py", "worker/runtime.py", "shared/errors.py"):
        with zipfile.ZipFile(dists.wheel) as archive:
            assert archive.read(f"agenticflow/{real}") == (ROOT / real).read_bytes()
    assert set(EXAMPLE_DATA) <= names
    assert "agenticflow/py.typed" in names
    assert f"agenticflow-{VERSION}.dist-info/licenses/LICENSE" in names
    with zipfile.ZipFile(dists.wheel) as archive:
        metadata = archive.read(f"agenticflow-{VERSION}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Project-URL: Repository, https://github.com/agenticflow/agenticflow" in metadata
    assert "Provides-Extra: grpc" in metadata


def test_the_sdist_builds_the_same_wheel(dists: Dists) -> None:
    assert dists.wheel_from_sdist.name == dists.wheel.name
    assert _digests(dists.wheel_from_sdist) == _digests(dists.wheel)
    with tarfile.open(dists.sdist) as sdist:
        members = {member.name.split("/", 1)[-1] for member in sdist.getmembers()}
    assert {"pyproject.toml", "LICENSE", "README.md"} <= members


def test_the_cli_runs_from_a_directory_with_clashing_names(installed: Installed) -> None:
    version = installed.run(installed.bin("agenticflow"), "--version")
    assert version.stdout.strip() == f"agenticflow {VERSION}"

    imported = installed.run(
        installed.bin("python"),
        "-c",
        "import agenticflow, agenticflow.worker.app, agenticflow.coordinator, "
        "agenticflow.shared.errors; print(agenticflow.__file__)",
    )
    assert str(installed.venv) in imported.stdout

    templates = installed.run(installed.bin("agenticflow"), "templates")
    for name in ("customer-service", "trading", "content-pipeline"):
        assert name in templates.stdout

    # The default install does not pull gRPC (the `grpc` extra does).
    packages = installed.run(installed.bin("python"), "-m", "pip", "list", "--format=json")
    assert "grpcio" not in {package["name"] for package in json.loads(packages.stdout)}


def _lines(stream: Iterable[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


@pytest.fixture
def dev_cluster(installed: Installed) -> Iterator[tuple[str, list[str]]]:
    """``agenticflow dev`` with the packaged example app; yields its URL and output so far."""
    process = subprocess.Popen(
        [installed.bin("agenticflow"), "dev", "--app", EXAMPLE_APP, "--workers", "1"],
        cwd=installed.project,
        env=installed.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its nats-server, coordinator and worker share our group id
    )
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        # The banner: "... ready at URL", an export line, "N worker(s) serving APP; Ctrl-C ..."
        while not seen or "Ctrl-C" not in seen[-1]:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "dev did not start in 60 s:\n" + "".join(seen)
            assert process.poll() is None, "dev exited:\n" + "".join(seen)
            try:
                seen.append(lines.get(timeout=min(remaining, 1.0)))
            except queue.Empty:
                continue
        ready = next(line for line in seen if "dev cluster ready" in line)
        yield ready.split(" at ", 1)[1].strip(), seen
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        reader.join(timeout=10)
        while not lines.empty():
            seen.append(lines.get_nowait())
        assert "stopped" in "".join(seen)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        process.stdout.close()


def test_dev_runs_a_packaged_example_workflow(
    installed: Installed, dev_cluster: tuple[str, list[str]]
) -> None:
    url, output = dev_cluster
    assert url.startswith("nats://127.0.0.1:")
    assert f"export AGENTICFLOW_NATS_URL={url}" in "".join(output)
    assert f"serving {EXAMPLE_APP}" in "".join(output)
    examples = installed.run(
        installed.bin("python"),
        "-c",
        "import agenticflow.examples as e, pathlib; print(pathlib.Path(e.__file__).parent)",
    ).stdout.strip()
    assert examples.startswith(str(installed.venv))
    workflow = Path(examples) / "customer_service"
    # As the README's second shell: no settings, the profile `dev` saved finds the cluster.
    done = subprocess.run(
        [
            installed.bin("agenticflow"),
            "submit",
            str(workflow / "workflow.yaml"),
            "--input",
            f"@{workflow / 'input.json'}",
            "--wait",
            "--timeout",
            "60",
            "-o",
            "json",
        ],
        check=False,
        cwd=installed.project,
        env=installed.env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, f"submit exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    state = json.loads(done.stdout)
    assert state["state"] == "completed"
    assert state["name"] == "customer-service"
    assert state["counts"] == {"completed": 3}
    assert state["output"]["escalation"]["assigned_to"] == "duty-manager"
