"""Key files are written so that nothing planted beside them is followed or reused
(issue 20, secrets on disk): a fresh temporary name created exclusively, 0600,
renamed over the target."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agenticflow.shared.errors import ConfigError
from agenticflow.shared.security.seal import (
    DATA_KEYS_FILE,
    TRUST_FILE,
    add_identity,
    init_keys,
    rotate_data_key,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_planted_temporary_symlink_is_not_followed(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    init_keys(keys, [("coordinator", "coordinator")])
    victim = tmp_path / "victim"
    victim.write_text("do not touch")
    for name in ("mallory.key.tmp", f"{DATA_KEYS_FILE}.tmp", f"{TRUST_FILE}.tmp"):
        (keys / name).symlink_to(victim)  # where the old writer put its temporary file
    add_identity(keys, "mallory", "client")
    rotate_data_key(keys)
    assert victim.read_text() == "do not touch"
    assert _mode(keys / "mallory.key") == 0o600
    assert _mode(keys / DATA_KEYS_FILE) == 0o600


def test_a_symlink_in_place_of_a_key_file_is_refused_not_written_through(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    init_keys(keys, [("coordinator", "coordinator")])
    victim = tmp_path / "created-by-the-key-writer"
    (keys / "alice.key").symlink_to(victim)  # leads nowhere yet
    with pytest.raises(ConfigError, match=r"alice\.key exists"):
        add_identity(keys, "alice", "client")
    assert not victim.exists()
    (keys / "alice.key").unlink()
    add_identity(keys, "alice", "client")  # the control
    assert _mode(keys / "alice.key") == 0o600
    assert b"PRIVATE KEY" in (keys / "alice.key").read_bytes()


def test_no_temporary_file_is_left_behind(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    init_keys(keys, [("coordinator", "coordinator"), ("worker", "worker")])
    rotate_data_key(keys)
    names = sorted(p.name for p in keys.iterdir())
    assert names == sorted(["coordinator.key", "worker.key", DATA_KEYS_FILE, TRUST_FILE])
    assert _mode(keys / TRUST_FILE) == 0o644
