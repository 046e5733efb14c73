"""Atomic file writes with checksums, JSON and safe file names: the one implementation of each.

Every file saliencybench writes goes through :func:`atomic_write_bytes`: a temporary file in
the same folder, flushed and ``fsync``-ed, made readable as a normal file would be (``mkstemp``
creates 0600 files), then renamed over the target. A run killed at any point leaves only
complete files. With ``checksum=True`` a SHA-256 sidecar ``<name>.sha256`` is written after
the data; :func:`read_verified` trusts a file only when the two match.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any


def digest(data: bytes) -> str:
    """SHA-256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_temp(folder: Path, name: str, data: bytes) -> str:
    """``data`` in a fsync-ed, normally readable temporary file next to ``name``; its path."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write_bytes(path: str | Path, data: bytes, *, checksum: bool = False) -> None:
    """Write ``data`` to ``path`` atomically; with ``checksum`` also its ``.sha256`` sidecar.

    The data is renamed into place first and its checksum second, so a kill between the two
    leaves a mismatch (the file is then recomputed, never trusted).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(path.parent, path.name, data)
    try:
        side_tmp = None
        if checksum:
            side = path.with_name(path.name + ".sha256")
            side_tmp = _write_temp(path.parent, side.name, digest(data).encode())
        os.replace(tmp, path)
        if side_tmp is not None:
            os.replace(side_tmp, side)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str, *, checksum: bool = False) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode(), checksum=checksum)


def atomic_torch_save(path: str | Path, obj: Any, *, checksum: bool = False) -> None:
    """``torch.save(obj)`` to ``path`` atomically (serialised in memory, then written)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue(), checksum=checksum)


def read_verified(path: str | Path) -> bytes | None:
    """File contents if the file and a matching checksum sidecar exist, else None."""
    path = Path(path)
    side = path.with_name(path.name + ".sha256")
    if not path.is_file() or not side.is_file():
        return None
    data = path.read_bytes()
    if side.read_text().strip() != digest(data):
        return None
    return data


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented, key-sorted JSON (non-JSON values via ``str``), atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def config_key(obj: Any) -> str:
    """Short stable hash of a JSON-able description (method params, dataset params, ...)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def safe_filename(name: str) -> str:
    """A file-system safe rendering of a name (registry names may contain '@', ':', '/')."""
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", str(name))
