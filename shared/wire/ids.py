"""Identifiers: time-ordered ids and derived idempotency keys.

Ids that a retry must reproduce are *derived* from what they identify, never
random, so JetStream's dedupe window and the reducer absorb a re-send.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
"""Workflow ids and capability names: they become subject tokens."""

TASK_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
"""Task ids: appear in derived keys, so never a colon."""


def uuid7() -> str:
    """A UUIDv7 string (RFC 9562): 48-bit millisecond time, then randomness."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def new_workflow_id() -> str:
    """A fresh, time-ordered workflow id usable as a subject token."""
    return "wf-" + uuid7().replace("-", "")


def new_node_id(role: str) -> str:
    """A node id for a process: role, host, pid and a random suffix."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:32] or "host"
    return f"{role}-{host}-{os.getpid()}-{os.urandom(3).hex()}"


_NODE_PID = re.compile(r"-(\d+)-[0-9a-f]+(?:-p\d+)?$")


def node_pid(node_id: str) -> int:
    """The pid in a node id from :func:`new_node_id` (a partition coordinator's
    has ``-p<n>`` after it), 0 if there is none."""
    found = _NODE_PID.search(node_id)
    return int(found.group(1)) if found else 0


def task_key(workflow_id: str, task_id: str, attempt: int, what: str) -> str:
    """Derived idempotency key, e.g. ``wf:task:2:completed``."""
    return f"{workflow_id}:{task_id}:{attempt}:{what}"


def workflow_key(workflow_id: str, what: str) -> str:
    """Derived idempotency key of a workflow-level event."""
    return f"{workflow_id}:{what}"


__all__ = [
    "ID_RE",
    "TASK_ID_RE",
    "new_node_id",
    "new_workflow_id",
    "node_pid",
    "task_key",
    "uuid7",
    "workflow_key",
]
