"""benchmarks.report: the generated performance section and its charts, from
sample reports written with the benchmarks' own classes (so in their formats)."""

from __future__ import annotations

import json
import struct
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from benchmarks.peers.common import figures_w1, figures_w2, figures_w3
from benchmarks.peers.main import PEERS, Outcome
from benchmarks.report import (
    BEGIN,
    DASH,
    END,
    MarkerError,
    ReportError,
    draw,
    main,
    replace_section,
)
from benchmarks.run import Result
from benchmarks.scaling import Sample, summarise

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIZES = {"fanout_tasks": 2000, "chain_tasks": 200, "diamonds": 300}
ENV = {"python": "3.11.7", "cpu_count": 2, "nats_server": "v2.15.1"}
PAGE = f"""# Performance

Hand-written text before.

{BEGIN}
| old | table |
{END}

Hand-written text after.
"""


def result(scenario: str, title: str, workload: str, metric: str, label: str, **kw: Any) -> Any:
    return Result(
        scenario=scenario,
        title=title,
        workload=workload,
        metric=metric,
        label=label,
        unit=label,
        higher_is_better=kw.get("higher", False),
        samples=kw["samples"],
        raw_samples=kw.get("raw", []),
    ).as_json()


def latest_report() -> dict[str, Any]:
    results = [
        result(
            "w1",
            "W1 fan-out",
            "2000 independent tasks",
            "tasks_per_s",
            "tasks/s",
            higher=True,
            samples=[1400.0, 1500.0, 1600.0],
            raw=[17000.0, 18000.0, 19000.0],
        ),
        result(
            "w2",
            "W2 chain",
            "200 sequential tasks",
            "ms_per_hop",
            "ms/hop",
            samples=[3.1],
            raw=[1.2],
        ),
        result(
            "w3",
            "W3 diamonds",
            "300 4-task workflows at once",
            "workflows_per_s",
            "workflows/s",
            higher=True,
            samples=[250.0],
            raw=[4000.0],
        ),
        result("w5", "W5 latency", "1-task workflow x 1000", "p50_ms", "p50 ms", samples=[7.5]),
        result("w5", "W5 latency", "1-task workflow x 1000", "p99_ms", "p99 ms", samples=[21.0]),
    ]
    return {
        "generated_at": "2026-12-01T10:00:00+00:00",
        "mode": "full",
        "runs": 3,
        "cluster": {"workers": 2, "concurrency_per_worker": 64},
        "sizes": {**SIZES, "latency_runs": 1000},
        "environment": ENV,
        "results": results,
    }


def peers_report(*, temporal_skipped: bool = False) -> dict[str, Any]:
    outcomes = []
    # Seconds per workload, in PEERS' order: AgenticFlow, Temporal, Celery, Ray.
    for peer, seconds in zip(PEERS, (1.0, 5.0, 7.0, 2.0), strict=True):
        if peer.key == "temporal" and temporal_skipped:
            outcomes.append(Outcome(peer=peer, skipped="`temporal` not found"))
            continue
        runs = [
            {
                "w1": figures_w1(SIZES["fanout_tasks"], seconds),
                "w2": figures_w2(SIZES["chain_tasks"], seconds),
                "w3": figures_w3(SIZES["diamonds"], seconds),
            }
        ]
        outcomes.append(Outcome(peer=peer, runs=runs, config={"setup": "x"}))
    return {
        "generated_at": "2026-12-02T10:00:00+00:00",
        "mode": "full",
        "runs": 1,
        "sizes": SIZES,
        "environment": ENV,
        "peers": {o.peer.key: o.as_json() for o in outcomes},
    }


def scaling_report() -> dict[str, Any]:
    samples = [
        Sample(
            setup=f"{w}w/1c",
            series="workers",
            workload="io",
            workers=w,
            coordinators=1,
            partitions=None,
            latency_ms=50.0,
            lanes=16 * w,
            workflows_submitted=100,
            workflows_completed=100,
            tasks_completed=300,
            window_s=8.0,
            window_tasks=int(8 * rate),
            tasks_per_s=rate,
            p50_ms=400.0,
            p99_ms=500.0,
            workers_busy=w,
            busiest_worker_share=1 / w,
            cpu_s={"coordinator": 1.0, "workers": 1.0, "server": 0.5, "client": 0.5},
        )
        for w, rate in ((1, 128.0), (2, 218.0), (4, 321.0))
    ]
    return {
        "benchmark": "scaling",
        "mode": "full",
        "settings": {"rounds": 1, "slots": 8, "latency_ms": 50.0},
        "machine": {"cpu_count": 2, "python": "3.11.7"},
        "summary": summarise(samples, slots=8),
        "samples": [asdict(s) for s in samples],
    }


@pytest.fixture
def results(tmp_path: Path) -> Path:
    directory = tmp_path / "results"
    directory.mkdir()
    for name, report in (
        ("latest.json", latest_report()),
        ("peers.json", peers_report()),
        ("scaling.json", scaling_report()),
    ):
        (directory / name).write_text(json.dumps(report), encoding="utf-8")
    return directory


@pytest.fixture
def page(tmp_path: Path) -> Path:
    path = tmp_path / "docs" / "performance.md"
    path.parent.mkdir()
    path.write_text(PAGE, encoding="utf-8")
    return path


def report(results: Path, page: Path, *extra: str) -> int:
    assets = page.parent / "assets" / "performance"
    return main(["--results", str(results), "--assets", str(assets), "--pages", str(page), *extra])


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), path
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def generated(page: Path) -> str:
    return page.read_text(encoding="utf-8").split(BEGIN)[1].split(END)[0]


def test_the_section_has_every_systems_figures_and_the_charts_are_pngs(
    results: Path, page: Path
) -> None:
    assert report(results, page) == 0
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Performance\n\nHand-written text before.\n\n" + BEGIN)
    assert text.endswith(END + "\n\nHand-written text after.\n")
    section = generated(page)
    assert "| old | table |" not in section
    header = next(line for line in section.splitlines() if line.startswith("| workload"))
    assert header == (
        "| workload | AgenticFlow | raw JetStream loop | AgenticFlow (peers run) | Ray "
        "| Celery + Redis | Temporal |"
    )
    w1 = next(line for line in section.splitlines() if line.startswith("| W1"))
    # Medians with the range of 3 runs; the peers' run: AgenticFlow 1 s, Ray 2 s,
    # Celery 7 s, Temporal 5 s for each workload.
    expected = "| 1,500 (1,400-1,600) | 18,000 (17,000-19,000) | 2,000 | 1,000 | 286 | 400 |"
    assert expected.replace("-", DASH) in w1
    assert "tasks/s ↑" in w1
    w2 = next(line for line in section.splitlines() if line.startswith("| W2"))
    assert "ms/hop ↓ | 3.10 | 1.20 | 5.00 | 10.0 | 35.0 | 25.0 |" in w2
    w5 = next(line for line in section.splitlines() if line.startswith("| W5"))
    assert "p50 ms 7.50; p99 ms 21.0" in w5
    assert "2 CPUs, Python 3.11.7, nats-server v2.15.1" in section
    assert "run of 2026-12-01" in section
    assert "run of 2026-12-02" in section
    assert "1 worker 128 (ideal 160), 2 workers 218 (ideal 320), 4 workers 321" in section
    assets = page.parent / "assets" / "performance"
    for name in ("w1.png", "w2.png", "w3.png", "scaling-workers.png"):
        assert f"](assets/performance/{name})" in section
        assert png_size(assets / name) == (600, 350)


def test_a_missing_peers_file_leaves_its_columns_out_with_a_note(results: Path, page: Path) -> None:
    (results / "peers.json").unlink()
    assert report(results, page) == 0
    section = generated(page)
    assert "| workload | AgenticFlow | raw JetStream loop |\n" in section
    for name in ("Ray", "Celery", "Temporal", "peers run"):
        assert name not in section
    assert "No `peers.json` (`make bench-peers`): the peers' columns are left out." in section


def test_a_skipped_peer_gets_no_column_but_its_reason(results: Path, page: Path) -> None:
    report_ = peers_report(temporal_skipped=True)
    (results / "peers.json").write_text(json.dumps(report_), encoding="utf-8")
    assert report(results, page) == 0
    section = generated(page)
    assert "| Temporal |" not in section
    assert "Temporal was skipped: `temporal` not found." in section


def test_only_peers_and_no_scaling(results: Path, page: Path) -> None:
    (results / "latest.json").unlink()
    (results / "scaling.json").unlink()
    assert report(results, page) == 0
    section = generated(page)
    assert "| workload | AgenticFlow (peers run) | Ray | Celery + Redis | Temporal |" in section
    assert "W1 fan-out: 1 job of 2,000 independent tasks" in section
    assert "| W5" not in section
    assert "scaling-workers.png" not in section
    assert "No `scaling.json`" in section
    assert "No `latest.json`" in section


def test_no_results_at_all_is_an_error_and_changes_nothing(
    tmp_path: Path, page: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report(tmp_path / "empty", page) == 2
    assert "no benchmark results" in capsys.readouterr().err
    assert page.read_text(encoding="utf-8") == PAGE


def test_a_missing_marker_is_an_error_naming_the_file(
    results: Path, page: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page.write_text(PAGE.replace(END, ""), encoding="utf-8")
    assert report(results, page) == 2
    err = capsys.readouterr().err
    assert "performance.md" in err
    assert END in err
    with pytest.raises(MarkerError, match=r"README\.md"):
        replace_section("no markers here", "body\n", "README.md")
    with pytest.raises(MarkerError):
        replace_section(f"{END}\n{BEGIN}\n", "body\n", "README.md")


def test_check_finds_a_stale_section_and_a_missing_chart(
    results: Path, page: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report(results, page, "--check") == 1  # the hand-written table
    assert report(results, page) == 0
    written = page.read_bytes()
    assert report(results, page, "--check") == 0
    latest = latest_report()
    latest["results"][0]["median"] = 1450.0
    (results / "latest.json").write_text(json.dumps(latest), encoding="utf-8")
    capsys.readouterr()
    assert report(results, page, "--check") == 1
    assert "stale:" in capsys.readouterr().err
    assert page.read_bytes() == written  # --check writes nothing
    assert report(results, page) == 0
    (page.parent / "assets" / "performance" / "w2.png").unlink()
    assert report(results, page, "--check") == 1
    assert "missing chart:" in capsys.readouterr().err


def test_charts_are_the_same_bytes_every_time(results: Path, page: Path) -> None:
    assets = page.parent / "assets" / "performance"
    assert report(results, page) == 0
    first = {p.name: p.read_bytes() for p in assets.iterdir()}
    assert report(results, page) == 0
    assert {p.name: p.read_bytes() for p in assets.iterdir()} == first


def test_without_matplotlib_the_report_says_how_to_install_it(
    results: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.report import build, load

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ReportError, match=r"pip install -e '\.\[bench\]'"):
        draw(build(load(results)), tmp_path / "assets")
