"""Bearer tokens mapped to principals, and the RBAC the bus enforces.

A token file (``AGENTICFLOW_GATEWAY_TOKENS_FILE``) keeps only digests::

    [tokens]
    alice = "sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
    ci = ["sha256:...", "sha256:..."]     # several tokens for one principal

``agenticflow gateway-token alice`` makes a token and prints its line. Tokens
may also come from ``AGENTICFLOW_GATEWAY_TOKENS`` (``alice=TOKEN,ci=sha256:HEX``),
hashed as they are read. A request's token is hashed and compared with every
digest in constant time (:func:`hmac.compare_digest`, no early exit); tokens
are never logged, and only the principal they map to is.

The principal is who acts on the cluster: with keys, the gateway signs its
requests with that principal's key (``<principal>.key`` in the security
directory); without, its requests name the principal. Either way the
coordinator checks them against the same policy as any client's, and the
gateway checks first (:class:`Access`) so a refusal is an immediate 403.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agenticflow.coordinator.admission import used_capabilities
from agenticflow.shared.errors import ConfigError
from agenticflow.shared.graph.workflow import WorkflowDefinition
from agenticflow.shared.security.rbac import Policy, intervention_permissions
from agenticflow.shared.security.seal import write_secret
from agenticflow.shared.wire.events import Modification

PRINCIPAL_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}\Z")
"""A principal's name: also its key file's stem and, without keys, its node id."""
_DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})\Z")
MIN_TOKEN_CHARS = 16
"""Shorter tokens are refused when configured in plain text: they can be guessed."""
RESERVED_PRINCIPALS = frozenset({"coordinator", "worker", "coord", "coord-shell"})
"""Names the cluster's own processes use (key files of ``agenticflow keys init``,
node ids): never a gateway principal."""
_RESERVED_PREFIXES = ("coordinator-", "worker-", "coord-")
_NODE_ID_RE = re.compile(r"^[A-Za-z]+-.+-\d+-[0-9a-f]{6}(?:-p\d+)?\Z")
"""What :func:`~agenticflow.shared.wire.ids.new_node_id` makes (``role-host-pid-hex``)."""
ALLOWED_ROLES = ("client", "admin")
"""Roles a principal's key may hold: a coordinator's or a worker's would let
requests sign as the cluster itself."""


def digest(token: str) -> str:
    """The ``sha256:HEX`` form a token file keeps."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token digests and the principal each maps to."""

    entries: tuple[tuple[bytes, str], ...]
    """``(sha256 digest, principal)`` pairs."""

    @property
    def principals(self) -> list[str]:
        """Every principal some token maps to, sorted."""
        return sorted({principal for _, principal in self.entries})

    def principal(self, token: str) -> str | None:
        """The principal ``token`` belongs to, or None. Compares with every
        digest (constant time each, no early exit)."""
        presented = hashlib.sha256(token.encode()).digest()
        found: str | None = None
        for stored, principal in self.entries:
            if hmac.compare_digest(stored, presented):
                found = principal
        return found

    @classmethod
    def load(cls, file: Path | None, env: str | None) -> Tokens:
        """Tokens from a TOML file and/or the environment's list; raises
        ConfigError for a bad file or entry, or when there is none at all."""
        pairs: list[tuple[str, str]] = []
        if file is not None:
            pairs.extend(_file_pairs(file))
        if env:
            pairs.extend(_env_pairs(env))
        if not pairs:
            raise ConfigError(
                "the gateway has no tokens: set AGENTICFLOW_GATEWAY_TOKENS_FILE (see "
                "`agenticflow gateway-token`) or AGENTICFLOW_GATEWAY_TOKENS"
            )
        entries: list[tuple[bytes, str]] = []
        owners: dict[bytes, str] = {}
        for principal, value in pairs:
            stored = _digest_bytes(value, principal)
            other = owners.setdefault(stored, principal)
            if other != principal:
                raise ConfigError(
                    f"the same token is given to principals {other!r} and {principal!r}: "
                    "a token must name one principal"
                )
            entries.append((stored, principal))
        return cls(tuple(entries))


def _file_pairs(file: Path) -> Iterable[tuple[str, str]]:
    try:
        data = tomllib.loads(file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {file}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"token file {file} is not valid TOML: {exc}") from exc
    table = data.get("tokens")
    if not isinstance(table, Mapping):
        raise ConfigError(f"token file {file}: a [tokens] table of principal = digest(s)")
    for principal, given in table.items():
        values = [given] if isinstance(given, str) else given
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigError(f"token file {file}: {principal!r} must be a digest or a list")
        for value in values:
            if not _DIGEST_RE.match(value):
                raise ConfigError(
                    f"token file {file}: {principal!r}: store 'sha256:<64 hex digits>', "
                    "never the token itself (`agenticflow gateway-token` prints the line)"
                )
            yield str(principal), value


def _env_pairs(env: str) -> Iterable[tuple[str, str]]:
    for item in filter(None, (part.strip() for part in env.split(","))):
        principal, sep, value = item.partition("=")
        if not sep or not value:
            # The value is a secret: name only the principal.
            raise ConfigError(
                f"AGENTICFLOW_GATEWAY_TOKENS: {principal.strip()!r} needs principal=token"
            )
        if not _DIGEST_RE.match(value) and len(value) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"AGENTICFLOW_GATEWAY_TOKENS: the token of {principal.strip()!r} is shorter "
                f"than {MIN_TOKEN_CHARS} characters"
            )
        yield principal.strip(), value


def check_principal(principal: str) -> None:
    """Raise ConfigError unless ``principal`` may act through the gateway: a
    valid name, and not one of the cluster's own (a coordinator's or a worker's
    key or node id)."""
    if not PRINCIPAL_RE.match(principal):
        raise ConfigError(
            f"gateway principal {principal!r} must be 1-128 letters, digits, '_', '.' or '-'"
        )
    lowered = principal.lower()
    if (
        lowered in RESERVED_PRINCIPALS
        or lowered.startswith(_RESERVED_PREFIXES)
        or _NODE_ID_RE.match(principal)
    ):
        raise ConfigError(
            f"gateway principal {principal!r} is reserved for the cluster's own processes "
            f"({', '.join(sorted(RESERVED_PRINCIPALS))}, names starting with "
            f"{', '.join(_RESERVED_PREFIXES)} and node ids): choose another name"
        )


def _digest_bytes(value: str, principal: str) -> bytes:
    check_principal(principal)
    found = _DIGEST_RE.match(value)
    if found:
        return bytes.fromhex(found.group(1))
    return hashlib.sha256(value.encode()).digest()


def add_token(file: Path | None, principal: str, token: str) -> str:
    """Add ``token``'s digest for ``principal`` to the token ``file`` (created
    0600 when missing, rewritten atomically); returns the file's line for
    it. Raises ConfigError for a bad name or file."""
    _digest_bytes(digest(token), principal)  # checks the name
    line = f'"{principal}" = "{digest(token)}"'
    if file is None:
        return line
    table: dict[str, list[str]] = {}
    if file.exists():
        for name, value in _file_pairs(file):
            table.setdefault(name, []).append(value)
    table.setdefault(principal, []).append(digest(token))
    lines = ["[tokens]"]
    for name, values in table.items():
        quoted = ", ".join(f'"{value}"' for value in values)
        lines.append(f'"{name}" = [{quoted}]')
    write_secret(file, ("\n".join(lines) + "\n").encode())
    return line


@dataclass(frozen=True, slots=True)
class Access:
    """What the policy lets a principal do (none: RBAC off, as on the bus).

    The coordinator makes the same checks on what the gateway sends; these
    answer first, with the same words."""

    policy: Policy | None

    def submit_denial(self, principal: str, definition: WorkflowDefinition) -> str | None:
        """Why ``principal`` may not start ``definition`` (``workflow:submit:<capability>``
        for each capability, nested workflows' too), or None."""
        if self.policy is None:
            return None
        return self.policy.context(principal).submit_denial(used_capabilities(definition))

    def modification_denial(self, principal: str, changes: Modification) -> str | None:
        """Why ``principal`` may not run what ``changes`` adds or replaces (the
        submit rights a submission of those tasks needs, nested workflows'
        included, as admission checks), or None."""
        tasks = (*changes.add, *changes.replace)
        if self.policy is None or not tasks:
            return None
        runs = used_capabilities(WorkflowDefinition(name="modification", tasks=tasks))
        return self.policy.context(principal).submit_denial(runs)

    def intervention_denial(self, principal: str, action: str) -> str | None:
        """Why ``principal`` may not ``action`` a workflow, or None."""
        if self.policy is None:
            return None
        wanted = intervention_permissions(action)
        context = self.policy.context(principal)
        if any(context.can(p) for p in wanted):
            return None
        return f"{principal} lacks permission {' or '.join(wanted)}"


__all__ = [
    "ALLOWED_ROLES",
    "PRINCIPAL_RE",
    "RESERVED_PRINCIPALS",
    "Access",
    "Tokens",
    "add_token",
    "check_principal",
    "digest",
    "new_token",
]
