"""Atomic file writes, file hashing, safe JSON reading and folder confinement.

A file is written as `name.tmp-<pid>` in the same folder and then moved over the
target with `os.replace`, so readers never see a half-written file.

`read_json_file` reads a JSON file that may be hostile (too large, too deeply nested,
not UTF-8, not JSON, a FIFO or a device) and turns every failure into one sentence.
`resolve_inside` resolves a file name against a folder (following symlinks) and refuses
a path that leaves the folder, before anything is opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from diffusion_studio.errors import UsageError

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "atomic_write_bytes",
    "atomic_write_text",
    "read_json_file",
    "resolve_inside",
    "sha256_bytes",
    "sha256_file",
]

MAX_JSON_BYTES = 16 * 1024 * 1024  # no JSON file of the app (model.json, reports, sidecars) comes near
MAX_JSON_DEPTH = 64                # nesting of arrays/objects; the app's own files use fewer than 8


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


def sha256_file(path: str | os.PathLike[str], what: str = "", *, error: type[UsageError] = UsageError) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks; `error` with one sentence if it cannot be read
    ("The <what> <path> cannot be read (<reason>)." when `what` names the file)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        if what:
            raise error(f"The {what} {path} cannot be read ({reason}).") from None
        raise error(f"cannot read {str(path)!r}: {reason}.") from None
    return digest.hexdigest()


def _json_depth_exceeds(value: Any, limit: int) -> bool:
    """True if arrays/objects in `value` nest deeper than `limit` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def read_json_file(
    path: str | os.PathLike[str],
    what: str = "",
    *,
    error: type[UsageError] = UsageError,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """Read and parse a JSON file; `error` (a UsageError subclass) with one sentence on any failure.

    `what` names the file for the user ("model.json", "validation report"); the message reads
    "<what> '<path>' <problem>." Refused: a missing or unreadable file, a folder, a FIFO or
    device, more than `max_bytes` bytes, text that is not UTF-8 (a BOM is accepted), text that
    is not JSON, numbers too long to convert, and arrays/objects nested deeper than `max_depth`.
    """
    path = Path(path)
    label = f"{what} {str(path)!r}" if what else repr(str(path))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)  # a FIFO must not block
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{label} does not exist.") from None
    except OSError as e:
        raise error(f"cannot read {label}: {e.strerror or type(e).__name__}.") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{label} is a folder, not a JSON file.")
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{label} is not a regular file.")
        if info.st_size > max_bytes:
            raise error(f"{label} is too large to be read: {info.st_size} bytes, the limit is {max_bytes}.")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(max_bytes + 1)  # the file may have grown since fstat
    except OSError as e:
        raise error(f"cannot read {label}: {e.strerror or type(e).__name__}.") from None
    finally:
        os.close(fd)
    if len(raw) > max_bytes:
        raise error(f"{label} is too large to be read: more than {max_bytes} bytes.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{label} is not UTF-8 text (invalid byte at offset {e.start}).") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{label} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.") from None
    except RecursionError:
        raise error(
            f"{label} nests arrays or objects too deeply to be read (the limit is {max_depth} levels)."
        ) from None
    except ValueError:  # e.g. an integer literal longer than Python converts (4300 digits)
        raise error(f"{label} holds a number too long to be read.") from None
    if _json_depth_exceeds(data, max_depth):
        raise error(f"{label} nests arrays or objects too deeply to be read (the limit is {max_depth} levels).")
    return data


def resolve_inside(
    folder: str | os.PathLike[str],
    name: str | os.PathLike[str],
    what: str = "",
    *,
    error: type[UsageError] = UsageError,
) -> Path:
    """The resolved path of `folder/name`; `error` if it leaves the (resolved) folder.

    Symlinks are followed, so a link to a file outside the folder is refused, while a link to
    another file inside it is accepted. Nothing is opened or read. The path need not exist.
    """
    label = what or repr(str(name))
    try:
        root = Path(folder).resolve()
        target = (root / name).resolve()
    except (OSError, RuntimeError, ValueError) as e:  # symlink loop, NUL byte
        raise error(f"cannot resolve {label} in {str(folder)!r}: {getattr(e, 'strerror', None) or e}.") from None
    if target == root:
        raise error(f"{label} in {str(folder)!r} names the folder itself, not a file in it.")
    if not target.is_relative_to(root):
        raise error(f"{label} in {str(folder)!r} leads outside the folder (to {str(target)!r}); refusing to read it.")
    return target
