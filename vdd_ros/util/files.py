"""Atomic writes and hashing: the only place files are written or digested.

A reader (the controller, a resumed training, a second process) must see either the old file
or the new one, never half of one; so every writer goes through ``atomic_write``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

_BLOCK = 1 << 20


def atomic_write(path: str | os.PathLike[str], data: bytes | Callable[[str], None], mode: int = 0o644) -> None:
    """Write ``data`` (bytes, or a function that writes a given temporary path) and rename it over ``path``.

    The temporary file lives in the same folder, is flushed to disk before the rename, and is
    removed if anything fails (including Ctrl-C). ``mode`` replaces mkstemp's 0600 so a
    controller running as another user can read the result.
    """
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write(path, text.encode())


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 1) -> None:
    """JSON with non-finite floats refused (they are not JSON) and numpy scalars as floats."""
    atomic_write_text(path, json.dumps(obj, indent=indent, default=float, allow_nan=False) + "\n")


def atomic_replace_dir(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Move the complete folder ``source`` to ``target``, replacing an old ``target``.

    The old folder is first renamed aside, so at every moment ``target`` is either the old
    complete folder or the new one; only the window between the two renames has neither.
    """
    source, target = pathlib.Path(source), pathlib.Path(target)
    aside = target.with_name(f".{target.name}.old")
    shutil.rmtree(aside, ignore_errors=True)
    if target.exists():
        os.replace(target, aside)
    os.replace(source, target)
    shutil.rmtree(aside, ignore_errors=True)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(*paths: str | os.PathLike[str]) -> str:
    """Hex SHA-256 over the bytes of ``paths`` in order, read in 1 MB blocks."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(_BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()


def write_with_sha256(path: str | os.PathLike[str], data: bytes) -> str:
    """Write ``data`` and a ``<path>.sha256`` sidecar (``sha256sum -c`` format), both atomically."""
    path = pathlib.Path(path)
    digest = sha256_bytes(data)
    atomic_write(path, data)
    atomic_write(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n".encode())
    return digest
