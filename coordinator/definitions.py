"""Registered workflow definitions: ``agenticflow workflow register FILE``
stores a definition under its name and a version, and ``submit NAME[@VERSION]``
(``client.start("NAME@VERSION")``) runs it.

Each version is one KV record, ``<name>.<version>`` in ``<prefix>_definitions``,
sealed (signed, in secure mode) by whoever registered it; a reader shows that
verified principal as ``registered_by``. A version is created once: registering
it again is refused (``StateConflictError``); a new one gets the next number
unless it is named. ``NAME`` alone means its latest registered version.
"""

from __future__ import annotations

import re
import time

from pydantic import BaseModel, ConfigDict, Field

from agenticflow.shared.bus.base import Bus
from agenticflow.shared.errors import WorkflowDefinitionError
from agenticflow.shared.graph.workflow import WorkflowDefinition
from agenticflow.shared.wire.codec import unpack

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""A registered workflow's name (it is a KV key token)."""
VERSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
WRITERS = ("client", "admin", "coordinator")


class RegisteredDefinition(BaseModel):
    """One registered version of a workflow definition."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    version: str
    definition: WorkflowDefinition
    registered_by: str = ""
    """Who registered it: the verified signer with keys, else the name it gave."""
    registered_at: int = Field(default_factory=time.time_ns)

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``("name", "2")`` from ``name@2``, ``("name", None)`` from ``name``;
    raises WorkflowDefinitionError for anything else."""
    name, sep, version = ref.partition("@")
    if not NAME_RE.match(name) or (sep and not VERSION_RE.match(version)):
        raise WorkflowDefinitionError(
            f"{ref!r} is not a registered workflow reference: NAME or NAME@VERSION "
            "(letters, digits, '_' or '-')"
        )
    return name, version if sep else None


def key_of(name: str, version: str) -> str:
    """The KV key of one version."""
    return f"{name}.{version}"


def check_name(definition: WorkflowDefinition) -> str:
    """The definition's name if it can be registered; raises WorkflowDefinitionError."""
    if not NAME_RE.match(definition.name):
        raise WorkflowDefinitionError(
            f"workflow name {definition.name!r} cannot be registered: use 1-64 letters, "
            "digits, '_' or '-'"
        )
    return definition.name


def next_version(existing: list[str]) -> str:
    """The next number after the highest numeric version (1 for the first)."""
    numbers = [int(v) for v in existing if v.isdigit()]
    return str(max(numbers, default=0) + 1)


def open_definition(bus: Bus, key: str, blob: bytes, stored_ns: int | None) -> RegisteredDefinition:
    """A stored version; ``registered_by`` is its verified signer when there is
    one. Raises MalformedMessageError (forged, replayed...), ValidationError."""
    plain, signer = bus.seal.open_record(
        bus.names.definitions_bucket, key, blob, roles=WRITERS, stored_ns=stored_ns
    )
    found = RegisteredDefinition.model_validate(unpack(plain))
    if key != key_of(found.name, found.version):
        raise WorkflowDefinitionError(f"{key}: the record names {found.ref}")
    if signer is not None:
        found = found.model_copy(update={"registered_by": signer.principal})
    return found


def latest(found: list[RegisteredDefinition]) -> RegisteredDefinition | None:
    """The version registered last."""
    return max(found, key=lambda d: d.registered_at, default=None)


__all__ = [
    "NAME_RE",
    "VERSION_RE",
    "RegisteredDefinition",
    "check_name",
    "key_of",
    "latest",
    "next_version",
    "open_definition",
    "parse_ref",
]
