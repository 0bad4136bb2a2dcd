"""Run-folder rules and resuming: what may be resumed, and handing the state to every rank.

A new run needs an empty (or missing) RUN_DIR that can be written; `--resume` needs a
checkpoint in it and a config that differs from the saved one only in RESUMABLE_FIELDS. A
run that was stopped (or killed) before its first checkpoint left only its config and
events: `--resume` starts it again from step 0 in the same folder, with a note. Under DDP,
rank 0 reads the checkpoint and broadcasts it (ddp.broadcast_*), so the other ranks never
touch the run folder.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from diffusion_studio.core.files import atomic_write_text
from diffusion_studio.errors import UsageError
from diffusion_studio.training import ddp
from diffusion_studio.training.checkpoints import (
    Checkpoint,
    checkpoint_dir,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temp_files,
    stale_temp_files,
)
from diffusion_studio.training.config import CURRICULUM_FIELDS, RESUMABLE_FIELDS, TrainConfig
from diffusion_studio.training.unet import UNetConfig

CONFIG_FILE = "config.json"
EVENTS_FILE = "events.jsonl"
SAMPLES_DIR = "samples"


@dataclass(frozen=True)
class RunStart:
    """How a run begins: from `checkpoint` (None: step 0), with a `note` for the user when it matters."""

    checkpoint: Checkpoint | None
    note: str | None = None


def check_out_folder(run_dir: Path) -> None:
    """UsageError with one sentence unless RUN_DIR exists as a writable folder or can be created.

    Probes by creating (and removing) an empty file in RUN_DIR, or in its nearest existing
    ancestor, so read-only mounts, immutable folders and missing permissions are caught
    before anything is written (permission bits alone would not stop root).
    """
    run_dir = Path(run_dir)
    try:
        existing = run_dir.exists()
        target = run_dir if existing else next(p for p in run_dir.absolute().parents if p.exists())
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise UsageError(f"The run folder {run_dir} cannot be used ({_reason(exc)}).") from None
    if not target.is_dir():
        if existing:
            raise UsageError(f"The run folder {run_dir} exists and is not a folder.")
        raise UsageError(f"Cannot create the run folder {run_dir}: {target} is not a folder.")
    probe = target / f".diffusion-studio-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as exc:
        if existing:
            raise UsageError(f"Cannot write to the run folder {run_dir} ({_reason(exc)}).") from None
        raise UsageError(f"Cannot create the run folder {run_dir} in {target} ({_reason(exc)}).") from None
    try:
        os.unlink(probe)
    except OSError:
        pass


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def is_unstarted_run(run_dir: Path) -> bool:
    """True for a run folder that a run stopped (or was killed) in before its first checkpoint.

    That is: no checkpoint, and nothing but what a run writes (config.json, events.jsonl,
    checkpoints/, samples/ and temp files of interrupted writes), at least one of them.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or list_checkpoints(run_dir):
        return False
    ours = {CONFIG_FILE, EVENTS_FILE, checkpoint_dir(run_dir).name, SAMPLES_DIR}
    stale = {p.name for p in stale_temp_files(run_dir) if p.parent == run_dir}
    names = {p.name for p in run_dir.iterdir()}
    return bool(names) and names <= ours | stale


def plan_run(run_dir: Path, config: TrainConfig, resume: bool) -> RunStart:
    """Where a run starts; UsageError (one sentence) when RUN_DIR does not allow it. Writes nothing."""
    run_dir = Path(run_dir)
    check_out_folder(run_dir)
    if not resume:
        if run_dir.exists() and any(run_dir.iterdir()):
            if is_unstarted_run(run_dir):
                raise UsageError(f"The run folder {run_dir} holds a run that stopped before its first "
                                 "checkpoint; pass --resume to start it again from step 0 or choose another --out.")
            raise UsageError(f"The run folder {run_dir} already exists and is not empty; "
                             "pass --resume to continue it or choose another --out.")
        return RunStart(None)
    if not run_dir.is_dir():
        raise UsageError(f"There is no run folder {run_dir} to resume.")
    if is_unstarted_run(run_dir):
        return RunStart(None, note=f"{run_dir} holds no checkpoint yet (the run stopped before its first one), "
                                   "so training starts again from step 0 in the same folder.")
    checkpoint = load_checkpoint(run_dir)
    defaults = TrainConfig().to_dict()  # fields added after the run started keep their defaults
    changed = []
    for key, value in config.to_dict().items():
        saved = checkpoint.config.get(key, defaults.get(key))
        if key in CURRICULUM_FIELDS and saved != value:
            changed.append(f"{key} {saved!r} -> {value!r}")
        if key in RESUMABLE_FIELDS:
            continue
        if saved != value:
            raise UsageError(f"Cannot resume: '{key}' is {value!r} but the checkpoint was trained "
                             f"with {saved!r}.")
    if checkpoint.step >= config.steps:
        raise UsageError(f"The run is already at step {checkpoint.step}; pass --steps above it to train on.")
    if changed:
        return RunStart(checkpoint, note=f"changed from step {checkpoint.step} on: {', '.join(changed)}.")
    return RunStart(checkpoint)


def check_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> Checkpoint | None:
    """None for a run from step 0, the latest checkpoint with --resume; UsageError when not allowed."""
    return plan_run(run_dir, config, resume).checkpoint


class RunFolder:
    """What one run (rank 0) writes to RUN_DIR, so that a run that fails can take it back.

    `create()` removes the temp files that killed writers left behind, makes the folder and
    writes config.json. `discard_if_unused()`, after a failure, removes what this run itself
    made (never a file that was there before) when the folder holds no checkpoint and no
    sample grid: a run that fails on a full disk leaves no empty run folder behind.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir)
        self.made_dirs: list[Path] = []  # deepest first
        self.made_files: list[Path] = []
        self.removed_temp_files: list[Path] = []

    def create(self, config_json: str) -> None:
        """Clean up, make RUN_DIR (and missing parents), write config.json; UsageError if it cannot."""
        self.removed_temp_files = remove_stale_temp_files(self.path)
        missing = []
        for folder in [self.path, *self.path.absolute().parents]:
            if folder.exists():
                break
            missing.append(folder)
        before = {p.name for p in (self.path / CONFIG_FILE, self.path / EVENTS_FILE,
                                   checkpoint_dir(self.path), self.path / SAMPLES_DIR) if p.exists()}
        self.made_files = [self.path / n for n in (CONFIG_FILE, EVENTS_FILE) if n not in before]
        self.made_dirs = [*(self.path / n for n in (checkpoint_dir(self.path).name, SAMPLES_DIR)
                            if n not in before), *missing]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.discard_if_unused()
            raise UsageError(f"Cannot create the run folder {self.path} ({_reason(exc)}).") from None
        try:
            atomic_write_text(self.path / CONFIG_FILE, config_json)
        except UsageError:
            self.discard_if_unused()
            raise

    def holds_results(self) -> bool:
        """True when RUN_DIR has a checkpoint or a sample grid (work worth keeping)."""
        samples = self.path / SAMPLES_DIR
        try:
            return bool(list_checkpoints(self.path)) or (samples.is_dir() and any(samples.glob("*.png")))
        except OSError:
            return True  # cannot tell: keep everything

    def discard_if_unused(self) -> bool:
        """Remove what this run made when RUN_DIR holds no results; True when RUN_DIR is gone."""
        if self.holds_results():
            return False
        try:
            remove_stale_temp_files(self.path)
        except UsageError:
            pass
        for path in self.made_files:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
        for folder in self.made_dirs:
            try:
                folder.rmdir()  # only ever an empty folder: a user's file keeps it
            except FileNotFoundError:
                continue
            except OSError:
                break
        return not self.path.exists()


def share_checkpoint(ctx: ddp.DistContext, checkpoint: Checkpoint | None) -> Checkpoint | None:
    """Rank 0's checkpoint (or None) on every rank; collective, so every rank must call it."""
    if not ctx.distributed:
        return checkpoint
    meta = None
    if ctx.is_main and checkpoint is not None:
        ck = checkpoint
        meta = {
            "config": ck.config, "step": ck.step, "metrics": ck.metrics, "run_dir": str(ck.run_dir),
            "path": str(ck.path), "optim_groups": ck.optim_groups, "scheduler": ck.scheduler,
            "rng": {k: v for k, v in ck.rng.items() if k != "torch"}}
    meta = ddp.broadcast_json(ctx, meta)
    if meta is None:
        return None
    tensors = None
    if ctx.is_main and checkpoint is not None:  # on rank 0 a meta means a checkpoint
        tensors = {f"{prefix}.{k}": v for prefix, group in
                   (("model", checkpoint.model), ("ema", checkpoint.ema), ("optim", checkpoint.optim))
                   for k, v in group.items()}
        if checkpoint.rng.get("torch") is not None:
            tensors["rng.torch"] = checkpoint.rng["torch"]
    tensors = ddp.broadcast_tensors(ctx, tensors)
    if ctx.is_main:
        return checkpoint
    groups: dict[str, dict] = {"model": {}, "ema": {}, "optim": {}, "rng": {}}
    for name, value in tensors.items():
        prefix, _, rest = name.partition(".")
        groups[prefix][rest] = value
    rng = dict(meta["rng"])
    rng["torch"] = groups["rng"].get("torch")
    return Checkpoint(config=meta["config"], unet_config=UNetConfig.from_dict(meta["config"]["unet"]),
                      step=int(meta["step"]), model=groups["model"], ema=groups["ema"],
                      metrics=meta["metrics"], run_dir=Path(meta["run_dir"]), path=Path(meta["path"]),
                      optim=groups["optim"], optim_groups=meta["optim_groups"],
                      scheduler=meta["scheduler"], rng=rng)
