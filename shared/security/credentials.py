"""How a process authenticates to NATS: credentials, TLS and its inbox prefix.

:func:`connect_options` turns the ``AGENTICFLOW_NATS_*`` settings into the
keyword arguments :meth:`agenticflow.shared.bus.transport.Bus.connect` gives ``nats.connect``.
``agenticflow nats-config`` writes those settings per role.
"""

from __future__ import annotations

import importlib.util
import logging
import ssl
from typing import Any

from agenticflow.shared.errors import ConfigError
from agenticflow.shared.ops.config import Settings

_TLS_EOF_NOTICE = "returning true from eof_received() has no effect when using ssl"


class _QuietTlsEof(logging.Filter):
    """Drops the notice asyncio logs whenever a TLS connection made by nats-py
    closes (its stream protocol was built before the TLS upgrade): harmless,
    and printed by every command otherwise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _TLS_EOF_NOTICE


def _quiet_tls_eof() -> None:
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _QuietTlsEof) for f in logger.filters):
        logger.addFilter(_QuietTlsEof())


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the connection: None unless a ``tls://`` URL or a TLS
    file is given. Raises ConfigError for a certificate without its key (or the
    reverse) and for files that cannot be loaded."""
    s = settings
    cert, key = s.nats_tls_cert_file, s.nats_tls_key_file
    if (cert is None) != (key is None):
        raise ConfigError(
            "AGENTICFLOW_NATS_TLS_CERT_FILE and AGENTICFLOW_NATS_TLS_KEY_FILE go together"
        )
    wanted = any(url.startswith("tls://") for url in s.servers)
    if not wanted and s.nats_tls_ca_file is None and cert is None:
        return None
    try:
        context = ssl.create_default_context(
            cafile=str(s.nats_tls_ca_file) if s.nats_tls_ca_file else None
        )
        if cert is not None and key is not None:
            context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS files: {exc}") from exc
    _quiet_tls_eof()
    return context


def connect_options(settings: Settings) -> dict[str, Any]:
    """``nats.connect`` keyword arguments for the settings' credentials, TLS and
    inbox prefix; raises ConfigError for unreadable files or a missing package."""
    s = settings
    options: dict[str, Any] = {"inbox_prefix": s.nats_inbox_prefix}
    context = tls_context(s)
    if context is not None:
        options["tls"] = context
        if s.nats_tls_hostname:
            options["tls_hostname"] = s.nats_tls_hostname
    if s.nats_user:
        options["user"] = s.nats_user
    if s.nats_password is not None:
        options["password"] = s.nats_password.get_secret_value()
    if s.nats_nkey_seed_file is not None:
        if not s.nats_nkey_seed_file.is_file():
            raise ConfigError(f"no nkey seed file at {s.nats_nkey_seed_file}")
        if importlib.util.find_spec("nkeys") is None:
            raise ConfigError("nkey authentication needs the nkeys package (nats-py[nkeys])")
        options["nkeys_seed"] = str(s.nats_nkey_seed_file)
    return options


__all__ = ["connect_options", "tls_context"]
