"""Built-in tools ``file_read`` and ``file_write``, confined to one directory.

::

    file_read, file_write = file_tools(root="/srv/agent-files", max_bytes=1_000_000)

Safety rules (each refusal is a :class:`~agenticflow.shared.errors.ToolRefusedError`):

- a path is relative to ``root``; one with a ``..`` part, a NUL byte, or an
  absolute path outside ``root`` is refused;
- the path is resolved with every symlink followed (``os.path.realpath``) and
  must stay inside ``root``: a symlink that points out is refused; the
  resolved file is then opened with ``O_NOFOLLOW``, so a symlink swapped in
  for the last part meanwhile is refused too (a swap of a *directory* between
  the check and the open is not covered; keep ``root`` writable only by the
  worker);
- only regular files; reads and writes over ``max_bytes`` are refused (a read
  checks the size before reading and reads at most ``max_bytes + 1`` bytes).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from agenticflow.shared.errors import ConfigError, ToolRefusedError
from agenticflow.worker.tools.spec import Tool, make_tool


class FileRead(BaseModel):
    """Input of ``file_read``."""

    path: str = Field(description="File path relative to the tool's directory")


class FileWrite(BaseModel):
    """Input of ``file_write``."""

    path: str = Field(description="File path relative to the tool's directory")
    content: str
    mode: Literal["overwrite", "append", "create"] = Field(
        default="overwrite", description="'create' refuses to replace an existing file"
    )


class Jail:
    """A directory that paths must stay in."""

    def __init__(self, root: str | os.PathLike[str], *, max_bytes: int) -> None:
        """Raises ConfigError if ``root`` is not a directory or ``max_bytes`` < 1."""
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise ConfigError(f"file tools: {root!s} is not a directory")
        if max_bytes < 1:
            raise ConfigError("file tools: max_bytes must be at least 1")
        self.max_bytes = max_bytes

    def resolve(self, path: str, tool: str) -> str:
        """The real path of ``path`` inside the directory; raises ToolRefusedError."""
        if not path or "\0" in path:
            raise ToolRefusedError(f"{tool}: empty path or NUL byte in {path!r}", tool=tool)
        if ".." in Path(path).parts:
            raise ToolRefusedError(f"{tool}: '..' is not allowed in {path!r}", tool=tool)
        real = os.path.realpath(os.path.join(self.root, path))
        if not self.contains(real):
            why = "an absolute path outside" if os.path.isabs(path) else "a symlink out of"
            raise ToolRefusedError(
                f"{tool}: {path!r} leads out of the tool's directory ({why} it)", tool=tool
            )
        if real == self.root:
            raise ToolRefusedError(f"{tool}: {path!r} is the directory itself", tool=tool)
        return real

    def contains(self, real: str) -> bool:
        """Whether a resolved path is inside the directory."""
        return real == self.root or real.startswith(self.root + os.sep)

    def relative(self, real: str) -> str:
        """A resolved path relative to the directory."""
        return os.path.relpath(real, self.root)


def _read(jail: Jail, params: FileRead, tool: str) -> dict[str, Any]:
    real = jail.resolve(params.path, tool)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ToolRefusedError(f"{tool}: no file {params.path!r}", tool=tool) from None
    except OSError as exc:
        raise ToolRefusedError(f"{tool}: cannot open {params.path!r}: {exc}", tool=tool) from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > jail.max_bytes:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ToolRefusedError(f"{tool}: {params.path!r} is not a regular file", tool=tool)
        raise ToolRefusedError(
            f"{tool}: {params.path!r} has {info.st_size} bytes, over the "
            f"{jail.max_bytes}-byte limit",
            tool=tool,
        )
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(jail.max_bytes + 1)
    if len(data) > jail.max_bytes:
        raise ToolRefusedError(
            f"{tool}: {params.path!r} is over the {jail.max_bytes}-byte limit", tool=tool
        )
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolRefusedError(f"{tool}: {params.path!r} is not UTF-8 text", tool=tool) from None
    return {"path": jail.relative(real), "content": content, "bytes": len(data)}


def _write(jail: Jail, params: FileWrite, tool: str) -> dict[str, Any]:
    data = params.content.encode("utf-8")
    real = jail.resolve(params.path, tool)
    parent = os.path.dirname(real)
    if not jail.contains(os.path.realpath(parent)):  # pragma: no cover - resolve() covers it
        raise ToolRefusedError(f"{tool}: {params.path!r} leads out of the directory", tool=tool)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= {"overwrite": os.O_TRUNC, "append": os.O_APPEND, "create": os.O_EXCL}[params.mode]
    existing = os.path.getsize(real) if params.mode == "append" and os.path.isfile(real) else 0
    if existing + len(data) > jail.max_bytes:
        raise ToolRefusedError(
            f"{tool}: writing {len(data)} bytes to {params.path!r} would exceed the "
            f"{jail.max_bytes}-byte limit",
            tool=tool,
        )
    os.makedirs(parent, exist_ok=True)
    try:
        fd = os.open(real, flags, 0o644)
    except FileExistsError:
        raise ToolRefusedError(f"{tool}: {params.path!r} already exists", tool=tool) from None
    except OSError as exc:
        raise ToolRefusedError(f"{tool}: cannot open {params.path!r}: {exc}", tool=tool) from exc
    with os.fdopen(fd, "wb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ToolRefusedError(f"{tool}: {params.path!r} is not a regular file", tool=tool)
        handle.write(data)
    return {"path": jail.relative(real), "bytes": len(data), "mode": params.mode}


def file_tools(
    root: str | os.PathLike[str],
    *,
    max_bytes: int = 1024 * 1024,
    read_name: str = "file_read",
    write_name: str = "file_write",
    read_permission: str = "fs:read",
    write_permission: str = "fs:write",
    timeout_s: float = 10.0,
) -> tuple[Tool, Tool]:
    """``(file_read, file_write)`` confined to ``root`` (see the module docstring).

    Raises ConfigError if ``root`` is not a directory.
    """
    jail = Jail(root, max_bytes=max_bytes)

    def file_read(params: FileRead) -> dict[str, Any]:
        """Read a UTF-8 text file inside the tool's directory."""
        return _read(jail, params, read_name)

    def file_write(params: FileWrite) -> dict[str, Any]:
        """Write a UTF-8 text file inside the tool's directory."""
        return _write(jail, params, write_name)

    reader = make_tool(
        file_read,
        name=read_name,
        permissions={read_permission},
        timeout_s=timeout_s,
        once=False,
        breaker=None,
    )
    writer = make_tool(
        file_write,
        name=write_name,
        permissions={write_permission},
        timeout_s=timeout_s,
        breaker=None,
    )
    return reader, writer


__all__ = ["FileRead", "FileWrite", "Jail", "file_tools"]
