"""The run folder under faults: bad flags, unwritable --out, kill -9, left-over temp files, a full disk.

Every bad input ends in exit 2 with one line and nothing written; every fault leaves a folder
that `--resume` (or a fresh start) accepts, with nothing of the user's lost.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from diffusion_studio.cli import main
from diffusion_studio.core import files
from diffusion_studio.errors import UsageError
from diffusion_studio.training.checkpoints import list_checkpoints, remove_stale_temp_files, stale_temp_files
from diffusion_studio.training.config import TrainConfig
from diffusion_studio.training.events import read_events
from diffusion_studio.training.resume import RunFolder, is_unstarted_run
from diffusion_studio.training.trainer import Trainer
from diffusion_studio.training.unet import UNetConfig

from .conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]
TINY = ["--preset", "cpu-quick", "--image-size", "16", "--batch-size", "2", "--threads", "1", "--sample-every", "0"]


def _tree(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file under `folder` (what a failed command must not change)."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(capsys: pytest.CaptureFixture[str], needle: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    return err


# ---- bad values: exit 2, one line, nothing written ------------------------------------------

@pytest.mark.parametrize("seed, shown", [("-1", "-1"), ("18446744073709551616", "18446744073709551616"),
                                         ("9223372036854775808", "9223372036854775808")])
def test_out_of_range_seed_writes_nothing(tmp_path, capsys, seed, shown):
    code = main(["train", *TINY, "--out", str(tmp_path / "run"), "--seed", seed])
    _one_line_error(capsys, f"seed must be an integer in [0, 9223372036854775807], got {shown}.")
    assert code == 2 and list(tmp_path.iterdir()) == []


def test_largest_seed_trains(tmp_path, text_encoder):
    result = Trainer(tiny_config(steps=2, seed=2**63 - 1), tmp_path / "run", text_encoder=text_encoder).run()
    assert result.step == 2 and [s for s, _ in list_checkpoints(tmp_path / "run")] == [2]


@pytest.mark.parametrize("field, value, needle", [
    ("seed", "3", "seed must be an integer"),
    ("seed", True, "seed must be an integer"),
    ("hflip", "yes", "hflip must be true or false"),
    ("dataset", 7, "dataset must be a string"),
    ("sample_prompts", "a red circle", "sample_prompts must be a list"),
    ("sample_prompts", [], "sample_prompts must be a list of 1 to 64 strings"),
    ("sample_steps", 50, "sample_steps (50) must be at most T (20)"),
    ("unet", {"base_channels": "16"}, "unet.base_channels must be an integer in [1, 4096], got '16'."),
    ("unet", {"channel_mults": "12"}, "unet.channel_mults must be a list of integers"),
    ("unet", {"num_res_blocks": 10**9}, "unet.num_res_blocks must be an integer in [1, 16]"),
    ("unet", [1, 2], "The U-Net config must be a JSON object, got list."),
])
def test_config_fields_of_the_wrong_type_are_one_sentence(field, value, needle):
    d = tiny_config(T=20).to_dict()
    d[field] = {**d["unet"], **value} if field == "unet" and isinstance(value, dict) else value
    with pytest.raises(UsageError) as info:
        TrainConfig.from_dict(d).validate()
    assert needle in str(info.value)


def test_resume_with_a_tampered_config_is_refused_and_changes_nothing(tmp_path, capsys, text_encoder):
    run = tmp_path / "run"
    Trainer(tiny_config(steps=2), run, text_encoder=text_encoder)  # config.json + events.jsonl, no checkpoint
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "seed": -5}))
    before = _tree(run)
    assert main(["train", *TINY, "--out", str(run), "--resume"]) == 2
    _one_line_error(capsys, "seed must be an integer in [0, 9223372036854775807], got -5.")
    assert _tree(run) == before


# ---- --out that cannot be written -----------------------------------------------------------

def _assert_refused(capsys, out: Path, needle: str) -> None:
    code = main(["train", *TINY, "--out", str(out)])
    _one_line_error(capsys, needle)
    assert code == 2


def test_out_under_a_file_or_a_file_itself(tmp_path, capsys):
    (tmp_path / "file").write_text("user data")
    _assert_refused(capsys, tmp_path / "file" / "run", f"Cannot create the run folder {tmp_path / 'file' / 'run'}: "
                    f"{tmp_path / 'file'} is not a folder.")
    _assert_refused(capsys, tmp_path / "file", f"The run folder {tmp_path / 'file'} exists and is not a folder.")
    assert _tree(tmp_path) == {"file": 9}


def test_out_with_a_name_too_long(tmp_path, capsys):
    _assert_refused(capsys, tmp_path / ("r" * 300), "cannot be used (File name too long).")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs sysfs at /sys")
def test_out_in_a_folder_nobody_may_write(capsys):
    out = Path("/sys/diffusion-studio-run")  # sysfs refuses new files even to root
    _assert_refused(capsys, out, f"Cannot create the run folder {out} in /sys (")
    assert not out.exists()


def test_out_in_an_immutable_folder(tmp_path, capsys):
    folder = tmp_path / "locked"
    folder.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], check=False,
                                                        capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs root and a file system that supports it)")
    try:
        _assert_refused(capsys, folder, f"Cannot write to the run folder {folder} (Operation not permitted).")
        _assert_refused(capsys, folder / "run", f"Cannot create the run folder {folder / 'run'} in {folder} "
                        "(Operation not permitted).")
        assert list(folder.iterdir()) == []
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through permission bits")
def test_out_in_a_read_only_folder(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        _assert_refused(capsys, folder / "run", f"Cannot create the run folder {folder / 'run'} in {folder} "
                        "(Permission denied).")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


# ---- kill -9 before the first checkpoint, temp files of killed writes ---------------------------

def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _kill_after_first_progress(out: Path) -> int:
    """Start a real trainer (checkpoint at 1000), kill -9 it at its first progress event; its PID."""
    proc = subprocess.Popen([sys.executable, "-m", "diffusion_studio", "train", *TINY, "--out", str(out),
                             "--steps", "1000", "--checkpoint-every", "1000", "--json"],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if json.loads(line)["event"] == "progress":
                break
        else:
            pytest.fail(f"the trainer ended before its first progress event: {proc.stderr.read()[-2000:]}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


def test_killed_before_first_checkpoint_then_resume_starts_at_step_0(tmp_path, capsys):
    run = tmp_path / "run"
    dead_pid = _kill_after_first_progress(run)
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "events.jsonl"]
    assert [e["event"] for e in read_events(run / "events.jsonl")][:2] == ["start", "progress"]
    # What a kill in the middle of atomic writes leaves: <name>.tmp-<pid of the dead writer>.
    (run / "checkpoints").mkdir()
    stale = [run / "checkpoints" / f"step-00001000.safetensors.tmp-{dead_pid}",
             run / "checkpoints" / f"step-00001000.json.tmp-{dead_pid}", run / f"config.json.tmp-{dead_pid}"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    live = run / "checkpoints" / f"step-00000500.safetensors.tmp-{os.getpid()}"  # a writer still running
    live.write_bytes(b"x")
    assert is_unstarted_run(run)

    before = _tree(run)
    assert main(["train", *TINY, "--out", str(run), "--steps", "3"]) == 2  # a fresh start is refused ...
    _one_line_error(capsys, "stopped before its first checkpoint; pass --resume to start it again from step 0")
    assert _tree(run) == before  # ... and changes nothing

    assert main(["train", *TINY, "--out", str(run), "--steps", "3", "--resume", "--json"]) == 0
    captured = capsys.readouterr()
    assert "note: " in captured.err and "training starts again from step 0 in the same folder" in captured.err
    assert "removed 3 temp file(s)" in captured.err
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert events[0]["event"] == "start" and events[0]["step"] == 0 and events[0]["resumed"] is False
    assert "starts again from step 0" in events[0]["note"]
    assert events[-1]["event"] == "done" and events[-1]["step"] == 3
    assert [s for s, _ in list_checkpoints(run)] == [3]
    assert not any(p.exists() for p in stale) and live.read_bytes() == b"x"
    # the killed run's events stay; the new run's follow them
    assert [e["event"] for e in read_events(run / "events.jsonl")].count("start") == 2


def test_stale_temp_files_are_only_ours_and_only_of_dead_writers(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "samples").mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    ours = [run / "checkpoints" / f"step-00000010.safetensors.tmp-{pid}",
            run / "samples" / f"step-00000010.png.tmp-{pid}", run / f"config.json.tmp-{pid}",
            run / "checkpoints" / "step-00000010.json.tmp-99999999"]
    kept = [run / "checkpoints" / f"step-00000010.safetensors.tmp-{os.getpid()}",  # a live writer
            run / f"notes.txt.tmp-{pid}", run / "checkpoints" / "step-00000010.safetensors.tmp-abc",
            run / "samples" / f"my-{pid}.png", run / f"events.jsonl.tmp-{pid}"]
    for path in ours + kept:
        path.write_bytes(b"12345")
    assert stale_temp_files(run) == sorted(ours)
    assert remove_stale_temp_files(run) == sorted(ours)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in ours)
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_resume_of_a_real_checkpoint_removes_temp_files_of_a_killed_write(tmp_path, text_encoder):
    run = tmp_path / "run"
    Trainer(tiny_config(steps=10), run, text_encoder=text_encoder).run()
    tmp = run / "checkpoints" / "step-00000015.safetensors.tmp-99999999"
    tmp.write_bytes(b"\0" * 6_000_000)  # a 6 MB write that was killed
    trainer = Trainer(tiny_config(steps=12), run, resume=True, text_encoder=text_encoder)
    assert trainer.step == 10 and not tmp.exists() and trainer.folder.removed_temp_files == [tmp]
    assert trainer.notes == ["removed 1 temp file(s) that an interrupted write left in the run folder."]


# ---- a full disk ----------------------------------------------------------------------------------

def _full_disk(monkeypatch, only: str = "") -> None:
    """Atomic writes (core.files) fail as on a full disk: the temp file is created, writing it fails."""
    def full_open(path, mode="r", *args, **kwargs):
        if ("w" in mode or "a" in mode) and only in str(path):
            builtins.open(path, mode, *args, **kwargs).close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(files, "open", full_open, raising=False)


class _FullDiskLog:
    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_full_disk_at_start_exits_2_and_leaves_no_folder(tmp_path, capsys, monkeypatch):
    _full_disk(monkeypatch)
    code = main(["train", *TINY, "--out", str(tmp_path / "new" / "run"), "--steps", "2"])
    _one_line_error(capsys, "config.json': No space left on device.")
    assert code == 2 and list(tmp_path.iterdir()) == []  # the run folder and the parent it made are gone


def test_full_disk_mid_run_takes_back_what_the_run_made(tmp_path, monkeypatch, text_encoder):
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(steps=20, checkpoint_every=10), run, text_encoder=text_encoder)
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "events.jsonl"]
    _full_disk(monkeypatch)
    trainer.events._fh = _FullDiskLog()
    with pytest.raises(UsageError, match="No space left on device"):
        trainer.run()
    assert not run.exists()

    user = tmp_path / "mine"  # a folder the user made: it stays, empty as it was
    user.mkdir()
    monkeypatch.undo()
    trainer = Trainer(tiny_config(steps=20, checkpoint_every=10), user, text_encoder=text_encoder)
    _full_disk(monkeypatch, only="step-")
    with pytest.raises(UsageError, match=r"step-00000010\.safetensors': No space left on device\."):
        trainer.run()
    assert user.is_dir() and list(user.iterdir()) == []


def test_full_disk_after_a_checkpoint_loses_nothing(tmp_path, monkeypatch, text_encoder):
    run = tmp_path / "run"
    Trainer(tiny_config(steps=10, checkpoint_every=10), run, text_encoder=text_encoder).run()
    (run / "notes.txt").write_text("mine")
    trainer = Trainer(tiny_config(steps=20, checkpoint_every=10), run, resume=True, text_encoder=text_encoder)
    before = _tree(run)
    _full_disk(monkeypatch, only=".json.tmp-")  # the tensors fit, the sidecar does not
    with pytest.raises(UsageError, match=r"step-00000020\.json': No space left on device\."):
        trainer.run()
    after = _tree(run)
    assert after.pop("events.jsonl") > before.pop("events.jsonl")  # the resumed run's events and its error
    assert after == before  # checkpoint 10, config and the user's file kept; no half checkpoint 20, no temp file
    assert read_events(run / "events.jsonl")[-1]["event"] == "error"
    monkeypatch.undo()
    resumed = Trainer(tiny_config(steps=20, checkpoint_every=10), run, resume=True, text_encoder=text_encoder)
    assert resumed.step == 10


def test_run_folder_create_reports_a_folder_it_cannot_make(tmp_path):
    (tmp_path / "file").write_text("x")
    folder = RunFolder(tmp_path / "file" / "run")
    with pytest.raises(UsageError, match="Cannot create the run folder"):
        folder.create("{}")
    assert _tree(tmp_path) == {"file": 1}


def test_unet_config_sidecar_types(tmp_path):
    good = UNetConfig().to_dict()
    assert UNetConfig.from_dict(good) == UNetConfig()
    with pytest.raises(UsageError, match=r"unet\.coord_channels must be true or false"):
        UNetConfig.from_dict({**good, "coord_channels": 1})
    with pytest.raises(UsageError, match=r"unet\.dropout must be a number"):
        UNetConfig.from_dict({**good, "dropout": "0.1"})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    from diffusion_studio.inference.text_encoder import TextEncoder

    run = tmp_path_factory.mktemp("finished") / "run"
    Trainer(tiny_config(steps=2, checkpoint_every=2), run, text_encoder=TextEncoder(max_tokens=32)).run()
    return run


@pytest.mark.parametrize("edit, needle", [
    (lambda s: s.update(step="2"), "lacks its step or U-Net config."),
    (lambda s: s["config"]["unet"].update(base_channels="16"),
     "has an invalid U-Net config: unet.base_channels must be an integer in [1, 4096], got '16'."),
    (lambda s: s.update(rng={"python": [3, "x", None]}), "The random-number states in the checkpoint are damaged."),
    (lambda s: s.update(optim_groups="x"), "has a malformed 'optim_groups'."),
    (lambda s: s.update(optim_groups=[{"lr": 0.1}]), "The optimizer state in the checkpoint does not fit"),
])
def test_resume_from_a_tampered_sidecar_is_one_sentence_and_writes_nothing(tmp_path, capsys, finished_run,
                                                                            edit, needle):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    sidecar = run / "checkpoints" / "step-00000002.json"
    data = json.loads(sidecar.read_text())
    edit(data)
    sidecar.write_text(json.dumps(data))
    before = _tree(run)
    assert main(["train", "--out", str(run), "--resume", "--steps", "4"]) == 2
    _one_line_error(capsys, needle)
    assert _tree(run) == before
