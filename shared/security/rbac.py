"""Role-based access control: principals have roles, roles grant permissions
and constrain parameters.

A policy file (TOML, ``policy.toml`` in the security directory or
``AGENTICFLOW_POLICY_FILE``)::

    [roles.researcher]
    permissions = ["fs:read", "net:http"]
    [[roles.researcher.rules]]          # parameter-level policies
    tool = "read_file"                  # a tool name, or "*"
    param = "path"
    paths = ["/data/reports"]           # the value must be inside one of these
    [[roles.researcher.rules]]
    tool = "http_get"
    param = "url"
    hosts = ["api.example.com", "*.internal"]

    [roles.operator]
    permissions = ["workflow:*"]

    [roles.reporter]                    # may submit workflows of these capabilities only
    permissions = ["workflow:submit:summarize", "workflow:submit:report_*"]

    [principals]
    "agent:researcher" = ["researcher"]  # an agent, by name
    "alice" = ["operator"]               # a person or service, by signing principal
    "bob" = ["reporter"]

Workers check every tool call of an agent (principal ``agent:<name>``): the
tool's required permissions must be granted by the agent's roles, and the call's
parameters must pass every rule of those roles that names the tool and the
parameter (when several rules name the same parameter, one passing is enough).
Coordinators check every intervention against its signer's roles
(``workflow:pause``, ``workflow:cancel``, ``workflow:terminate``,
``workflow:approve``...; see :func:`intervention_permissions`: ``workflow:abort``
is ``workflow:terminate``'s older name, and either also allows a cancel), and every
submission against the capabilities it uses: each capability of the definition
(child workflows' included) needs ``workflow:submit:<capability>``, so
``workflow:*`` or ``workflow:submit:*`` submits anything and
``workflow:submit:report_*`` only capabilities named ``report_...``
(:meth:`SecurityContext.submit_denial`). ``planner:unattended`` lets
``agenticflow ask`` run a plan without asking the person first.

Permissions match exactly, or by a trailing wildcard (``fs:*``, ``*``).
"""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agenticflow.shared.errors import ConfigError

_RULE_KINDS = ("paths", "hosts", "values", "pattern")
SUBMIT = "workflow:submit"
"""Prefix of the permission to submit a capability: ``workflow:submit:<capability>``."""
UNATTENDED = "planner:unattended"
"""The permission to run a planned query without a person confirming it."""


_INTERVENTION_GRANTS = {
    "terminate": ("workflow:terminate", "workflow:abort"),
    "abort": ("workflow:terminate", "workflow:abort"),
    "cancel": ("workflow:cancel", "workflow:terminate", "workflow:abort"),
}


def intervention_permissions(action: str) -> tuple[str, ...]:
    """The permissions any one of which allows the intervention ``action``:
    ``workflow:<action>``; for ``terminate`` and its older name ``abort`` either
    permission; for ``cancel`` (which ends a workflow more gently) also either
    of those."""
    return _INTERVENTION_GRANTS.get(action, (f"workflow:{action}",))


def submit_permission(capability: str) -> str:
    """The permission a principal needs to submit a workflow that uses ``capability``."""
    return f"{SUBMIT}:{capability}"


def grants(granted: Iterable[str], permission: str) -> bool:
    """Whether ``granted`` covers ``permission``: the same permission, ``*``, or a
    prefix wildcard such as ``fs:*`` (covers ``fs:read`` and ``fs:write``)."""
    return any(
        grant in (permission, "*") or (grant.endswith("*") and permission.startswith(grant[:-1]))
        for grant in granted
    )


@dataclass(frozen=True, slots=True)
class ParamRule:
    """What values one parameter of one tool may take."""

    tool: str
    param: str
    paths: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    values: tuple[str, ...] = ()
    pattern: str | None = None

    def applies(self, tool: str, params: Mapping[str, Any]) -> bool:
        """Whether the rule constrains this call."""
        return (self.tool in ("*", tool)) and self.param in params

    def allows(self, value: Any) -> bool:
        """Whether ``value`` passes the rule."""
        text = str(value)
        if self.paths and not _inside(text, self.paths):
            return False
        if self.hosts and not _host_allowed(text, self.hosts):
            return False
        if self.values and text not in self.values:
            return False
        return not (self.pattern is not None and re.fullmatch(self.pattern, text) is None)

    def describe(self) -> str:
        """The constraint, for a denial message."""
        if self.paths:
            return f"inside {', '.join(self.paths)}"
        if self.hosts:
            return f"a host among {', '.join(self.hosts)}"
        if self.values:
            return f"one of {', '.join(self.values)}"
        return f"matching {self.pattern!r}"


def _inside(path: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``path`` is inside one of ``prefixes``, both as written (``..``
    folded) and once symbolic links are resolved on this host: a link under an
    allowed prefix that leads out of it does not pass."""
    if "\x00" in path:
        return False
    lexical = os.path.normpath(os.path.join("/", path) if not os.path.isabs(path) else path)
    real = os.path.realpath(lexical)
    return any(
        _under(lexical, os.path.normpath(prefix))
        and _under(real, os.path.realpath(os.path.normpath(prefix)))
        for prefix in prefixes
    )


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _host_allowed(text: str, hosts: tuple[str, ...]) -> bool:
    host = urlsplit(text).hostname if "://" in text else text.split(":", maxsplit=1)[0]
    if not host:
        return False
    host = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in hosts)


@dataclass(frozen=True, slots=True)
class Role:
    """A named set of permissions and parameter rules."""

    name: str
    permissions: frozenset[str] = frozenset()
    rules: tuple[ParamRule, ...] = ()


@dataclass(frozen=True, slots=True)
class SecurityContext:
    """What one principal may do."""

    principal: str
    roles: tuple[Role, ...] = ()

    @property
    def permissions(self) -> frozenset[str]:
        """Every permission the roles grant."""
        return frozenset(p for role in self.roles for p in role.permissions)

    def can(self, permission: str) -> bool:
        """Whether the roles grant ``permission``."""
        return grants(self.permissions, permission)

    def may_submit(self, capability: str) -> bool:
        """Whether the roles let this principal submit work for ``capability``."""
        return self.can(submit_permission(capability))

    def submit_denial(self, capabilities: Iterable[str]) -> str | None:
        """Why this principal may not submit a workflow using ``capabilities``, or None."""
        refused = sorted({c for c in capabilities if not self.may_submit(c)})
        if not refused:
            return None
        shown = ", ".join(repr(c) for c in refused[:5])
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        plural = "ies" if len(refused) > 1 else "y"
        return (
            f"{self.principal} may not submit capabilit{plural} {shown}{more} "
            f"(it lacks {submit_permission(refused[0])}; "
            f"roles: {', '.join(r.name for r in self.roles) or 'none'})"
        )

    def denial(self, tool: str, required: Iterable[str], params: Mapping[str, Any]) -> str | None:
        """Why this principal may not call ``tool`` with ``params``, or None."""
        missing = sorted(p for p in required if not self.can(p))
        if missing:
            return (
                f"{self.principal} lacks permission {', '.join(missing)} "
                f"(roles: {', '.join(r.name for r in self.roles) or 'none'})"
            )
        by_param: dict[str, list[ParamRule]] = {}
        for role in self.roles:
            for rule in role.rules:
                if rule.applies(tool, params):
                    by_param.setdefault(rule.param, []).append(rule)
        for param, rules in by_param.items():
            if not any(rule.allows(params[param]) for rule in rules):
                return (
                    f"{self.principal} may not call {tool} with {param}={params[param]!r}: "
                    f"it must be {' or '.join(rule.describe() for rule in rules)}"
                )
        return None


@dataclass(frozen=True, slots=True)
class Policy:
    """Roles and which principals hold them."""

    roles: Mapping[str, Role] = field(default_factory=dict)
    principals: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def context(self, principal: str) -> SecurityContext:
        """The principal's security context (no roles if the policy does not name it)."""
        names = self.principals.get(principal, ())
        return SecurityContext(principal, tuple(self.roles[n] for n in names if n in self.roles))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "policy") -> Policy:
        """Build from parsed TOML/JSON; raises ConfigError naming the bad entry."""
        roles: dict[str, Role] = {}
        raw_roles = data.get("roles") or {}
        if not isinstance(raw_roles, Mapping):
            raise ConfigError(f"{where}: [roles] must be a table")
        for name, raw in raw_roles.items():
            if not isinstance(raw, Mapping):
                raise ConfigError(f"{where}: role {name!r} must be a table")
            permissions = raw.get("permissions") or []
            if not isinstance(permissions, list) or not all(
                isinstance(p, str) for p in permissions
            ):
                raise ConfigError(f"{where}: role {name!r}: permissions must be a list of strings")
            rules = tuple(_rule(rule, f"{where}: role {name!r}") for rule in raw.get("rules") or [])
            roles[name] = Role(name, frozenset(permissions), rules)
        principals: dict[str, tuple[str, ...]] = {}
        for principal, given in (data.get("principals") or {}).items():
            names = [given] if isinstance(given, str) else given
            if not isinstance(names, list):
                raise ConfigError(f"{where}: principal {principal!r} must list role names")
            unknown = [n for n in names if n not in roles]
            if unknown:
                raise ConfigError(
                    f"{where}: principal {principal!r} has unknown role(s) {', '.join(unknown)}"
                )
            principals[str(principal)] = tuple(str(n) for n in names)
        return cls(roles, principals)

    @classmethod
    def load(cls, path: Path) -> Policy:
        """Read a TOML policy file; raises ConfigError."""
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read policy {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"policy {path} is not valid TOML: {exc}") from exc
        return cls.from_dict(data, where=str(path))


def _rule(raw: Any, where: str) -> ParamRule:
    if not isinstance(raw, Mapping) or not raw.get("tool") or not raw.get("param"):
        raise ConfigError(f"{where}: every rule needs a tool and a param")
    kinds = [k for k in _RULE_KINDS if raw.get(k)]
    if not kinds:
        raise ConfigError(
            f"{where}: rule for {raw['tool']}.{raw['param']} sets none of {_RULE_KINDS}"
        )
    pattern = raw.get("pattern")
    if pattern is not None:
        try:
            re.compile(str(pattern))
        except re.error as exc:
            raise ConfigError(f"{where}: bad pattern {pattern!r}: {exc}") from exc
    return ParamRule(
        tool=str(raw["tool"]),
        param=str(raw["param"]),
        paths=tuple(str(p) for p in raw.get("paths") or ()),
        hosts=tuple(str(h) for h in raw.get("hosts") or ()),
        values=tuple(str(v) for v in raw.get("values") or ()),
        pattern=str(pattern) if pattern is not None else None,
    )


def load_policy(policy_file: Path | None, security_dir: Path | None) -> Policy | None:
    """The policy a process enforces: the named file, else ``policy.toml`` in the
    security directory, else none (RBAC off)."""
    if policy_file is not None:
        return Policy.load(policy_file)
    if security_dir is not None and (security_dir / "policy.toml").exists():
        return Policy.load(security_dir / "policy.toml")
    return None


__all__ = [
    "SUBMIT",
    "UNATTENDED",
    "ParamRule",
    "Policy",
    "Role",
    "SecurityContext",
    "grants",
    "intervention_permissions",
    "load_policy",
    "submit_permission",
]
