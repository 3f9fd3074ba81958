"""Profiles: stored settings, and the precedence of resolve()."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agenticflow import profiles
from agenticflow.shared.errors import ConfigError
from agenticflow.shared.ops.config import Settings


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Profiles in a temporary home; no AGENTICFLOW_* or NATS_URL from outside."""
    import os

    for key in list(os.environ):
        if key.upper().startswith("AGENTICFLOW_") or key == "NATS_URL":
            monkeypatch.delenv(key)
    monkeypatch.setenv("AGENTICFLOW_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_round_trip_and_mode(home: Path) -> None:
    assert profiles.names() == []
    assert profiles.current() is None
    profiles.save("local", {"AGENTICFLOW_NATS_URL": "nats://a:1", "replicas": "3"})
    profiles.save("dev", Settings(nats_url="nats://b:2", prefix="dv"), make_current=True)
    assert profiles.names() == ["dev", "local"]
    assert profiles.current() == "dev"
    assert profiles.get("local") == {"nats_url": "nats://a:1", "replicas": 3}
    assert profiles.get("dev") == {"nats_url": "nats://b:2", "prefix": "dv"}
    assert stat.S_IMODE(profiles.path().stat().st_mode) == 0o600
    profiles.use("local")
    assert profiles.current() == "local"
    profiles.delete("local")
    assert profiles.current() is None
    assert profiles.names() == ["dev"]


def test_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert profiles.resolve().nats_url == Settings().nats_url  # no profile: the defaults
    profiles.save("p", {"nats_url": "nats://profile:1", "prefix": "pp", "replicas": 3})
    profiles.use("p")
    got = profiles.resolve()
    assert (got.nats_url, got.prefix, got.replicas) == ("nats://profile:1", "pp", 3)
    monkeypatch.setenv("NATS_URL", "nats://natsurl:2")
    assert profiles.resolve().nats_url == "nats://natsurl:2"
    monkeypatch.setenv("AGENTICFLOW_NATS_URL", "nats://env:3")
    monkeypatch.setenv("AGENTICFLOW_REPLICAS", "2")
    got = profiles.resolve()
    assert (got.nats_url, got.replicas, got.prefix) == ("nats://env:3", 2, "pp")
    got = profiles.resolve("nats://flag:4", prefix="fl")
    assert (got.nats_url, got.prefix) == ("nats://flag:4", "fl")


def test_named_profile_beats_env_choice_and_current(monkeypatch: pytest.MonkeyPatch) -> None:
    profiles.save("a", {"nats_url": "nats://a:1"}, make_current=True)
    profiles.save("b", {"nats_url": "nats://b:1"})
    profiles.save("c", {"nats_url": "nats://c:1"})
    assert profiles.resolve().nats_url == "nats://a:1"
    monkeypatch.setenv("AGENTICFLOW_PROFILE", "b")
    assert profiles.resolve().nats_url == "nats://b:1"
    assert profiles.resolve(profile="c").nats_url == "nats://c:1"


def test_a_named_profile_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    profiles.save("cur", {"nats_url": "nats://cur:1", "prefix": "cp"}, make_current=True)
    profiles.save("prod", {"nats_url": "nats://prod:1", "prefix": "pp"})
    monkeypatch.setenv("AGENTICFLOW_NATS_URL", "nats://stale:1")
    monkeypatch.setenv("NATS_URL", "nats://stale:2")
    monkeypatch.setenv("AGENTICFLOW_REPLICAS", "3")
    got = profiles.resolve()  # the current profile gives way to the environment
    assert (got.nats_url, got.prefix, got.replicas) == ("nats://stale:1", "cp", 3)
    got = profiles.resolve(profile="prod")  # a named one does not
    assert (got.nats_url, got.prefix, got.replicas) == ("nats://prod:1", "pp", 3)
    monkeypatch.setenv("AGENTICFLOW_PROFILE", "prod")
    assert profiles.resolve().nats_url == "nats://prod:1"
    monkeypatch.delenv("AGENTICFLOW_NATS_URL")
    assert profiles.resolve().nats_url == "nats://prod:1", "NATS_URL gives way to it too"
    assert profiles.resolve("nats://flag:1").nats_url == "nats://flag:1"


def test_errors() -> None:
    with pytest.raises(ConfigError, match="no profile 'x'"):
        profiles.resolve(profile="x")
    with pytest.raises(ConfigError, match="no profile"):
        profiles.use("x")
    with pytest.raises(ConfigError, match="not a setting"):
        profiles.save("y", {"colour": "red"})
    with pytest.raises(ConfigError, match="invalid settings"):
        profiles.save("y", {"replicas": 9})
    with pytest.raises(ConfigError, match="profile name"):
        profiles.save("a b", {})
    with pytest.raises(ConfigError, match="invalid settings"):
        profiles.resolve(prefix="bad prefix")
    profiles.path().parent.mkdir(parents=True)
    profiles.path().write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        profiles.names()


def test_a_server_named_in_the_environment_is_not_paired_with_the_current_profiles_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Redis dev cluster saved as current; then a shell (or a test) names a NATS server.
    profiles.save(
        "dev",
        {"backend": "redis", "url": "redis://127.0.0.1:6390/0", "prefix": "dv"},
        make_current=True,
    )
    assert profiles.resolve().bus_backend == "redis"
    monkeypatch.setenv("AGENTICFLOW_NATS_URL", "nats://env:4222")
    got = profiles.resolve()
    assert (got.bus_backend, got.nats_url, got.prefix) == ("nats", "nats://env:4222", "dv")
    assert not got.url
    monkeypatch.delenv("AGENTICFLOW_NATS_URL")
    monkeypatch.setenv("NATS_URL", "nats://natsurl:4222")
    assert profiles.resolve().bus_backend == "nats"
