"""Checkpoints that never run code on load, are never half-written and never load corrupt
(docs/design.md section 7).

A checkpoint is an ordinary ``torch.save`` archive of the plain dict

    {"format": "homoecon-checkpoint/2", "sha256": <hex digest>, "payload": <the payload>}

holding only plain data (dict with str keys, list, tuple, str, int, float, bool, None and dense
torch tensors), so ``torch.load(path, weights_only=True)`` reads it: its restricted unpickler builds
nothing else, and in particular calls no function named in the file. `load_checkpoint` loads it
exactly that way and never otherwise.

The digest is a SHA-256 over the payload's contents (`payload_digest`: each key, each scalar's type
and value, each tensor's dtype, shape and bytes, in order), independent of torch's serializer
version. It guards against corruption, not tampering (whoever can write the file can write a
matching digest); tampering can at worst change numbers, never run code.

`save_checkpoint` refuses anything that is not plain data with a TypeError naming the key path,
before any file is touched, then streams ``torch.save`` into a temporary file in the target's
directory (no in-memory copy of the payload), flushes, fsyncs and renames it over the target with
`os.replace` (atomic on POSIX), then fsyncs the directory. A failure at any point leaves the
previous checkpoint untouched and removes the temporary file (``.<name>.<random>.tmp``).

Load failures (missing, empty, truncated or corrupt file, not a checkpoint, the old ``HECKPT01``
format, a refused unpickling, a checksum mismatch) raise `CheckpointError` (a ValueError) naming
the file and the problem.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import struct
from collections import OrderedDict
from typing import Any

import torch

from homoecon_env.files import atomic_write

FORMAT = "homoecon-checkpoint/2"
OLD_MAGIC = b"HECKPT01"  # the first format: a header in front of a full (code-running) pickle
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's archive is a zip file


class CheckpointError(ValueError):
    """A checkpoint file is missing, empty, truncated, corrupt, unsafe or not a HomoEcon checkpoint."""


def payload_digest(payload: Any, path: str = "payload") -> str:
    """SHA-256 (hex) over the contents of plain data; TypeError naming the key path for anything else."""
    digest = hashlib.sha256()
    _feed(digest, payload, path)
    return digest.hexdigest()


def _feed(digest, value: Any, path: str) -> None:
    """Hash `value` with a type tag and a length before every variable-size item (so no two payloads
    share a byte stream); refuse what is not plain data."""
    kind = type(value)
    if kind in (dict, OrderedDict):
        digest.update(b"d" + struct.pack(">Q", len(value)))
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"{path}: checkpoint dict keys must be str, got {type(key).__name__} {key!r}")
            _feed(digest, key, f"{path}[{key!r}]")
            _feed(digest, item, f"{path}[{key!r}]")
    elif kind in (list, tuple):
        digest.update((b"l" if kind is list else b"t") + struct.pack(">Q", len(value)))
        for index, item in enumerate(value):
            _feed(digest, item, f"{path}[{index}]")
    elif kind is str:
        data = value.encode("utf-8", "surrogatepass")
        digest.update(b"s" + struct.pack(">Q", len(data)) + data)
    elif kind is bool:
        digest.update(b"T" if value else b"F")
    elif kind is int:
        data = str(value).encode()
        digest.update(b"i" + struct.pack(">Q", len(data)) + data)
    elif kind is float:
        digest.update(b"f" + struct.pack(">d", value))
    elif value is None:
        digest.update(b"n")
    elif kind in (torch.Tensor, torch.nn.Parameter) and value.layout == torch.strided and not value.is_quantized:
        tensor = value.detach().cpu()
        header = f"{tensor.dtype}|{tuple(tensor.shape)}".encode()
        digest.update(b"x" + struct.pack(">Q", len(header)) + header)
        if tensor.numel():  # one tensor at a time: a copy only where the tensor is not contiguous
            digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    else:
        raise TypeError(f"{path}: checkpoints hold only dict/list/tuple/str/int/float/bool/None and dense "
                        f"torch tensors, got {kind.__module__}.{kind.__qualname__}")


def save_checkpoint(path: str | os.PathLike, payload: dict) -> str:
    """Write ``payload`` (a dict of plain data) to ``path`` atomically with its digest. Returns the path.

    Raises TypeError naming the key path of the first non-plain value, before touching any file.
    """
    if type(payload) is not dict:
        raise TypeError(f"payload: expected a dict, got {type(payload).__name__}")
    document = {"format": FORMAT, "sha256": payload_digest(payload), "payload": payload}
    # streamed into the temporary file: tensors are written from their own memory, no second copy
    return atomic_write(path, lambda stream: torch.save(document, stream))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The payload of a checkpoint written by `save_checkpoint`, loaded with ``weights_only=True``
    and refused unless its digest matches. Raises CheckpointError naming the file and the problem."""
    source = os.fspath(path)
    where = f"checkpoint {source!r}"
    if not os.path.isfile(source):
        raise CheckpointError(f"{where}: no such file")
    with open(source, "rb") as stream:
        head = stream.read(len(OLD_MAGIC))
    if not head:
        raise CheckpointError(f"{where}: the file is empty (0 bytes)")
    if head == OLD_MAGIC:
        raise CheckpointError(f"{where}: written in the old HECKPT01 format, which is no longer read because "
                              "loading it unpickles arbitrary objects (it can run code); start a new run")
    if len(head) < len(ZIP_MAGIC):
        raise CheckpointError(f"{where}: truncated ({len(head)} bytes, too short for a torch archive)")
    if head[:len(ZIP_MAGIC)] != ZIP_MAGIC:
        raise CheckpointError(f"{where}: not a HomoEcon checkpoint (starts with {head[:4]!r}, not a torch archive)")
    try:
        document = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{where}: unpickling refused: the file holds objects other than tensors, numbers, "
                              f"strings and plain containers ({_refusal(error)}); it was not loaded") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, struct.error) as error:
        raise CheckpointError(f"{where}: truncated or corrupt (torch cannot read the archive: "
                              f"{type(error).__name__}: {str(error)[:200]})") from None
    if not (type(document) is dict and document.get("format") == FORMAT and type(document.get("sha256")) is str
            and type(document.get("payload")) is dict):
        keys = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise CheckpointError(f"{where}: not a HomoEcon checkpoint (expected a dict with format {FORMAT!r}, "
                              f"sha256 and payload; got {keys})")
    try:
        digest = payload_digest(document["payload"])
    except TypeError as error:  # weights_only admits a few types save_checkpoint refuses
        raise CheckpointError(f"{where}: not a HomoEcon checkpoint ({error})") from None
    if digest != document["sha256"]:
        raise CheckpointError(f"{where}: checksum mismatch (SHA-256 of the payload is {digest[:16]}..., the file "
                              f"says {document['sha256'][:16]}...); the file is corrupt")
    return document["payload"]


def _refusal(error: Exception) -> str:
    """The reason in torch's weights_only refusal (e.g. "Unsupported global: GLOBAL io.open"), without
    its advice to load the file unsafely."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    text = text.strip().split(" was not an allowed global")[0].splitlines()[0] if text.strip() else ""
    return text[:200] or type(error).__name__

