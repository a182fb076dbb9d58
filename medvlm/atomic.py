"""Writing a file so that a reader, or a crash, sees the old file or the complete new one, never a torn one.

One helper for every file the project writes that someone depends on: the annotation store's
images and exports, a checkpoint's ``medvlm.json``, image blobs unpacked from a dataset.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

PARTIAL_SUFFIX = ".partial"
"""Suffix of files being written (``.<name>.<uuid>.partial`` beside the target); never read as data."""


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` through ``write(tmp)`` on a temporary sibling, fsync it, ``os.replace`` it, fsync the folder.

    ``write`` receives the temporary path and writes the whole content there (a ``write_bytes``
    call, ``dataset.to_parquet``...). The temporary file is removed if anything fails.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> atomic_write(folder / "note.txt", lambda tmp: tmp.write_text("kept")).read_text()
        'kept'
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)
    return target


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); Windows cannot open folders and does not need it."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
