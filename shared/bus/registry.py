"""Registry entries (KV ``<prefix>_agents``): who is alive and what it serves.

Every worker puts one entry per hosted agent (key ``<node>.<agent>``) and every
coordinator one for itself, refreshed on each heartbeat; entries expire after
``agent_ttl_s``. Entries are records (:meth:`agenticflow.shared.security.seal.Seal.seal_record`):
with keys configured they are signed by the node that wrote them, and readers
refuse one that is unsigned, altered, moved to another key, put back after the
replay window, or whose ``role`` is not its signer's (a worker posing as a
coordinator). With data keys they are encrypted. So what the supervisor and the
planner read about agents (capabilities, descriptions) comes from a trusted
node, never from whoever can write to the bucket.

Entries are typed: :class:`WorkerEntry` (one per hosted agent) and
:class:`CoordinatorEntry`, each with a ``schema`` version
(:data:`REGISTRY_SCHEMA`). A reader refuses an entry that does not match its
model, or whose schema is newer than it knows, as it refuses a forged one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agenticflow.shared.bus.base import Bus, watched_ns
from agenticflow.shared.errors import MalformedMessageError, UnknownSchemaVersionError
from agenticflow.shared.security.seal import Seal
from agenticflow.shared.wire.codec import pack, unpack

log = structlog.get_logger("agenticflow.registry")

WRITERS = ("worker", "coordinator")
"""Roles that may write registry entries (each only entries of its own role)."""
REGISTRY_SCHEMA = 1
"""The version of the registry entries this node writes and the newest it reads."""


class _Entry(BaseModel):
    # Fields a later version of the same schema adds are kept, not refused.
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    schema_version: int = Field(default=REGISTRY_SCHEMA, alias="schema", ge=1)
    instance: str
    """The entry's key: ``<node>.<agent>`` for a worker's agent, ``<node>`` for a coordinator."""
    agent: str = ""
    capabilities: list[str] = Field(default_factory=list)
    state: str = "idle"
    load: int = Field(default=0, ge=0)
    heartbeat: int = Field(default=0, ge=0)
    """When it was written (ns since the epoch)."""

    def record(self) -> dict[str, Any]:
        """The entry as it is stored (``schema`` included)."""
        return self.model_dump(by_alias=True, mode="json")


class AgentInstanceInfo(BaseModel):
    """One instance of a hosted agent, as its worker reports it."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str
    state: str
    since: int = 0
    tasks_done: int = 0
    suspending: bool = False


class WorkerEntry(_Entry):
    """A worker's entry for one agent it hosts (key ``<worker>.<agent>``)."""

    role: Literal["worker"] = "worker"
    worker: str
    app: str = ""
    description: str = ""
    open_breakers: list[str] = Field(default_factory=list)
    route: str | None = None
    version: str | None = None
    """The agent's version (see :meth:`~agenticflow.worker.app.AgentApp.agent`)."""
    instances: int = Field(default=0, ge=0)
    idle: int = Field(default=0, ge=0)
    suspended: int = Field(default=0, ge=0)
    agents: list[AgentInstanceInfo] = Field(default_factory=list)
    concurrency: int = Field(default=0, ge=0)
    started: int = 0
    host: str = ""
    pid: int = Field(default=0, ge=0)


class CoordinatorEntry(_Entry):
    """A coordinator's entry (key: its node id)."""

    role: Literal["coordinator"] = "coordinator"
    coordinator: str
    events_folded: int = Field(default=0, ge=0)
    partition: int = Field(default=0, ge=0)
    partitions: int = Field(default=1, ge=1)


RegistryEntry = WorkerEntry | CoordinatorEntry


def entry_model(info: dict[str, Any]) -> RegistryEntry:
    """The typed entry of a registry record's data; raises MalformedMessageError
    (UnknownSchemaVersionError for a schema newer than :data:`REGISTRY_SCHEMA`)."""
    schema = info.get("schema", REGISTRY_SCHEMA)
    if isinstance(schema, int) and schema > REGISTRY_SCHEMA:
        raise UnknownSchemaVersionError(
            f"registry entry of schema {schema}; this node reads up to {REGISTRY_SCHEMA}"
        )
    model: type[RegistryEntry] = (
        CoordinatorEntry if info.get("role") == "coordinator" else WorkerEntry
    )
    try:
        return model.model_validate(info)
    except ValidationError as exc:
        raise MalformedMessageError(
            f"not a {model.__name__}: {exc.error_count()} invalid fields "
            f"({', '.join(str(e['loc'][0]) for e in exc.errors()[:3] if e['loc'])})"
        ) from exc


def seal_entry(seal: Seal, bucket: str, key: str, entry: RegistryEntry) -> bytes:
    """The stored form of a registry entry."""
    return seal.seal_record(bucket, key, pack(entry.record()))


def open_entry(
    seal: Seal, bucket: str, key: str, blob: bytes | None, *, stored_ns: int | None = None
) -> dict[str, Any] | None:
    """A registry entry's data, with ``signed_by`` (the signing principal) when
    it is signed; None for an empty, malformed or refused entry (a refusal is
    logged)."""
    if not blob:
        return None
    try:
        return _opened(seal, bucket, key, blob, stored_ns)
    except MalformedMessageError as exc:
        log.warning(
            "registry entry refused",
            bucket=bucket,
            key=key,
            error=str(exc),
            error_type=type(exc).__name__,
        )
        return None


def open_update(seal: Seal, entry: Any) -> dict[str, Any] | None:
    """The data of a registry entry delivered by a KV watch (``entry`` is
    nats-py's ``KeyValue.Entry``); None for a deletion or a refused entry."""
    if entry is None or getattr(entry, "operation", None) in ("DEL", "PURGE"):
        return None
    return open_entry(
        seal, str(entry.bucket), str(entry.key), entry.value, stored_ns=watched_ns(entry)
    )


def _opened(
    seal: Seal, bucket: str, key: str, blob: bytes, stored_ns: int | None
) -> dict[str, Any]:
    plain, signer = seal.open_record(bucket, key, blob, roles=WRITERS, stored_ns=stored_ns)
    info = unpack(plain)
    if not isinstance(info, dict):
        raise MalformedMessageError(f"{bucket}/{key} is not a registry entry")
    _typed(info)
    if signer is None:
        return info
    if info.get("role", "worker") != signer.role:
        raise MalformedMessageError(
            f"{bucket}/{key} says it is a {info.get('role')!r} but is signed by "
            f"{signer.principal} ({signer.role})"
        )
    info["signed_by"] = signer.principal
    return info


def _typed(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` once it matches its entry model (raises MalformedMessageError)."""
    entry_model(info)
    return info


@dataclass(slots=True)
class Registered:
    """The processes seen registering (see :func:`wait_registered`), by node id."""

    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    coordinators: dict[str, dict[str, Any]] = field(default_factory=dict)


async def wait_registered(
    bus: Bus,
    until: Callable[[Registered], bool],
    *,
    timeout: float,
    check: Callable[[], None] | None = None,
) -> Registered:
    """Watch the agents bucket until ``until(registered)`` holds; returns what
    was seen. ``check()`` is called between updates (e.g. to raise when a
    process being waited for exited). Raises TimeoutError after ``timeout``
    seconds. Entries that fail to open (forged, malformed) are not counted."""
    store = await bus.kv(bus.names.agents_bucket)
    watcher = await store.watchall(inactive_threshold=5.0)
    seen = Registered()
    deadline = time.monotonic() + timeout
    try:
        while not until(seen):
            if check is not None:
                check()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{len(seen.workers)} workers and {len(seen.coordinators)} coordinators "
                    f"registered within {timeout:g}s"
                )
            try:
                entry = await watcher.updates(timeout=min(0.5, left))
            except TimeoutError:
                continue
            info = open_update(bus.seal, entry)
            if info is None:
                continue
            if info.get("role") == "worker":
                seen.workers[str(info.get("worker", ""))] = info
            elif info.get("role") == "coordinator":
                seen.coordinators[str(info.get("coordinator", ""))] = info
        return seen
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()


__all__ = [
    "REGISTRY_SCHEMA",
    "WRITERS",
    "AgentInstanceInfo",
    "CoordinatorEntry",
    "Registered",
    "RegistryEntry",
    "WorkerEntry",
    "entry_model",
    "open_entry",
    "open_update",
    "seal_entry",
    "wait_registered",
]
