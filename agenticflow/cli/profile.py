"""``agenticflow profile save|use|list|show|delete``: named connection settings.

Every client command reads its settings through
:func:`agenticflow.profiles.resolve`: ``--nats``/``--prefix`` first, then
``AGENTICFLOW_*`` variables, then ``NATS_URL``, then the profile chosen with
``agenticflow --profile NAME``, ``AGENTICFLOW_PROFILE`` or ``profile use``.
``cluster up`` saves ``local`` and ``dev`` saves ``dev``, each made current.
"""

from __future__ import annotations

from typing import Annotated

import typer

from agenticflow.cli._common import (
    EXIT_INPUT,
    JsonOpt,
    Output,
    OutputOpt,
    complete_profile,
    config_errors,
    emit,
    fail,
    out,
    output_of,
)
from agenticflow.render import esc

profile_app = typer.Typer(
    help="Named connection settings (URL, prefix, replicas, partitions, credentials), "
    "so no variables need pasting.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="Profile name.", autocompletion=complete_profile)]
SECRET_FIELDS = frozenset({"nats_password"})


def _shown(fields: dict[str, object]) -> dict[str, object]:
    """Fields to print: secrets masked (a password or token in the URL too)."""
    return {
        k: "***" if k in SECRET_FIELDS else _url_shown(v) if k == "nats_url" else v
        for k, v in sorted(fields.items())
    }


def _url_shown(urls: object) -> object:
    """NATS URL(s), comma-separated, with each one's password (``user:***@``) or
    token (``***@``) masked."""
    if not isinstance(urls, str):
        return urls
    shown = []
    for url in urls.split(","):
        scheme, sep, rest = url.partition("://")
        if not sep:
            scheme, rest = "", url
        userinfo, at, host = rest.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            rest = f"{user}:***@{host}" if colon else f"***@{host}"
        shown.append(f"{scheme}{sep}{rest}")
    return ",".join(shown)


@profile_app.command("save")
def profile_save(
    name: NameArg,
    nats: Annotated[str | None, typer.Option("--nats", help="NATS server URL(s).")] = None,
    prefix: Annotated[str | None, typer.Option("--prefix", help="Subject prefix.")] = None,
    replicas: Annotated[
        int | None, typer.Option(min=1, max=5, help="Stream replicas (3 on an R3 cluster).")
    ] = None,
    partitions: Annotated[
        int | None, typer.Option(min=1, max=64, help="Coordinator partitions.")
    ] = None,
    setting: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Any other setting, FIELD=VALUE or AGENTICFLOW_FIELD=VALUE (repeatable): "
            "nats_tls_ca_file, nats_nkey_seed_file, security_dir, principal...",
        ),
    ] = None,
    from_env: Annotated[
        bool,
        typer.Option(
            "--from-env", help="Start from this shell's AGENTICFLOW_* (and NATS_URL) variables."
        ),
    ] = False,
    use: Annotated[bool, typer.Option("--use", help="Also make it the current profile.")] = False,
) -> None:
    """Save a profile (replacing one of that name)."""
    import os

    from agenticflow import profiles

    fields: dict[str, object] = {}
    if from_env:
        if os.environ.get("NATS_URL"):
            fields["nats_url"] = os.environ["NATS_URL"]
        fields.update(profiles.env_fields(os.environ))
    for item in setting or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(EXIT_INPUT, f"--set {item!r} must be FIELD=VALUE")
        fields[key.strip()] = value
    given = {"nats_url": nats, "prefix": prefix, "replicas": replicas, "partitions": partitions}
    fields.update({k: v for k, v in given.items() if v is not None})
    with config_errors():
        saved = profiles.save(name, fields, make_current=use)
    now = " (now current)" if use else ""
    out.print(f"saved profile {esc(name)}{now} in {esc(profiles.path())}", soft_wrap=True)
    if not saved:
        out.print("[yellow]note:[/yellow] it sets nothing: the defaults apply")


@profile_app.command("use")
def profile_use(name: NameArg) -> None:
    """Make a profile the current one."""
    from agenticflow import profiles

    with config_errors():
        profiles.use(name)
    out.print(f"using profile {esc(name)}")


@profile_app.command("list")
def profile_list(output: OutputOpt = None, as_json: JsonOpt = False) -> None:
    """The saved profiles; the current one is marked '*'."""
    from agenticflow import profiles

    fmt = output_of(output, as_json)
    with config_errors():
        current = profiles.active()
        rows = [
            {
                "name": name,
                "current": name == current,
                "nats_url": _url_shown(profiles.get(name).get("nats_url")),
            }
            for name in profiles.names()
        ]
    if fmt is not Output.table:
        emit(rows, fmt)
        return
    if not rows:
        out.print("no profiles (cluster up and dev save one; or: agenticflow profile save NAME)")
        return
    for row in rows:
        mark = "*" if row["current"] else " "
        out.print(f"{mark} {esc(row['name'])}  {esc(row['nats_url'] or '')}", soft_wrap=True)


@profile_app.command("show")
def profile_show(
    name: Annotated[
        str | None, typer.Argument(help="Profile name (default: the active one).")
    ] = None,
    resolved: Annotated[
        bool,
        typer.Option(
            "--resolved",
            help="The settings a command would use now: the profile under the environment.",
        ),
    ] = False,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A profile's fields (secrets masked); with --resolved, what a command would
    connect with after the environment and NATS_URL are applied."""
    from agenticflow import profiles

    fmt = output_of(output, as_json)
    with config_errors():
        chosen = name or profiles.active()
        if resolved:
            conf = profiles.resolve(profile=chosen)
            fields: dict[str, object] = {
                k: getattr(conf, k) for k in profiles.FIELDS if getattr(conf, k) is not None
            }
            fields = {k: profiles.fields_of({k: v})[k] for k, v in fields.items()}
        elif chosen is None:
            fail(EXIT_INPUT, "no profile is active: name one (see `agenticflow profile list`)")
        else:
            fields = profiles.get(chosen)
    data = {"name": chosen, "fields": _shown(fields)}
    if fmt is not Output.table:
        emit(data, fmt)
        return
    out.print(f"profile {esc(chosen or '(none)')}" + (" (resolved)" if resolved else ""))
    for key, value in _shown(fields).items():
        out.print(f"  {esc(key)} = {esc(value)}", soft_wrap=True)


@profile_app.command("delete")
def profile_delete(name: NameArg) -> None:
    """Remove a profile."""
    from agenticflow import profiles

    with config_errors():
        profiles.delete(name)
    out.print(f"deleted profile {esc(name)}")


def register(app: typer.Typer) -> None:
    """``profile``, on ``app``."""
    app.add_typer(profile_app, name="profile", rich_help_panel="Setup")


__all__ = ["profile_app", "register"]
