"""Atomic file writes: a reader sees the old file or the new one, never half of one (docs/design.md section 7).

Every file the scripts write (checkpoints, config.json, metrics.json, report.md, CSV, PNG, GIF) goes
through :func:`atomic_write` (or its `atomic_write_bytes` / `atomic_write_text` forms): the bytes go to
a temporary file in the target's directory, which is flushed, fsynced and renamed over the target with
`os.replace` (atomic on POSIX); then the directory is fsynced so the rename itself survives a crash. A
failure at any point leaves the previous file untouched and removes the temporary file.

The temporary file is created like `open(path, "w")` creates a file (mode 0o666 less the umask), so the
result has the permissions any other written file would have (0o644 under the usual umask 022), unlike
`tempfile.mkstemp`'s 0o600. Standard library only: any layer may use it.
"""
from __future__ import annotations

import os
import re
import secrets
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "TEMPORARY_NAME", "remove_stale_temporaries"]

TEMPORARY_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # ".<target name>.<12 hex digits>.tmp"

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> str:
    """Replace ``path`` by what ``write(stream)`` writes into a binary stream, all at once; parent
    directories are created. Returns the path written.

    ``write`` streams into the temporary file ``.<name>.<random>.tmp`` next to the target (no copy of
    the data in memory, e.g. ``lambda stream: torch.save(obj, stream)``); then flush, fsync, rename,
    fsync the directory. If ``write`` or any later stage fails, the target is untouched and the
    temporary file is removed.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    temporary, handle = _create_temporary(directory, os.path.basename(target))
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)
    return target


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """:func:`atomic_write` of ``data`` (bytes, bytearray or memoryview)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data: expected bytes, got {type(data).__name__}")
    return atomic_write(path, lambda stream: stream.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> str:
    """:func:`atomic_write_bytes` of ``text`` encoded (UTF-8 by default, newlines as given)."""
    return atomic_write_bytes(path, text.encode(encoding))


def remove_stale_temporaries(directory: str | os.PathLike) -> list[str]:
    """Delete the temporary files that writes killed midway (SIGKILL, power loss) left in ``directory``.

    Only names of the form this module creates are touched; returns the names removed. Call it when no
    other process writes into ``directory``.
    """
    stale = sorted(name for name in os.listdir(directory) if TEMPORARY_NAME.match(name))
    for name in stale:
        os.unlink(os.path.join(directory, name))
    return stale


def _create_temporary(directory: str, name: str) -> tuple[str, int]:
    """A new, empty file in ``directory`` opened for writing, with the permissions open() would give."""
    while True:
        temporary = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return temporary, os.open(temporary, _NEW_FILE, 0o666)  # the umask applies, as for open()
        except FileExistsError:  # a name drawn twice: draw again
            continue


def _fsync_directory(directory: str) -> None:
    """Make the rename durable: fsync the directory entry (a no-op where directories cannot be opened)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
