"""Atomic file writes and file hashing.

A file is written as `name.tmp-<pid>` in the same folder and then moved over the
target with `os.replace`, so readers never see a half-written file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from diffusion_studio.errors import UsageError

__all__ = ["atomic_write_bytes", "atomic_write_text", "sha256_file", "sha256_bytes"]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically; UsageError with one sentence if it cannot be written."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        reason = e.strerror or type(e).__name__
        raise UsageError(f"cannot write {str(path)!r}: {reason}.") from None
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks; UsageError if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UsageError(f"cannot read {str(path)!r}: {reason}.") from None
    return digest.hexdigest()
