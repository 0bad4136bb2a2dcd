"""sha256 of large files, remembered per (resolved path, size, mtime, ctime, inode) between processes.

Every start checks the 45 MB shared text encoder against the sha256 its model was trained with;
hashing it costs ~0.1 s of a ~0.9 s `diffusion-studio generate`. The digest is kept in the user
cache folder ($DIFFUSION_STUDIO_CACHE_DIR, else $XDG_CACHE_HOME/diffusion-studio, else
~/.cache/diffusion-studio) and reused while the file's size, modification time and inode are
unchanged; a file that is rewritten or replaced gets a new ctime or inode and is hashed again.
A cache that cannot be read or written is ignored: the file is hashed as before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from diffusion_studio.core.files import atomic_write_text, sha256_file
from diffusion_studio.errors import UsageError

CACHE_ENV = "DIFFUSION_STUDIO_CACHE_DIR"
CACHE_FILE = "file-sha256.json"
MAX_ENTRIES = 64  # a handful of encoders and bundles; the oldest entries go first


def cache_path() -> Path:
    folder = os.environ.get(CACHE_ENV, "").strip()
    if folder:
        return Path(folder) / CACHE_FILE
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "diffusion-studio" / CACHE_FILE


def _read() -> dict[str, dict[str, object]]:
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def cached_sha256(path: Path, what: str = "", *, error: type[UsageError] = UsageError) -> str:
    """The file's hex sha256, from the cache when its size, mtime, ctime and inode are unchanged."""
    try:
        stat = path.stat()
        key = str(path.resolve())
    except OSError:
        return sha256_file(path, what, error=error)  # the one-sentence error for an unreadable file
    # ctime changes on every write and cannot be set back (unlike mtime through os.utime).
    facts = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns, "inode": stat.st_ino}
    entries = _read()
    entry = entries.get(key)
    digest = entry.get("sha256") if entry else None
    if entry and isinstance(digest, str) and len(digest) == 64 and all(entry.get(k) == v for k, v in facts.items()):
        return digest
    digest = sha256_file(path, what, error=error)
    entries.pop(key, None)
    entries[key] = {**facts, "sha256": digest}
    kept = dict(list(entries.items())[-MAX_ENTRIES:])
    target = cache_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, json.dumps(kept, indent=1))
    except (OSError, UsageError):
        pass  # a read-only home: hash every time, as before
    return digest
