"""Checkpoints that are never half-written and never loaded corrupt (DESIGN.md section 7).

File layout (all integers big-endian):

    magic   8 bytes   b"HECKPT01" (format and version)
    length  8 bytes   number of payload bytes that follow the header
    sha256 32 bytes   digest of the payload bytes
    payload           the bytes of ``torch.save(payload_dict)``

`save_checkpoint` writes to a temporary file in the target's directory, flushes and fsyncs it,
renames it over the target with `os.replace` (atomic on POSIX) and fsyncs the directory so the
rename itself survives a crash. A failure at any point leaves the previous checkpoint untouched.

`load_checkpoint` checks that the file exists, is not empty, carries the magic, has exactly the
announced length and the right digest, and only then unpickles it. Anything else raises
`CheckpointError` (a ValueError) naming the file and what is wrong.
"""
from __future__ import annotations

import hashlib
import io
import os
import struct
import tempfile

import torch

MAGIC = b"HECKPT01"
HEADER = struct.Struct(">8sQ32s")  # magic, payload length, sha256 of the payload


class CheckpointError(ValueError):
    """A checkpoint file is missing, empty, truncated, corrupt or not a HomoEcon checkpoint."""


def save_checkpoint(path: str | os.PathLike, payload: dict) -> str:
    """Write ``payload`` to ``path`` atomically with a SHA-256 checksum. Returns the path written."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    return atomic_write_bytes(path, HEADER.pack(MAGIC, len(body), hashlib.sha256(body).digest()) + body)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Replace ``path`` by ``data`` all at once: temporary file, flush, fsync, rename, fsync the directory.

    Readers see the old file or the new one, never a mixture; a failure leaves the old file intact
    and removes the temporary file. Parent directories are created. Returns the path written.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as stream:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(stream.fileno(), 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)
    return target


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by `save_checkpoint`; refuse it unless the checksum matches."""
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise CheckpointError(f"checkpoint {source!r}: no such file")
    with open(source, "rb") as stream:
        data = stream.read()
    if not data:
        raise CheckpointError(f"checkpoint {source!r}: the file is empty (0 bytes)")
    if len(data) < HEADER.size:
        raise CheckpointError(f"checkpoint {source!r}: truncated header ({len(data)} bytes, "
                              f"expected at least {HEADER.size})")
    magic, length, digest = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CheckpointError(f"checkpoint {source!r}: not a HomoEcon checkpoint (magic bytes {magic!r}, "
                              f"expected {MAGIC!r})")
    body = data[HEADER.size:]
    if len(body) != length:
        state = "truncated" if len(body) < length else "has trailing bytes"
        raise CheckpointError(f"checkpoint {source!r}: {state} (payload is {len(body)} bytes, "
                              f"header says {length})")
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"checkpoint {source!r}: checksum mismatch (SHA-256 of the payload differs "
                              f"from the header); the file is corrupt")
    # weights_only=False: the payload holds Python objects the restricted unpickler refuses (numpy
    # and Python RNG states, the economy's TradeResult warm start, argument dicts). It is unpickled
    # only after the checksum proved these are the bytes save_checkpoint wrote. The checksum guards
    # against corruption, not tampering: load only checkpoints you (or someone you trust) wrote.
    payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=False)
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {source!r}: payload is a {type(payload).__name__}, expected a dict")
    return payload


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
