"""Putting a finished folder in place of another, so that a kill at any moment loses nothing.

A new folder is built beside its target as `.NAME.tmp-<pid>-…` and then swapped in:

- On Linux, `renameat2(RENAME_EXCHANGE)` exchanges the two paths in one atomic step: the target
  path holds the old folder or the new one at every moment, never nothing. The old folder, now
  under the temp name, is then deleted.
- Elsewhere (another OS, or a file system that answers EINVAL/ENOSYS), two renames: the old
  folder goes to `.NAME.old-<pid>`, the new one to the target. A kill between them leaves the
  target missing, so the next run restores it from `.NAME.old-<pid>` (`tidy_leftovers`).

Invariants the recovery relies on: a `.NAME.old-<pid>` folder is always the complete previous
folder (it is renamed to a temp name before it is deleted), and a `.NAME.tmp-<pid>-…` folder is
garbage once process <pid> is gone. Only leftovers of dead processes are touched, so two
exporters writing beside each other do not disturb one another.

Standard library only (no torch, numpy or onnx), so a test can kill it mid-swap cheaply.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

RENAME_EXCHANGE = 2  # <linux/fs.h>
_AT_FDCWD = -100
# errnos meaning "this kernel or file system cannot exchange": fall back to two renames.
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, getattr(errno, "ENOTSUP", errno.EINVAL),
                getattr(errno, "EOPNOTSUPP", errno.EINVAL)}

# Folders this process is using right now (its own temp and .old folders): never leftovers, even
# though their PID is alive. A folder with this process's PID that is not here was left by an
# earlier process that had the same PID (containers often reuse PID 1).
_ACTIVE: set[Path] = set()


def _leftover_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.(tmp|old)-(\d+)(?:-.*)?", re.DOTALL)


def old_name(target: Path, pid: int | None = None) -> Path:
    """Where the two-rename swap parks the previous folder: `.NAME.old-<pid>`."""
    return target.with_name(f".{target.name}.old-{os.getpid() if pid is None else pid}")


def staging_folder(target: Path) -> Path:
    """A new empty hidden folder beside `target` (`.NAME.tmp-<pid>-…`), owned by this process."""
    target = Path(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    _ACTIVE.add(tmp)
    return tmp


def discard(folder: Path) -> None:
    """Delete a temp folder of this process (if it still exists) and forget it."""
    folder = Path(folder)
    try:
        if folder.exists() or folder.is_symlink():
            _rmtree(folder)
    finally:
        _ACTIVE.discard(folder)


# The file-system steps, as module functions so that tests can kill the process between them.
def _rename(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _renameat2(a: bytes, b: bytes, flags: int) -> int:
    """renameat2(2) through libc: 0, or the errno (ENOSYS when libc has no renameat2)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return errno.ENOSYS
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    if func(_AT_FDCWD, a, _AT_FDCWD, b, flags) == 0:
        return 0
    return ctypes.get_errno() or errno.EIO


def exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two existing paths; False when this system cannot (nothing changed).

    Raises OSError for a real failure (a missing path, no permission).
    """
    if not sys.platform.startswith("linux"):
        return False
    code = _renameat2(os.fsencode(a), os.fsencode(b), RENAME_EXCHANGE)
    if code == 0:
        return True
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def replace_folder(new: Path, target: Path) -> None:
    """Put the complete folder `new` (a sibling of `target`) at `target`, then delete the old one.

    At every moment `target` holds the old folder or the new one (with the exchange), or the old
    one is at `.NAME.old-<pid>` for `tidy_leftovers` to restore (without it). On an error the old
    folder is back at `target` and `new` is untouched.
    """
    new, target = Path(new), Path(target)
    if not (target.exists() or target.is_symlink()):
        _rename(new, target)
        _ACTIVE.discard(new)
        return
    if exchange(new, target):
        # `new` now names the old folder: a temp name, so a kill here leaves only garbage.
        discard(new)
        return
    old = old_name(target)
    if old.exists():  # a leftover of an earlier process with our PID
        _rmtree(old)
    _ACTIVE.add(old)
    try:
        _rename(target, old)
        try:
            _rename(new, target)
        except BaseException:
            _rename(old, target)  # put the previous folder back
            raise
        _ACTIVE.discard(new)
        # Renamed to a temp name before deleting: a `.old-` folder is always complete.
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-old-", dir=target.parent))
        _ACTIVE.add(trash)
        _rename(old, trash)
        discard(trash)
    finally:
        _ACTIVE.discard(old)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (unknown counts as alive: then nothing is deleted)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _windows_pid_alive(pid: int) -> bool:  # pragma: no cover - Windows only
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # type: ignore[attr-defined]  # ERROR_ACCESS_DENIED: it exists
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _is_leftover(folder: Path, pid: int) -> bool:
    if folder in _ACTIVE:
        return False
    return pid == os.getpid() or not pid_alive(pid)


def tidy_leftovers(target: Path) -> list[str]:
    """Clean up after exporters killed while writing `target`; returns notes on what was done.

    If `target` is missing and an interrupted swap left the previous folder at `.NAME.old-<pid>`,
    that folder is put back at `target` (the newest one when there are several). Other
    `.NAME.old-*` and `.NAME.tmp-*` folders of processes that no longer run are deleted.
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return []
    pattern = _leftover_pattern(target.name)
    olds: list[Path] = []
    temps: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or entry.is_symlink() or not entry.is_dir():
            continue
        if not _is_leftover(entry, int(match.group(2))):
            continue
        (olds if match.group(1) == "old" else temps).append(entry)
    notes: list[str] = []
    if olds and not (target.exists() or target.is_symlink()):
        olds.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        restored = olds.pop(0)
        try:
            _rename(restored, target)
        except OSError:  # another process restored it (or wrote the target) first: keep both
            pass
        else:
            notes.append(f"restored {target} from {restored.name}, left by an interrupted replace")
    for folder in olds + temps:
        _rmtree(folder)
    if olds or temps:
        notes.append(f"removed {len(olds) + len(temps)} leftover folder(s) of interrupted exports "
                     f"beside {target}")
    return notes
