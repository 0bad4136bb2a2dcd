"""Run-folder rules and resuming: what may be resumed, and handing the state to every rank.

A new run needs an empty (or missing) RUN_DIR; `--resume` needs a checkpoint in it and a
config that differs from the saved one only in RESUMABLE_FIELDS. Under DDP, rank 0 reads
the checkpoint and broadcasts it (ddp.broadcast_*), so the other ranks never touch the
run folder.
"""

from __future__ import annotations

from pathlib import Path

from diffusion_studio.errors import UsageError
from diffusion_studio.training import ddp
from diffusion_studio.training.checkpoints import Checkpoint, load_checkpoint
from diffusion_studio.training.config import RESUMABLE_FIELDS, TrainConfig
from diffusion_studio.training.unet import UNetConfig


def check_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> Checkpoint | None:
    """None for a fresh run, the latest checkpoint with --resume; UsageError when not allowed."""
    run_dir = Path(run_dir)
    if not resume:
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise UsageError(f"The run folder {run_dir} already exists and is not empty; "
                             "pass --resume to continue it or choose another --out.")
        return None
    if not run_dir.is_dir():
        raise UsageError(f"There is no run folder {run_dir} to resume.")
    checkpoint = load_checkpoint(run_dir)
    defaults = TrainConfig().to_dict()  # fields added after the run started keep their defaults
    for key, value in config.to_dict().items():
        if key in RESUMABLE_FIELDS:
            continue
        saved = checkpoint.config.get(key, defaults.get(key))
        if saved != value:
            raise UsageError(f"Cannot resume: '{key}' is {value!r} but the checkpoint was trained "
                             f"with {saved!r}.")
    if checkpoint.step >= config.steps:
        raise UsageError(f"The run is already at step {checkpoint.step}; pass --steps above it to train on.")
    return checkpoint


def share_checkpoint(ctx: ddp.DistContext, checkpoint: Checkpoint | None) -> Checkpoint | None:
    """Rank 0's checkpoint (or None) on every rank; collective, so every rank must call it."""
    if not ctx.distributed:
        return checkpoint
    meta = None
    if ctx.is_main:
        ck = checkpoint
        meta = None if ck is None else {
            "config": ck.config, "step": ck.step, "metrics": ck.metrics, "run_dir": str(ck.run_dir),
            "path": str(ck.path), "optim_groups": ck.optim_groups, "scheduler": ck.scheduler,
            "rng": {k: v for k, v in ck.rng.items() if k != "torch"}}
    meta = ddp.broadcast_json(ctx, meta)
    if meta is None:
        return None
    tensors = None
    if ctx.is_main:
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
