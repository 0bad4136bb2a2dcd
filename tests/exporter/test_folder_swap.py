"""Replacing a bundle folder with nothing lost at any moment (issue 9, section 3).

Kills are real: a child process runs `replace_folder` and calls `os._exit` before its k-th
file-system step (a delete is cut after its first file), for every k. After each kill the
target must hold the old or the new folder, complete (with the atomic exchange), or be
restorable from `.NAME.old-<pid>` (without it); the next run's `tidy_leftovers` then leaves
exactly one complete folder and no leftovers. No torch here.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diffusion_studio.errors import UsageError
from exporter import bundle_writer as bw
from exporter import folder_swap as fs

REPO = Path(__file__).resolve().parents[2]
OLD = {"model.json": "old model", "unet.onnx": "old graph", "validation.json": "old report"}
NEW = {"model.json": "new model", "unet.onnx": "new graph", "notes.txt": "new notes"}

CHILD = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import exporter.folder_swap as fs

    target, kill_at, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    steps = 0

    def step(fn, name):
        def wrapped(*args):
            global steps
            if steps == kill_at:
                if name == "rmtree":  # killed in the middle of a delete: one file gone
                    next(p for p in Path(args[0]).iterdir()).unlink()
                os._exit(137)
            steps += 1
            return fn(*args)
        return wrapped

    fs._rename = step(fs._rename, "rename")
    fs._rmtree = step(fs._rmtree, "rmtree")
    fs.exchange = step(fs.exchange, "exchange") if mode == "exchange" else (lambda a, b: False)
    new = fs.staging_folder(target)
    for name, text in {new_files}.items():
        (new / name).write_text(text)
    fs.replace_folder(new, target)
""").replace("{new_files}", repr(NEW))


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def _contents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    return int(proc.stdout)


def _kill_during_replace(target: Path, kill_at: int, mode: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(target), str(kill_at), mode], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode in (0, 137), proc.stderr
    return proc.returncode


def _exchange_works(tmp_path: Path) -> bool:
    a, b = _write(tmp_path / "probe-a", {"f": "a"}), _write(tmp_path / "probe-b", {"f": "b"})
    try:
        return fs.exchange(a, b)
    finally:
        fs._rmtree(a)
        fs._rmtree(b)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux-only")
def test_exchange_swaps_two_folders_atomically(tmp_path):
    a, b = _write(tmp_path / "a", {"f": "A"}), _write(tmp_path / "b", {"f": "B", "g": "B"})
    if not fs.exchange(a, b):
        pytest.skip("this file system cannot exchange paths")
    assert _contents(a) == {"f": "B", "g": "B"} and _contents(b) == {"f": "A"}
    with pytest.raises(FileNotFoundError):
        fs.exchange(tmp_path / "missing", a)  # a real failure is an error, not "unsupported"
    assert _contents(a) == {"f": "B", "g": "B"}


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOSYS])
def test_unsupported_exchange_falls_back_to_two_renames(tmp_path, monkeypatch, code):
    monkeypatch.setattr(fs, "_renameat2", lambda a, b, flags: code)
    target = _write(tmp_path / "b", OLD)
    assert fs.exchange(tmp_path / "x", target) is False
    new = fs.staging_folder(target)
    for name, text in NEW.items():
        (new / name).write_text(text)
    fs.replace_folder(new, target)
    assert _contents(target) == NEW
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
    assert new not in fs._ACTIVE


@pytest.mark.parametrize("mode", ["exchange", "two-renames"])
def test_a_kill_at_any_step_loses_nothing(tmp_path, mode):
    if mode == "exchange" and not (sys.platform.startswith("linux") and _exchange_works(tmp_path)):
        pytest.skip("no atomic exchange here")
    outcomes = []
    for kill_at in range(10):
        parent = tmp_path / f"k{kill_at}"
        target = _write(parent / "b", OLD)
        rc = _kill_during_replace(target, kill_at, mode)
        leftovers = sorted(p.name for p in parent.iterdir() if p.name != "b")
        if mode == "exchange":
            # The target is a complete bundle at every moment, without any recovery.
            assert _contents(target) in (OLD, NEW), (kill_at, leftovers)
        elif not target.exists():
            # Killed between the two renames: the previous bundle waits, complete, in .b.old-<pid>.
            olds = [name for name in leftovers if name.startswith(".b.old-")]
            assert len(olds) == 1, leftovers
            assert _contents(parent / olds[0]) == OLD
        else:
            assert _contents(target) in (OLD, NEW), (kill_at, leftovers)
        seen = _contents(target) if target.exists() else None
        notes = fs.tidy_leftovers(target)  # the next run
        assert sorted(p.name for p in parent.iterdir()) == ["b"], (kill_at, leftovers)
        assert _contents(target) == (seen or OLD)
        assert bool(notes) == bool(leftovers)
        outcomes.append((rc, _contents(target) == NEW))
        if rc == 0:
            break
    # The swap ran to completion at the last k, and every earlier kill left the old or new bundle.
    assert outcomes[-1] == (0, True)
    assert outcomes[0] == (137, False)  # killed before the first step: the old bundle, untouched
    assert len(outcomes) == (3 if mode == "exchange" else 5)


def test_tidy_removes_only_leftovers_of_dead_processes(tmp_path):
    target = _write(tmp_path / "b", OLD)
    dead, alive = _dead_pid(), os.getppid()
    _write(tmp_path / f".b.tmp-{dead}-x1y2", {"unet.onnx": "half"})
    _write(tmp_path / f".b.old-{dead}", OLD)  # the swap finished: the target holds a bundle
    _write(tmp_path / f".b.tmp-{alive}-busy", {"unet.onnx": "being written"})
    _write(tmp_path / f".b.tmp-{os.getpid()}-earlier", {"f": "an earlier process with our PID"})
    _write(tmp_path / f".c.tmp-{dead}-other", {"f": "another bundle's"})
    (tmp_path / f".b.old-{dead}1").write_text("a file, not a folder")
    ours = fs.staging_folder(target)

    notes = fs.tidy_leftovers(target)

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["b", f".b.tmp-{alive}-busy", f".c.tmp-{dead}-other", f".b.old-{dead}1", ours.name])
    assert _contents(target) == OLD
    assert notes == [f"removed 3 leftover folder(s) of interrupted exports beside {target}"]
    fs.discard(ours)
    assert not ours.exists() and ours not in fs._ACTIVE


def test_tidy_restores_a_missing_target_from_the_newest_old_folder(tmp_path):
    target = tmp_path / "b"
    dead = _dead_pid()
    older = _write(tmp_path / f".b.old-{_dead_pid()}", {"model.json": "older"})
    os.utime(older, (1, 1))
    _write(tmp_path / f".b.old-{dead}", OLD)
    notes = fs.tidy_leftovers(target)
    assert _contents(target) == OLD
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
    assert notes[0] == f"restored {target} from .b.old-{dead}, left by an interrupted replace"


def test_staged_bundle_recovers_before_deciding_on_force(tmp_path):
    target = tmp_path / "b"
    _write(tmp_path / f".b.old-{_dead_pid()}", OLD)
    # The recovered bundle is the user's: without --force it is refused, not overwritten.
    with pytest.raises(UsageError, match="already exists; pass --force"), bw.staged_bundle(target, force=False):
        pass
    assert _contents(target) == OLD
    with bw.staged_bundle(target, force=True) as tmp:
        for name, text in NEW.items():
            (tmp / name).write_text(text)
        assert _contents(target) == OLD
    assert _contents(target) == NEW
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_a_failed_swap_puts_the_old_bundle_back(tmp_path, monkeypatch):
    monkeypatch.setattr(fs, "exchange", lambda a, b: False)
    target = _write(tmp_path / "b", OLD)
    real_rename = fs._rename

    def rename(src: Path, dst: Path) -> None:
        if dst == target and ".tmp-" in src.name:  # the new bundle cannot be moved in
            raise OSError(errno.EIO, "disk error")
        real_rename(src, dst)

    monkeypatch.setattr(fs, "_rename", rename)
    with pytest.raises(OSError, match="disk error"), bw.staged_bundle(target, force=True) as tmp:
        (tmp / "model.json").write_text("new")
    assert _contents(target) == OLD
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
