"""``agenticflow keys``: the key directory behind signed and encrypted messages.

``keys init DIR`` makes a directory with a data key and one identity per role;
``keys add`` / ``keys revoke`` manage identities in the trust store; ``keys
rotate`` adds a new current data key (old ones stay for reading); ``keys list``
shows what a directory holds. Processes read it through
``AGENTICFLOW_SECURITY_DIR`` (see :mod:`agenticflow.shared.security.seal`). Running processes
load the keys when they start: restart them (one at a time) after a change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agenticflow.cli._common import (
    JsonOpt,
    Output,
    OutputOpt,
    config_errors,
    emit,
    out,
    output_of,
)
from agenticflow.render import esc

keys_app = typer.Typer(
    help="Signing and encryption keys (AGENTICFLOW_SECURITY_DIR).", no_args_is_help=True
)

_DEFAULT_IDENTITIES = ("coordinator:coordinator", "worker:worker", "client:client")

DirArg = Annotated[Path, typer.Argument(help="The key directory.")]


def _identity(text: str) -> tuple[str, str]:
    principal, _, role = text.partition(":")
    return principal, role or principal


@keys_app.command("init")
def keys_init(
    directory: DirArg,
    identity: Annotated[
        list[str] | None,
        typer.Option(
            "--identity",
            "-i",
            help="PRINCIPAL:ROLE to create (repeatable); default: coordinator, worker, client.",
        ),
    ] = None,
) -> None:
    """Create a key directory: a data key and trusted identities."""
    from agenticflow.shared.security.seal import init_keys

    with config_errors():
        made = init_keys(directory, [_identity(i) for i in identity or _DEFAULT_IDENTITIES])
    for item in made:
        out.print(f"{esc(item.principal)} ({esc(item.role)}): key {esc(item.kid)}")
    out.print(f"data key and trust store written to {esc(directory)}")


@keys_app.command("add")
def keys_add(
    directory: DirArg,
    principal: Annotated[str, typer.Argument(help="Who the key belongs to.")],
    role: Annotated[str, typer.Option(help="coordinator, worker, client or admin.")] = "worker",
) -> None:
    """Add an identity (a new signing key) to the trust store."""
    from agenticflow.shared.security.seal import add_identity

    with config_errors():
        made = add_identity(directory, principal, role)
    out.print(f"{esc(made.principal)} ({esc(made.role)}): key {esc(made.kid)}")


@keys_app.command("revoke")
def keys_revoke(directory: DirArg, principal: str) -> None:
    """Remove every trusted key of a principal: its messages are refused from now on."""
    from agenticflow.shared.security.seal import revoke

    with config_errors():
        dropped = revoke(directory, principal)
    out.print(f"revoked {esc(', '.join(dropped))}")


@keys_app.command("rotate")
def keys_rotate(directory: DirArg) -> None:
    """Add a new current data key; older keys stay to read what they encrypted."""
    from agenticflow.shared.security.seal import rotate_data_key

    with config_errors():
        keys = rotate_data_key(directory)
    out.print(f"current data key: {esc(keys.current)} ({len(keys.keys)} kept for reading)")


@keys_app.command("list")
def keys_list(directory: DirArg, output: OutputOpt = None, as_json: JsonOpt = False) -> None:
    """Show the trusted identities and data key ids (never the secrets)."""
    from agenticflow.shared.security.seal import DATA_KEYS_FILE, TRUST_FILE, DataKeys, TrustStore

    with config_errors():
        trust = TrustStore.load(directory / TRUST_FILE)
        data = DataKeys.load(directory / DATA_KEYS_FILE)
    identities = [
        {"kid": k.kid, "principal": k.principal, "role": k.role}
        for k in sorted(trust.keys.values(), key=lambda k: k.principal)
    ]
    fmt = output_of(output, as_json)
    if fmt is Output.jsonl:
        emit(identities, fmt)
        return
    if fmt is Output.json:
        listing = {
            "identities": identities,
            "data_keys": sorted(data.keys),
            "current_data_key": data.current,
        }
        emit(listing, fmt)
        return
    for entry in identities:
        out.print(f"{esc(entry['principal']):<20} {esc(entry['role']):<12} {esc(entry['kid'])}")
    out.print(f"data keys: {esc(', '.join(sorted(data.keys)))} (current {esc(data.current)})")


__all__ = ["keys_app"]
