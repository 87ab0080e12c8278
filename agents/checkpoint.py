"""Checkpoints that are never half-written and never loaded corrupt (DESIGN.md section 7).

File layout (all integers big-endian):

    magic   8 bytes   b"HECKPT01" (format and version)
    length  8 bytes   number of payload bytes that follow the header
    sha256 32 bytes   digest of the payload bytes
    payload           the bytes of ``torch.save(payload_dict)``

`save_checkpoint` writes with `homoecon_env.files.atomic_write_bytes`: a temporary file in the
target's directory, flushed, fsynced and renamed over the target with `os.replace` (atomic on
POSIX), then the directory fsynced so the rename itself survives a crash. A failure at any point
leaves the previous checkpoint untouched.

`load_checkpoint` checks that the file exists, is not empty, carries the magic, has exactly the
announced length and the right digest, and only then unpickles it. Anything else raises
`CheckpointError` (a ValueError) naming the file and what is wrong.
"""
from __future__ import annotations

import hashlib
import io
import os
import struct

import torch

from homoecon_env.files import atomic_write_bytes

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
