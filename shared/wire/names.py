"""Every subject, stream, consumer and bucket name, in one place.

The prefix (default ``af``) lets several deployments, or several test runs,
share one NATS account without seeing each other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agenticflow.shared.errors import ConfigError

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")
"""A node id or audit scope: one subject token."""


SCHEDULE_SPEC_PREFIX = "spec."
"""Keys of schedule specs in the schedules bucket (written by people)."""
SCHEDULE_STATE_PREFIX = "state."
"""Keys of schedules' firing state (written by coordinators)."""


@dataclass(frozen=True, slots=True)
class Names:
    """Names derived from one subject prefix."""

    prefix: str = "af"

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ConfigError(
                f"subject prefix {self.prefix!r} must be lowercase letters, digits or '_' "
                "and start with a letter"
            )

    # Streams ------------------------------------------------------------
    @property
    def tasks_stream(self) -> str:
        """WorkQueue stream of task messages."""
        return f"{self.prefix.upper()}_TASKS"

    @property
    def events_stream(self) -> str:
        """Limits stream of immutable events."""
        return f"{self.prefix.upper()}_EVENTS"

    @property
    def advisories_stream(self) -> str:
        """Limits stream capturing JetStream's max-deliveries advisories for tasks."""
        return f"{self.prefix.upper()}_ADVISORIES"

    @property
    def direct_stream(self) -> str:
        """WorkQueue stream of task messages sent to one worker (auction winners)."""
        return f"{self.prefix.upper()}_DIRECT"

    @property
    def audit_stream(self) -> str:
        """Append-only Limits stream of the hash-chained audit trail."""
        return f"{self.prefix.upper()}_AUDIT"

    @property
    def max_deliveries_subject(self) -> str:
        """Advisory subject JetStream publishes when a task hits ``max_deliver``."""
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.tasks_stream}.*"

    # Subjects -----------------------------------------------------------
    def task_subject(self, queue: str) -> str:
        """Subject a task for a queue (a capability, or a routed one: :func:`queue_of`)
        is published on."""
        return f"{self.prefix}.task.{queue}"

    @property
    def task_subjects(self) -> str:
        """Wildcard of every task subject."""
        return f"{self.prefix}.task.*"

    def direct_subject(self, queue: str, node: str) -> str:
        """Subject of a task of ``queue`` sent to worker ``node`` alone (``*``: any)."""
        return f"{self.prefix}.direct.{queue}.{node}"

    @property
    def direct_subjects(self) -> str:
        """Wildcard of every direct task subject."""
        return f"{self.prefix}.direct.*.*"

    def direct_consumer(self, queue: str, node: str) -> str:
        """The consumer worker ``node`` receives its direct tasks of ``queue`` from."""
        return f"direct_{node}_{queue}"

    def event_subject(self, workflow_id: str, event_type: str) -> str:
        """Subject of one event of one workflow."""
        return f"{self.prefix}.evt.{workflow_id}.{event_type}"

    def workflow_events(self, workflow_id: str) -> str:
        """Wildcard of every event of one workflow."""
        return f"{self.prefix}.evt.{workflow_id}.>"

    @property
    def event_subjects(self) -> str:
        """Wildcard of every event."""
        return f"{self.prefix}.evt.>"

    # How events are stored: the events stream maps each published subject
    # ``<prefix>.evt.<workflow>.<type>`` to ``<prefix>.evt.<workflow>.<partition>.<type>``
    # (a NATS subject transform with ``partition()``), so that a coordinator
    # consumer can take one partition of the workflows.
    def event_transform(self, partitions: int) -> tuple[str, str]:
        """``(source, destination)`` of the events stream's subject transform."""
        check_partitions(partitions)
        return (
            f"{self.prefix}.evt.*.>",
            f"{self.prefix}.evt.{{{{wildcard(1)}}}}.{{{{partition({partitions},1)}}}}.>",
        )

    def partition_events(self, partition: int) -> list[str]:
        """Filters of the stored events of one partition. Partition 0 also takes
        what the transform leaves alone (a subject with no event type), so that a
        malformed message is seen by someone and recorded as rejected."""
        filters = [f"{self.prefix}.evt.*.{partition}.>"]
        return [*filters, f"{self.prefix}.evt.*"] if partition == 0 else filters

    def stored_events_of_type(self, event_type: str, workflow_id: str = "*") -> str:
        """Filter of stored events of a type (a token may be ``*``), e.g.
        ``af.evt.*.*.task.failed``."""
        return f"{self.prefix}.evt.{workflow_id}.*.{event_type}"

    def parse_event_subject(self, subject: str) -> tuple[str, str] | None:
        """``(workflow_id, event_type)`` of an event subject, as published or as
        stored (with its partition token), or None."""
        head = f"{self.prefix}.evt."
        if not subject.startswith(head):
            return None
        workflow_id, _, event_type = subject[len(head) :].partition(".")
        first, dot, rest = event_type.partition(".")
        if first.isdigit() and dot:  # no event type starts with a digit
            event_type = rest
        if not workflow_id or not event_type:
            return None
        return workflow_id, event_type

    def published_subject(self, subject: str) -> str:
        """The subject an event was published on, given the one it is stored
        under (signatures and encryption are bound to the published one)."""
        parsed = self.parse_event_subject(subject)
        return subject if parsed is None else self.event_subject(*parsed)

    # Audit chains: ``<prefix>.audit.<scope>.<node>``. The scope is the writer's
    # NATS role (``coordinator``, ``worker-GROUP``), so a role's permissions can
    # hold it to its own chains; the chain's name is ``<scope>.<node>``. Chains of
    # an earlier version (``<prefix>.audit.<node>``, named ``<node>``) still verify.
    def audit_chain(self, scope: str, node: str) -> str:
        """The name of ``node``'s chain in ``scope``; raises ConfigError for a
        scope or node that is not 1-128 letters, digits, '_' or '-'."""
        for what, token in (("scope", scope), ("node", node)):
            if not _TOKEN_RE.match(token):
                raise ConfigError(
                    f"audit {what} {token!r} must be 1-128 letters, digits, '_' or '-'"
                )
        return f"{scope}.{node}"

    def audit_subject(self, chain: str) -> str:
        """Subject of one audit chain (named by :meth:`audit_chain`)."""
        return f"{self.prefix}.audit.{chain}"

    @property
    def audit_subjects(self) -> str:
        """Wildcard of every audit chain (a scope token and a node token)."""
        return f"{self.prefix}.audit.*.*"

    def audit_scope_subjects(self, scope: str) -> str:
        """Wildcard of every audit chain of one scope (a role's permission)."""
        return f"{self.prefix}.audit.{scope}.*"

    def audit_node(self, subject: str) -> str | None:
        """The chain ``subject`` is the audit subject of (``scope.node``, or a
        bare ``node`` for an earlier version's chain), or None."""
        head = f"{self.prefix}.audit."
        chain = subject[len(head) :] if subject.startswith(head) else ""
        tokens = chain.split(".")
        if len(tokens) > 2 or not all(_TOKEN_RE.match(t) for t in tokens):
            return None
        return chain

    @property
    def anchor_stream(self) -> str:
        """Append-only stream of signed audit chain heads (anchors)."""
        return f"{self.prefix.upper()}_AUDIT_ANCHORS"

    def anchor_subject(self, chain: str) -> str:
        """Subject of one chain's anchors (``chain`` is ``scope.node``)."""
        return f"{self.prefix}.anchor.{chain}"

    @property
    def anchor_subjects(self) -> str:
        """Wildcard of every chain's anchors."""
        return f"{self.prefix}.anchor.*.*"

    def anchor_scope_subjects(self, scope: str) -> str:
        """Wildcard of the anchors of one scope's chains (a role's permission)."""
        return f"{self.prefix}.anchor.{scope}.*"

    def anchor_chain(self, subject: str) -> str | None:
        """The chain an anchor subject is about (named as by :meth:`audit_node`), or None."""
        head = f"{self.prefix}.anchor."
        chain = subject[len(head) :] if subject.startswith(head) else ""
        tokens = chain.split(".")
        return chain if len(tokens) <= 2 and all(_TOKEN_RE.match(t) for t in tokens) else None

    def capability_of(self, task_subject: str) -> str | None:
        """Capability named by a task subject, or None."""
        head = f"{self.prefix}.task."
        if not task_subject.startswith(head):
            return None
        return task_subject[len(head) :] or None

    # Consumers ----------------------------------------------------------
    def task_consumer(self, queue: str) -> str:
        """Durable pull consumer shared by every worker serving a queue."""
        return f"task_{queue}"

    def task_queue_of(self, consumer_info: Mapping[str, Any]) -> str | None:
        """The queue a consumer (as the JetStream API describes it) is the task
        consumer of, or None for any other consumer."""
        config = consumer_info.get("config") or {}
        queue = self.capability_of(str(config.get("filter_subject") or ""))
        if queue is None or consumer_info.get("name") != self.task_consumer(queue):
            return None
        return queue

    @property
    def dead_letter_consumer(self) -> str:
        """Durable consumer the coordinator reads max-deliveries advisories from."""
        return "dead_letters"

    @property
    def coordinator_consumer(self) -> str:
        """Durable consumer the coordinator folds events from (one partition)."""
        return "coordinator"

    def partition_consumer(self, partition: int, partitions: int) -> str:
        """Durable consumer of one partition's events (``coordinator`` when there
        is only one partition)."""
        return self.coordinator_consumer if partitions == 1 else f"coordinator_p{partition}"

    def coordinator_consumers(self, partitions: int) -> list[str]:
        """Every partition's consumer."""
        return [self.partition_consumer(k, partitions) for k in range(partitions)]

    # KV buckets ---------------------------------------------------------
    @property
    def workflows_bucket(self) -> str:
        """KV bucket of workflow state snapshots."""
        return f"{self.prefix}_workflows"

    @property
    def workflow_index_bucket(self) -> str:
        """KV bucket of one small summary per workflow (listing; written by coordinators)."""
        return f"{self.prefix}_workflow_index"

    @property
    def leases_bucket(self) -> str:
        """KV bucket of leases (entries expire unless renewed)."""
        return f"{self.prefix}_leases"

    @property
    def agents_bucket(self) -> str:
        """KV bucket of registered agent instances (entries expire)."""
        return f"{self.prefix}_agents"

    @property
    def memory_bucket(self) -> str:
        """KV bucket of agent memory (msgpack values, encrypted with the data key)."""
        return f"{self.prefix}_memory"

    @property
    def control_bucket(self) -> str:
        """KV bucket of operator commands to agent instances (suspended or not)."""
        return f"{self.prefix}_control"

    @property
    def breakers_bucket(self) -> str:
        """KV bucket of cluster-wide circuit breakers of tools and providers."""
        return f"{self.prefix}_breakers"

    @property
    def ratelimits_bucket(self) -> str:
        """KV bucket of cluster-wide rate-limit windows of tools and providers."""
        return f"{self.prefix}_ratelimits"

    @property
    def tool_results_bucket(self) -> str:
        """KV bucket caching tool results by idempotency key (entries expire)."""
        return f"{self.prefix}_tool_results"

    @property
    def schedules_bucket(self) -> str:
        """KV bucket of schedules: ``spec.<name>`` (people) and ``state.<name>``
        (the coordinator firing it); see :mod:`agenticflow.coordinator.schedules`."""
        return f"{self.prefix}_schedules"

    @property
    def schedule_state_bucket(self) -> str:
        """KV bucket of schedules' firing state (coordinators write it; clients
        may not, so no client can rewind or wipe it)."""
        return f"{self.prefix}_schedule_state"

    @property
    def definitions_bucket(self) -> str:
        """KV bucket of registered workflow definitions, ``<name>.<version>``
        (see :mod:`agenticflow.coordinator.definitions`)."""
        return f"{self.prefix}_definitions"

    @property
    def identities_bucket(self) -> str:
        """KV bucket of the process identities coordinators issued, by node id
        (one per node: see :class:`agenticflow.shared.security.seal.Certificate`)."""
        return f"{self.prefix}_identities"

    @property
    def identity_subject(self) -> str:
        """Where a worker asks a coordinator for its process identity (request/reply)."""
        return f"{self.prefix}.identity.issue"


MAX_PARTITIONS = 64
"""Most coordinator partitions a deployment may have."""


def check_partitions(partitions: int) -> int:
    """``partitions`` if it is a valid partition count; raises ConfigError."""
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise ConfigError(f"partitions must be 1 to {MAX_PARTITIONS}, not {partitions}")
    return partitions


def partition_of(workflow_id: str, partitions: int) -> int:
    """The partition of a workflow: what NATS's ``partition(n, 1)`` computes
    (FNV-1a, 32 bits, of the token, modulo n)."""
    digest = 0x811C9DC5
    for byte in workflow_id.encode():
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return digest % partitions


def partitions_of_transform(destination: str) -> int | None:
    """The partition count in an events transform's destination, or None."""
    found = re.search(r"partition\((\d+),", destination)
    return int(found.group(1)) if found else None


ROUTE_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}\Z")
"""A route: a private set of queues served only by the workers started with it."""

ROUTE_SEPARATOR = "~"
"""Between capability and route in a queue name; never part of a capability."""


def queue_of(capability: str, route: str | None = None, version: str | None = None) -> str:
    """The queue (task subject token and consumer suffix) of a capability on a
    route: ``summarize`` or, routed, ``summarize~fork-1a2b``; pinned to an
    agent version, ``summarize@2`` (a route wins: it names a fixed app)."""
    if route is None:
        return versioned_queue(capability, version)
    if not ROUTE_RE.match(route):
        raise ConfigError(f"route {route!r} must be 1-32 letters, digits, '_' or '-'")
    return f"{capability}{ROUTE_SEPARATOR}{route}"


VERSION_SEPARATOR = "@"
VERSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,16}\Z")
"""An agent version (a queue name suffix: ``summarize@2``)."""


def versioned_queue(queue: str, version: str | None) -> str:
    """The queue of a capability's tasks pinned to ``version`` (``summarize@2``);
    ``queue`` itself when there is none."""
    if version is None:
        return queue
    if not VERSION_RE.match(version):
        raise ConfigError(f"version {version!r} must be 1-16 letters, digits, '_' or '-'")
    return f"{queue}{VERSION_SEPARATOR}{version}"


def version_key(version: str) -> tuple[int, int, str]:
    """Order of versions: numbers by value, after any name ("10" > "9" > "beta")."""
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


SYSTEM_WORKFLOW = "_system"
"""Pseudo workflow id for events that belong to no workflow."""

__all__ = [
    "MAX_PARTITIONS",
    "ROUTE_RE",
    "ROUTE_SEPARATOR",
    "SCHEDULE_SPEC_PREFIX",
    "SCHEDULE_STATE_PREFIX",
    "SYSTEM_WORKFLOW",
    "VERSION_RE",
    "VERSION_SEPARATOR",
    "Names",
    "check_partitions",
    "partition_of",
    "partitions_of_transform",
    "queue_of",
    "version_key",
    "versioned_queue",
]
