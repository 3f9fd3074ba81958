"""Settings: one frozen object built once at the entry point and passed down.

Every field can be set from the environment with the ``AGENTICFLOW_`` prefix,
for example ``AGENTICFLOW_NATS_URL=nats://10.0.0.5:4222``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agenticflow.shared.wire.names import Names


class Settings(BaseSettings):
    """Cluster-wide settings shared by coordinator, workers and clients."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTICFLOW_", frozen=True, extra="ignore", validate_by_name=True
    )
    # validate_by_name: fields with env aliases (llm_*) can still be passed by name.

    backend: Literal["nats", "memory", "redis"] | None = None
    """The bus (``AGENTICFLOW_BACKEND``): ``nats`` (JetStream, the default),
    ``memory`` (in this process: tests and notebooks) or ``redis``; when not
    given, the scheme of :attr:`url` says."""
    url: str | None = None
    """The bus's URL (``AGENTICFLOW_URL``): ``nats://...`` (comma-separated for
    several servers), ``memory://<name>`` or ``redis://...``; for NATS it
    replaces :attr:`nats_url`."""
    nats_url: str = "nats://127.0.0.1:4222"
    """Comma-separated server URLs (``tls://`` for TLS)."""
    # Credentials and TLS (see `agenticflow nats-config`, which writes them per role).
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_nkey_seed_file: Path | None = None
    """File holding the role's nkey seed (``SU...``)."""
    nats_tls_ca_file: Path | None = None
    """CA certificate(s) to verify the server with (default: the system's)."""
    nats_tls_cert_file: Path | None = None
    """Client certificate, for a server that verifies clients (with the key file)."""
    nats_tls_key_file: Path | None = None
    nats_tls_hostname: str | None = None
    """Name to verify the server's certificate against, when not the URL's host."""
    nats_inbox_prefix: str = Field(default="_INBOX", pattern=r"^[A-Za-z0-9_\-]+$")
    """Where replies arrive; per role, so a role's permissions can keep it to its own."""
    manage_topology: bool = True
    """Create streams, KV buckets and consumers when missing. False for workers and
    clients whose credentials may not: they wait for the coordinator's."""
    topology_wait_s: float = Field(default=60, ge=0)
    """How long a process that does not manage the topology waits for it."""
    prefix: str = "af"
    """Subject prefix; lets deployments share a NATS account."""
    replicas: int = Field(default=1, ge=1, le=5)
    events_max_age_s: float = Field(default=7 * 86400, gt=0)
    events_max_bytes: int = Field(default=-1)
    dedupe_window_s: float = Field(default=120, gt=0)
    task_ack_wait_s: float = Field(default=30, gt=0)
    task_max_deliver: int = Field(default=5, ge=1)
    task_max_ack_pending: int = Field(default=1000, ge=1)
    heartbeat_s: float = Field(default=5, gt=0)
    agent_ttl_s: int = Field(default=20, ge=2)
    connect_timeout_s: float = Field(default=5, gt=0)
    partitions: int = Field(default=1, ge=1, le=64)
    """Coordinator partitions: workflows are hashed over this many, each owned by
    one coordinator through a lease, so several coordinators are all active.
    Fixed when the events stream is created (the stream's value wins after)."""
    lease_ttl_s: int = Field(default=10, ge=2)
    """A coordinator that stops renewing its lease loses it after this long."""
    snapshot_every_events: int = Field(default=256, ge=1)
    """Save a workflow's snapshot after this many state changes at most..."""
    snapshot_interval_s: float = Field(default=1.0, gt=0)
    """...or this long after its first unsaved change. The stream is the truth:
    a recovering coordinator re-folds the events after the snapshot."""
    max_clock_entries: int = Field(default=64, ge=4, le=4096)
    """Most entries a vector clock may have: an event whose clock has more, or
    would grow its workflow's clock past this, is refused (one entry per node
    that acted on the workflow: raise it for workflows touched by more nodes)."""
    coordinator_ack_wait_s: float = Field(default=15, gt=0)
    """How long an event fetched by a dead coordinator waits before redelivery."""
    audit_scope: str = Field(default="", pattern=r"^[A-Za-z0-9_-]{0,128}$")
    """The scope of this process's audit chain (``<prefix>.audit.<scope>.<node>``):
    its NATS role, whose user may publish only there (``agenticflow nats-config``
    sets ``worker-GROUP``); default: the process's role (``coordinator``, ``worker``)."""
    audit_max_age_s: float = Field(default=400 * 86400, gt=0)
    """Audit records older than this are removed by the server (retention)."""
    audit_max_msgs: int = Field(default=1_000_000, ge=-1)
    """Most records the audit stream keeps (-1: no limit); the oldest go first.
    With ``audit_max_msg_size`` this bounds its disk use without reserving it."""
    audit_max_bytes: int = Field(default=-1, ge=-1)
    """Most bytes the audit stream keeps (-1, the default: no byte limit; the
    record count and age limits apply). JetStream *reserves* a byte limit on
    the server when the stream is created, so set it only where the server's
    ``max_file_store`` has room for it."""
    audit_max_msg_size: int = Field(default=64 << 10, ge=1024)
    """Largest audit record (or anchor) the server stores."""
    audit_anchor_interval_s: float = Field(default=60, gt=0)
    """How often, at most, a node anchors its chain head (and at start and stop)."""
    tool_results_ttl_s: float = Field(default=86400, gt=0)
    """How long a tool's result stays cached under its idempotency key, so a
    redelivered task does not repeat the call."""
    stream_buffer: int = Field(default=1000, ge=1, le=1_000_000)
    """Chunks ``ctx.stream`` holds for one task while they wait to be stored."""
    stream_block_s: float = Field(default=1.0, ge=0, le=60)
    """How long ``ctx.stream`` waits for room when that buffer is full before
    it drops the chunk (counted, and reported in the next ``task.output``)."""
    stream_flush_s: float = Field(default=0.05, gt=0, le=10)
    """How long a streamed chunk may wait to be batched with the next ones
    into one ``task.output`` event."""
    agent_task_events: bool = False
    """Also store the per-task moves of agent instances (idle -> processing ->
    idle) as ``agent.state_changed`` events of their own. Off (the default),
    only suspend and resume are stored: ``task.started`` and the outcome name
    the instance, and :func:`agenticflow.shared.wire.events.agent_moves`
    (``agenticflow events ID --agents``) derives the moves from them; two
    events fewer per task."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve ``/metrics`` (Prometheus), ``/healthz``, ``/readyz`` and ``/health``
    on this HTTP port (0: any free port, shown by ``agenticflow health``);
    none when unset."""
    metrics_host: str = "0.0.0.0"  # noqa: S104 - probes and scrapers reach the pod's address
    """The address the HTTP port listens on."""
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")
    log_level: str = "info"
    security_dir: Path | None = None
    """Key directory (``agenticflow keys init``): ``trust.json`` turns on signature
    checks, ``data-keys.json`` encryption, ``<principal>.key`` signing, and
    ``policy.toml`` RBAC (see :mod:`agenticflow.shared.security.seal` and
    :mod:`agenticflow.shared.security.rbac`)."""
    principal: str = ""
    """Who this process signs as (its key file's name); default: its role
    (``coordinator``, ``worker`` or ``client``)."""
    identity_timeout_s: float = Field(default=120, gt=0)
    """How long a worker with keys waits at start-up for a coordinator to issue
    its process identity (see :mod:`agenticflow.shared.security.identity`) before it gives up."""
    policy_file: Path | None = None
    """RBAC policy (TOML); default: ``policy.toml`` in ``security_dir`` if present."""
    allow_weak_sandbox: bool = False
    """Run sandboxed tools even where the kernel cannot isolate them as declared
    (no user namespaces: host network, the worker's user, only an audit hook on
    files); the worker warns at start-up and in its health report. False (the
    default): such a call fails with SandboxIsolationError and the tool is not
    run (see :mod:`agenticflow.worker.tools.sandbox`).
    ``agenticflow worker --allow-weak-sandbox``."""
    # The `llm` planner (coordinator/supervisor/llm.py): any OpenAI-compatible
    # chat-completions endpoint; the OPENAI_* names are read when ours are unset.
    llm_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AGENTICFLOW_LLM_BASE_URL", "OPENAI_BASE_URL")
    )
    """e.g. ``https://api.openai.com/v1``; the planner POSTs to ``{base}/chat/completions``."""
    llm_model: str | None = Field(
        default=None, validation_alias=AliasChoices("AGENTICFLOW_LLM_MODEL", "OPENAI_MODEL")
    )
    llm_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AGENTICFLOW_LLM_API_KEY")
    )
    """Sent as ``Authorization: Bearer``; none for a local server that needs no key.
    Not read from ``OPENAI_API_KEY``: that key would go to whatever base URL is set."""
    llm_timeout_s: float = Field(default=30, gt=0, le=600)
    """Bound on each call to the endpoint (the whole request, body included)."""
    llm_max_attempts: int = Field(default=3, ge=1, le=10)
    """Tries per call when the endpoint is down, slow, overloaded (429) or failing (5xx)."""
    # Agents' model calls (ctx.llm, worker/llm.py) use the same endpoint, model
    # and key as the planner unless a call names another model; these add to it.
    llm_api: Literal["openai", "anthropic"] = "openai"
    """The API agents' calls speak: ``openai`` (chat completions, what the
    planner speaks too) or ``anthropic`` (the messages API, ``{base}/messages``,
    key in ``x-api-key``)."""
    llm_prices: dict[str, tuple[float, float]] = Field(default_factory=dict)
    """Price table for usage costs: model name -> (USD per million input tokens,
    USD per million output tokens), e.g. ``AGENTICFLOW_LLM_PRICES='{"gpt-4o-mini":
    [0.15, 0.6]}'``; a model not listed costs 0."""
    llm_rate_limit: int | None = Field(default=None, ge=1)
    """Calls per minute to the endpoint, cluster-wide (None: no limit)."""
    llm_breaker_failures: int = Field(default=5, ge=1)
    """Failed calls in a row (after their retries) that open the endpoint's
    cluster-wide circuit breaker."""
    llm_breaker_recovery_s: float = Field(default=30, gt=0)
    """How long an open circuit refuses calls before a trial call."""

    @property
    def names(self) -> Names:
        """Names derived from the prefix."""
        return Names(self.prefix)

    @model_validator(mode="after")
    def _backend_matches_url(self) -> Settings:
        scheme = _scheme(self.url)
        if self.backend is not None and scheme is not None and _BACKEND_OF[scheme] != self.backend:
            raise ValueError(
                f"AGENTICFLOW_URL {self.url!r} is not a {self.backend} URL "
                f"(AGENTICFLOW_BACKEND={self.backend})"
            )
        return self

    @property
    def bus_backend(self) -> str:
        """The backend in use: :attr:`backend`, else the scheme of :attr:`url`, else nats."""
        scheme = _scheme(self.url)
        return self.backend or (_BACKEND_OF[scheme] if scheme else "nats")

    @property
    def bus_url(self) -> str:
        """The backend's URL: :attr:`url`, else its default (:attr:`nats_url` for NATS)."""
        backend = self.bus_backend
        if self.url:
            return self.url
        if backend == "nats":
            return self.nats_url
        return "memory://default" if backend == "memory" else "redis://127.0.0.1:6379/0"

    @property
    def servers(self) -> list[str]:
        """NATS server URLs as a list."""
        urls = self.bus_url if self.bus_backend == "nats" else self.nats_url
        return [url.strip() for url in urls.split(",") if url.strip()]


_BACKEND_OF = {
    "nats": "nats",
    "tls": "nats",
    "ws": "nats",
    "wss": "nats",
    "memory": "memory",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
}


def _scheme(url: str | None) -> str | None:
    """The scheme of a bus URL (None without one); raises ValueError for an unknown one."""
    if not url:
        return None
    scheme, sep, _ = url.strip().partition("://")
    if not sep or scheme.lower() not in _BACKEND_OF:
        raise ValueError(
            f"{url!r} is not a bus URL: nats://, tls://, memory:// or redis:// (AGENTICFLOW_URL)"
        )
    return scheme.lower()


__all__ = ["Settings"]
