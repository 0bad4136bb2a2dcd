"""`diffusion-studio train`: train a text-conditioned DDPM U-Net (Algorithm 1) into RUN_DIR.

Without --json a tqdm progress bar shows loss, LR and images/s; with --json every progress
event is printed as one JSON line (what the GUI reads). Ctrl-C (or SIGTERM) writes a
checkpoint and stops; `--resume` continues exactly where it stopped (a run killed before its
first checkpoint starts again from step 0 in the same folder, and a note says so). Every flag,
the whole config and the writability of RUN_DIR are checked before anything is written.

Data parallel: `--nproc N` runs N processes through torch.distributed.run (DDP; gloo on
CPU, nccl on CUDA, one GPU per process); for several machines start the same command with
torchrun yourself, e.g. `torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d
--rdzv-endpoint HOST:29500 -m diffusion_studio train ...`. `--batch-size` is the global
batch, split evenly over the processes, so N processes train the same model as one.

`--schedule linear|cosine` picks the noise schedule; `--learn-sigma` also learns the reverse
variance (Improved DDPM: a 2C-channel U-Net trained on L_hybrid, see training/vlb.py). Both
shape the model, so a resumed run keeps its own (config.json). A curriculum may change `--lr`
and `--two-shape-share` on `--resume` (from the resumed step on, named in a note and the
events); any other change that would alter the training is refused.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from diffusion_studio.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a diffusion model (PyTorch)",
                       description="Train a text-conditioned ε-predicting U-Net (DDPM Algorithm 1).")
    p.add_argument("--dataset", help="'shapes' (procedural, the default) or 'folder:PATH' (images with a "
                   "same-named .txt caption, or one subfolder per class)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (checkpoints, samples, events)")
    p.add_argument("--preset", default="cpu", choices=("cpu-quick", "cpu", "gpu"),
                   help="model size and schedule preset (default: cpu, the shipped default model)")
    p.add_argument("--steps", type=int, help="total number of updates")
    p.add_argument("--batch-size", type=int, help="global batch size (split over --nproc processes)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--lr", type=float, help="peak AdamW learning rate")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its latest checkpoint "
                   "(from step 0 when it stopped before its first)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--json", action="store_true", help="print progress events as JSON lines on stdout")
    p.add_argument("--threads", type=int, help="PyTorch CPU threads (default: all cores)")
    p.add_argument("--sample-every", type=int, help="updates between sample grids (0: none)")
    p.add_argument("--checkpoint-every", type=int, help="updates between checkpoints")
    p.add_argument("--hflip", action="store_true", default=None,
                   help="random horizontal flips (folder datasets; off by default)")
    p.add_argument("--two-shape-share", type=float, metavar="P",
                   help="Shapes: share of examples with two shapes, e.g. 'a red circle and a blue square' (default 0)")
    p.add_argument("--p-uncond", type=float, metavar="P",
                   help="share of captions replaced by \"\" so the model also learns the unconditional ε for "
                   "classifier-free guidance, 0 <= P < 1 (default: the preset's, 0.1)")
    p.add_argument("--ema-decay", type=float, metavar="D",
                   help="decay of the weights' exponential moving average, 0 <= D < 1 "
                   "(default: the preset's, 0.999; cpu-quick 0.995)")
    p.add_argument("--init-from", metavar="CHECKPOINT",
                   help="start a new run from the EMA weights of a run folder or .safetensors checkpoint with "
                   "the same U-Net (fine-tuning, e.g. on a new data mix); the optimizer starts fresh")
    p.add_argument("--schedule", choices=("linear", "cosine"),
                   help="noise schedule: linear (DDPM) or cosine (Improved DDPM eq. 17); default: the preset's, linear")
    p.add_argument("--learn-sigma", action="store_true", default=None,
                   help="also learn the reverse variance Σ_θ (Improved DDPM): the U-Net outputs 2C channels and "
                   "trains on L_hybrid = L_simple + 0.001·L_vlb; a new run only (it changes the U-Net)")
    p.add_argument("--token-positions", action="store_true", default=None,
                   help="add a learned embedding of each prompt token's position to the cross-attention keys "
                   "(zero at first; with --init-from it starts from a U-Net without them); a new run only")
    p.add_argument("--no-pooled-text", dest="pooled_text", action="store_false", default=None,
                   help="give the prompt to the U-Net through cross-attention only, not also as the mean of its "
                   "tokens in every block's FiLM (a bag of words that cannot bind a colour to its object); "
                   "with --init-from it starts from a U-Net with it; a new run only")
    p.add_argument("--cross-attention", metavar="SIZES",
                   help="feature sizes whose blocks attend to the prompt tokens, comma-separated, e.g. 32,16,8 "
                   "(default: the preset's, 16,8); with --init-from it may add sizes to the starting U-Net's "
                   "(the new layers start with a zero output); a new run only")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel processes on this machine (DDP through torch.distributed.run)")


# (namespace field, flag) of the options a --nproc launch passes on to every process.
_FORWARDED = (("dataset", "--dataset"), ("out", "--out"), ("preset", "--preset"), ("steps", "--steps"),
              ("batch_size", "--batch-size"), ("image_size", "--image-size"), ("lr", "--lr"),
              ("seed", "--seed"), ("device", "--device"), ("threads", "--threads"),
              ("sample_every", "--sample-every"), ("checkpoint_every", "--checkpoint-every"),
              ("two_shape_share", "--two-shape-share"), ("p_uncond", "--p-uncond"),
              ("ema_decay", "--ema-decay"), ("init_from", "--init-from"), ("schedule", "--schedule"),
              ("cross_attention", "--cross-attention"))
_FORWARDED_SWITCHES = (("resume", "--resume"), ("json", "--json"), ("hflip", "--hflip"),
                       ("learn_sigma", "--learn-sigma"), ("token_positions", "--token-positions"))
_FORWARDED_OFF_SWITCHES = (("pooled_text", "--no-pooled-text"),)


def build_config(args: argparse.Namespace) -> Any:
    """TrainConfig from the preset (or the run's saved config with --resume) plus the flags."""
    from diffusion_studio.training.config import TrainConfig, preset

    saved = Path(args.out) / "config.json"
    config = TrainConfig.load(saved) if args.resume and saved.is_file() else preset(args.preset)
    if args.image_size is not None and args.image_size != config.image_size:
        config = config.with_image_size(args.image_size)
    overrides = {"dataset": normalize_dataset(args.dataset), "steps": args.steps,
                 "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "device": args.device,
                 "num_threads": args.threads, "sample_every": args.sample_every,
                 "checkpoint_every": args.checkpoint_every, "hflip": getattr(args, "hflip", None),
                 "two_shape_share": getattr(args, "two_shape_share", None),
                 "p_uncond": getattr(args, "p_uncond", None), "ema_decay": getattr(args, "ema_decay", None),
                 "init_from": _absolute(getattr(args, "init_from", None)),
                 "schedule": getattr(args, "schedule", None)}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if getattr(args, "learn_sigma", None) and not config.unet.learn_sigma:
        if args.resume and saved.is_file():
            raise UsageError(f"Cannot resume with --learn-sigma: the run in {args.out} was trained without a "
                             "variance head (the U-Net's output differs); start a new run.")
        config = replace(config, unet=replace(config.unet, learn_sigma=True))
    if getattr(args, "token_positions", None) and not config.unet.token_positions:
        if args.resume and saved.is_file():
            raise UsageError(f"Cannot resume with --token-positions: the run in {args.out} was trained without "
                             "them; start a new run (--init-from can start it from this one).")
        config = replace(config, unet=replace(config.unet, token_positions=config.max_tokens))
    if getattr(args, "pooled_text", None) is False and config.unet.pooled_text:
        if args.resume and saved.is_file():
            raise UsageError(f"Cannot resume with --no-pooled-text: the run in {args.out} was trained with the "
                             "pooled prompt; start a new run (--init-from can start it from this one).")
        config = replace(config, unet=replace(config.unet, pooled_text=False))
    sizes = _feature_sizes(getattr(args, "cross_attention", None))
    if sizes is not None and set(sizes) != set(config.unet.cross_attention_resolutions):
        if args.resume and saved.is_file():
            raise UsageError(f"Cannot resume with --cross-attention {args.cross_attention}: the run in {args.out} "
                             "has cross-attention at other sizes; start a new run (--init-from can start it "
                             "from this one).")
        config = replace(config, unet=replace(config.unet, cross_attention_resolutions=sizes))
    config.validate()
    return config


def _feature_sizes(text: str | None) -> tuple[int, ...] | None:
    """'32,16,8' as (32, 16, 8), largest first; None when the flag is not given."""
    if text is None:
        return None
    try:
        sizes = tuple(sorted({int(part) for part in text.split(",")}, reverse=True))
    except ValueError:
        raise UsageError(f"--cross-attention takes feature sizes separated by commas, e.g. 32,16,8; "
                         f"got '{text}'.") from None
    return sizes


def _absolute(path: str | None) -> str | None:
    """A path made absolute, so the saved config names the same file from any folder."""
    return None if path is None else str(Path(path).expanduser().resolve())


def normalize_dataset(dataset: str | None) -> str | None:
    """'folder:PATH' with PATH made absolute (a resumed run finds it from anywhere)."""
    if dataset is None:
        return None
    if dataset.startswith("folder:") and dataset[len("folder:"):]:
        return "folder:" + str(Path(dataset[len("folder:"):]).expanduser().resolve())
    if dataset != "shapes" and not dataset.startswith("folder:"):
        raise UsageError(f"Unknown dataset '{dataset}'; use 'shapes' or 'folder:PATH'.")
    return dataset


def forwarded_args(args: argparse.Namespace) -> list[str]:
    """The `train ...` arguments every process of a --nproc launch gets (all but --nproc)."""
    out = ["train"]
    for name, flag in _FORWARDED:
        value = getattr(args, name, None)
        if value is not None:
            out += [flag, str(value)]
    out += [flag for name, flag in _FORWARDED_SWITCHES if getattr(args, name, None)]
    out += [flag for name, flag in _FORWARDED_OFF_SWITCHES if getattr(args, name, None) is False]
    return out


def run(args: argparse.Namespace) -> int:
    # Passive OpenMP waiting: on a busy 2-core machine, spinning threads made steps ~5x slower.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError("Training needs PyTorch: pip install 'diffusion-studio[train]'.") from None
    from diffusion_studio.training.resume import check_out_folder

    normalize_dataset(args.dataset)
    if args.nproc < 1 or args.nproc > 1024:
        raise UsageError(f"--nproc must be an integer in [1, 1024], got {args.nproc}.")
    check_out_folder(Path(args.out))  # read-only, immutable, not a folder, name too long: one line
    config = build_config(args)  # every flag and the whole TrainConfig, before anything is written
    if args.nproc > 1:
        return _launch(args, config)
    from diffusion_studio.training import ddp
    from diffusion_studio.training.trainer import Trainer

    ctx = ddp.init_distributed(config.device)  # joins torchrun's group when started by torchrun
    try:
        listeners: list[Callable[[dict[str, Any]], None]] = []
        bar = None
        if not args.json and ctx.is_main:
            bar = _ProgressBar()
            listeners.append(bar)
        trainer = Trainer(config, args.out, resume=args.resume, listeners=listeners,
                          echo=sys.stdout if args.json else None, dist=ctx)
        for note in trainer.notes:
            sys.stderr.write(f"note: {note}\n")
        try:
            result = trainer.run()
        finally:
            if bar is not None:
                bar.close()
    finally:
        ddp.shutdown(ctx)
    if not ctx.is_main:
        return 0
    if result.stopped:
        sys.stderr.write(f"stopped at step {result.step}; continue with --resume --out {args.out}\n")
    elif not args.json:
        sys.stderr.write(f"done: {result.step} steps; latest checkpoint {result.checkpoint}\n")
    return 0


def _launch(args: argparse.Namespace, config: Any) -> int:
    """Check what can be checked here (one clear line on bad input), then start torchrun."""
    from diffusion_studio.training import ddp
    from diffusion_studio.training.resume import check_run_dir

    ddp.shard_size(config.batch_size, args.nproc)
    ddp.check_gpus(config.device, args.nproc)
    if config.dataset.startswith("folder:"):
        from diffusion_studio.training.datasets.folder import scan_folder

        scan_folder(config.dataset[len("folder:"):])
    check_run_dir(Path(args.out), config, args.resume)
    code = ddp.launch(forwarded_args(args), args.nproc, threads=args.threads)
    if code != 0:
        sys.stderr.write(f"error: the training processes failed (torchrun exit code {code}).\n")
        return 1
    return 0


class _ProgressBar:
    """Renders progress events as a tqdm bar; sample grids and checkpoints as lines above it."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, event: dict[str, Any]) -> None:
        from tqdm import tqdm

        kind = event.get("event")
        if kind == "start":
            self.bar = tqdm(total=event["steps"], initial=event["step"], unit="step", dynamic_ncols=True)
            tqdm.write(f"U-Net: {event['parameters']:,} parameters, "
                       f"{event['flops_per_forward'] / 1e9:.2f} GFLOP per image; device {event['device']}"
                       + (f" x {event['world_size']} processes" if event.get("world_size", 1) > 1 else ""))
            data = event.get("dataset") or {}
            if data.get("name") == "folder":
                skipped = "".join(f", {n} skipped ({reason})" for reason, n in data["skipped_by_reason"].items())
                tqdm.write(f"dataset: {data['images']} images from {data['path']}{skipped}")
        elif self.bar is None:
            return
        elif kind == "progress":
            self.bar.update(event["step"] - self.bar.n)
            vlb = {"vlb": f"{event['loss_vlb']:.3g}"} if event.get("loss_vlb") is not None else {}
            self.bar.set_postfix(loss=f"{event['loss']:.4f}", **vlb, lr=f"{event['lr']:.1e}",
                                 img_s=f"{event['images_per_s']:.0f}", refresh=False)
        elif kind == "sample":
            tqdm.write(f"step {event['step']}: samples {event['sample_grid']}")
        elif kind == "checkpoint":
            tqdm.write(f"step {event['step']}: checkpoint {event['checkpoint']}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
