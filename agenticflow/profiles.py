"""Connection profiles: named settings a client uses instead of pasted env vars.

A profile holds what ``agenticflow cluster up`` and ``agenticflow dev`` used to
print as ``export AGENTICFLOW_...`` lines: the NATS URL(s), the subject prefix,
the replica count and partitions (a client with the default of 1 replica would
create R1 streams in an R3 cluster), and a secure cluster's credentials, TLS
and key paths. Profiles live in one JSON file, ``profiles.json``, under
``$AGENTICFLOW_HOME`` (default ``$XDG_CONFIG_HOME/agenticflow``, else
``~/.config/agenticflow``), written with mode 0600 since a profile may name a
password.

:func:`resolve` builds the :class:`~agenticflow.shared.ops.config.Settings` of
a client or command, by precedence:

1. explicit arguments (``--nats``, ``--prefix``, ``connect(url)``);
2. a profile named by the argument (``--profile``, ``connect(profile=)``) or
   by ``AGENTICFLOW_PROFILE``: naming one is a choice, so a stale variable
   left in the shell cannot send its commands to another cluster;
3. ``AGENTICFLOW_*`` environment variables;
4. ``NATS_URL`` (the NATS tools' variable) for the URL;
5. the current profile (``agenticflow profile use NAME``): when the
   environment names a server (``AGENTICFLOW_NATS_URL``, ``AGENTICFLOW_URL``,
   ``AGENTICFLOW_BACKEND`` or ``NATS_URL``), none of the profile's
   connection fields apply (a NATS URL from the environment is never paired
   with a Redis profile's backend);
6. the defaults of ``Settings``.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agenticflow.shared.errors import ConfigError

if TYPE_CHECKING:
    from agenticflow.shared.ops.config import Settings

ENV_PREFIX = "AGENTICFLOW_"
HOME_ENV = "AGENTICFLOW_HOME"
PROFILE_ENV = "AGENTICFLOW_PROFILE"
FILE_NAME = "profiles.json"

FIELDS = (
    "backend",
    "url",
    "nats_url",
    "prefix",
    "replicas",
    "partitions",
    "nats_user",
    "nats_password",
    "nats_nkey_seed_file",
    "nats_tls_ca_file",
    "nats_tls_cert_file",
    "nats_tls_key_file",
    "nats_tls_hostname",
    "nats_inbox_prefix",
    "manage_topology",
    "topology_wait_s",
    "security_dir",
    "principal",
    "policy_file",
)
"""The settings a profile keeps when saved from a ``Settings`` object: where the
cluster is and how to reach it, not how a process tunes itself."""


def home() -> Path:
    """The directory holding ``profiles.json``."""
    explicit = os.environ.get(HOME_ENV)
    if explicit:
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config).expanduser() / "agenticflow"


def path() -> Path:
    """The profiles file."""
    return home() / FILE_NAME


def _load() -> dict[str, Any]:
    """The file's content (empty when absent); raises ConfigError when unreadable."""
    file = path()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"current": None, "profiles": {}}
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("profiles", {}), dict):
        raise ConfigError(f"{file}: expected an object with 'profiles'")
    data.setdefault("profiles", {})
    data.setdefault("current", None)
    return data


def _store(data: Mapping[str, Any]) -> None:
    """Write the file atomically with mode 0600; raises ConfigError."""
    from agenticflow.shared.security.seal import write_secret

    file = path()
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    try:
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_secret(file, text.encode())
    except OSError as exc:
        raise ConfigError(f"cannot write {file}: {exc.strerror or exc}") from exc


@contextmanager
def _locked() -> Iterator[None]:
    """Hold the lock of the profiles file (``.profiles.lock`` beside it) for a
    read-modify-write: ``dev``, ``cluster up`` and ``profile save`` running at
    once would otherwise each write back what they read, and lose the others'
    profile. Raises ConfigError."""
    file = path()
    try:
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(file.parent / ".profiles.lock", flags, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot lock {file}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _check_name(name: str) -> str:
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"profile name {name!r}: use letters, digits, '-', '_' or '.'")
    return name


def _plain(value: Any) -> Any:
    """A settings value as JSON: paths and secrets as strings."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    secret = getattr(value, "get_secret_value", None)
    if callable(secret):
        return secret()
    return str(value)


def fields_of(settings_or_fields: Settings | Mapping[str, Any]) -> dict[str, Any]:
    """The profile fields of a ``Settings`` (those in :data:`FIELDS` that differ
    from the defaults, plus the URL and prefix) or of a mapping of field names
    or ``AGENTICFLOW_*`` variable names; raises ConfigError for an unknown name."""
    from agenticflow.shared.ops.config import Settings

    if isinstance(settings_or_fields, Settings):
        defaults = Settings.model_fields
        chosen = {
            name: getattr(settings_or_fields, name)
            for name in FIELDS
            if name in ("nats_url", "prefix")
            or getattr(settings_or_fields, name) != defaults[name].default
        }
        return {k: _plain(v) for k, v in chosen.items() if v is not None}
    fields: dict[str, Any] = {}
    for key, value in settings_or_fields.items():
        name = key[len(ENV_PREFIX) :].lower() if key.startswith(ENV_PREFIX) else key
        if name in ("home", "profile"):
            continue  # where profiles live and which one: not settings
        if name not in Settings.model_fields:
            raise ConfigError(f"{key!r} is not a setting (see `agenticflow profile save -h`)")
        if value is not None:
            fields[name] = _plain(value)
    return fields


def save(
    name: str, settings_or_fields: Settings | Mapping[str, Any], *, make_current: bool = False
) -> dict[str, Any]:
    """Store a profile (replacing one of that name); returns its fields.

    Raises ConfigError for a bad name, an unknown or invalid field, or a file
    that cannot be written."""
    _check_name(name)
    given = fields_of(settings_or_fields)
    valid = _validate(name, given)
    fields = {k: _plain(getattr(valid, k)) for k in given}  # typed: "3" is stored as 3
    with _locked():
        data = _load()
        data["profiles"][name] = fields
        if make_current:
            data["current"] = name
        _store(data)
    return fields


def _validate(name: str, fields: Mapping[str, Any]) -> Settings:
    from agenticflow.shared.ops.config import Settings

    try:
        settings = Settings(**fields)
        _ = settings.names  # validates the prefix
    except (ValueError, ConfigError) as exc:  # pydantic's ValidationError; the prefix
        raise ConfigError(f"profile {name!r}: invalid settings: {exc}") from exc
    return settings


def use(name: str) -> None:
    """Make a stored profile the current one; raises ConfigError when there is none."""
    get(name)  # an unknown one: refused before anything is created or locked
    with _locked():
        data = _load()
        if name not in data["profiles"]:
            raise ConfigError(_unknown(name, data))
        data["current"] = name
        _store(data)


def delete(name: str) -> None:
    """Remove a profile (and un-set it as current); raises ConfigError when absent."""
    known = _load()
    if name not in known["profiles"]:  # refused before anything is created or locked
        raise ConfigError(_unknown(name, known))
    with _locked():
        data = _load()
        if data["profiles"].pop(name, None) is None:
            raise ConfigError(_unknown(name, data))
        if data["current"] == name:
            data["current"] = None
        _store(data)


def names() -> list[str]:
    """The stored profiles' names, sorted."""
    return sorted(_load()["profiles"])


def current() -> str | None:
    """The current profile's name (None when none was chosen)."""
    value = _load()["current"]
    return value if isinstance(value, str) else None


def get(name: str) -> dict[str, Any]:
    """A stored profile's fields; raises ConfigError when there is none."""
    data = _load()
    if name not in data["profiles"]:
        raise ConfigError(_unknown(name, data))
    fields = data["profiles"][name]
    if not isinstance(fields, dict):  # a hand-edited file: one clean error, not a traceback
        raise ConfigError(f"{path()}: profile {name!r} must be an object of settings")
    return dict(fields)


def _unknown(name: str, data: Mapping[str, Any]) -> str:
    known = ", ".join(sorted(data["profiles"])) or "none saved yet"
    return f"no profile {name!r} (profiles: {known})"


def active(profile: str | None = None) -> str | None:
    """The profile :func:`resolve` reads: ``profile``, else
    ``$AGENTICFLOW_PROFILE``, else the current one (None: no profile)."""
    return profile or os.environ.get(PROFILE_ENV) or current()


def env_fields(env: Mapping[str, str]) -> dict[str, str]:
    """The profile fields (:data:`FIELDS`) among ``AGENTICFLOW_*`` variables;
    the others are left out."""
    fields = {}
    for key, value in env.items():
        name = key[len(ENV_PREFIX) :].lower()
        if key.startswith(ENV_PREFIX) and name in FIELDS:
            fields[name] = value
    return fields


CONNECTION_FIELDS = frozenset({"nats_url", "url", "backend"})
"""Where to connect: taken from the environment or the current profile, not mixed."""


def _in_environment(name: str) -> bool:
    wanted = (ENV_PREFIX + name).upper()
    return any(key.upper() == wanted for key in os.environ)


def resolve(
    url: str | None = None,
    profile: str | None = None,
    *,
    prefix: str | None = None,
    implicit: bool = True,
    **overrides: Any,
) -> Settings:
    """The settings to connect with (precedence in the module docstring).

    ``overrides`` are further explicit settings (``None`` values are ignored).
    ``implicit=False``: no profile unless ``profile`` names one (not
    ``AGENTICFLOW_PROFILE``, not the current one), for a coordinator or worker
    process, configured by its environment alone. Raises ConfigError for an
    unknown profile or invalid settings."""
    from agenticflow.shared.ops.config import Settings

    named = (profile or os.environ.get(PROFILE_ENV)) if implicit else profile
    name = named or (current() if implicit else None)
    fields: dict[str, Any] = {}
    nats_url_env = os.environ.get("NATS_URL")
    if name is not None:
        stored = get(name)
        # A named profile beats the environment; the current one gives way to it,
        # and for where to connect as a whole: a server named in the environment
        # is not paired with the profile's backend or other URL.
        elsewhere = nats_url_env or any(_in_environment(k) for k in CONNECTION_FIELDS)
        fields = {
            k: v
            for k, v in stored.items()
            if named or not (_in_environment(k) or (elsewhere and k in CONNECTION_FIELDS))
        }
    if nats_url_env and not _in_environment("nats_url") and not (named and "nats_url" in fields):
        fields["nats_url"] = nats_url_env
    explicit = {k: v for k, v in overrides.items() if v is not None}
    if url:
        # An explicit URL decides the backend: it beats AGENTICFLOW_URL/_BACKEND.
        scheme = url.strip().partition("://")[0].lower()
        if scheme in ("memory", "redis", "rediss", "unix"):
            explicit |= {"url": url, "backend": explicit.get("backend")}
        else:
            explicit |= {"nats_url": url, "url": None, "backend": explicit.get("backend")}
    if prefix:
        explicit["prefix"] = prefix
    try:
        settings = Settings(**{**fields, **explicit})
        _ = settings.names  # validates the prefix
    except (ValueError, ConfigError) as exc:  # pydantic's ValidationError; the prefix
        where = f" (profile {name!r})" if name else ""
        raise ConfigError(f"invalid settings{where}: {exc}") from exc
    return settings


__all__ = [
    "FIELDS",
    "active",
    "current",
    "delete",
    "env_fields",
    "fields_of",
    "get",
    "home",
    "names",
    "path",
    "resolve",
    "save",
    "use",
]
