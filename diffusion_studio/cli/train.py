"""`diffusion-studio train`: train a text-conditioned DDPM U-Net (Algorithm 1) into RUN_DIR.

Without --json a tqdm progress bar shows loss, LR and images/s; with --json every progress
event is printed as one JSON line (what the GUI reads). Ctrl-C (or SIGTERM) writes a
checkpoint and stops; `--resume` continues exactly where it stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from diffusion_studio.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a diffusion model (PyTorch)",
                       description="Train a text-conditioned ε-predicting U-Net (DDPM Algorithm 1).")
    p.add_argument("--dataset", default="shapes", help="'shapes' (procedural) or 'folder:PATH'")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (checkpoints, samples, events)")
    p.add_argument("--preset", default="cpu", choices=("cpu-quick", "cpu", "gpu"),
                   help="model size and schedule preset (default: cpu, the shipped default model)")
    p.add_argument("--steps", type=int, help="total number of updates")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--lr", type=float, help="peak AdamW learning rate")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its latest checkpoint")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--json", action="store_true", help="print progress events as JSON lines on stdout")
    p.add_argument("--threads", type=int, help="PyTorch CPU threads (default: all cores)")
    p.add_argument("--sample-every", type=int, help="updates between sample grids (0: only at the end)")
    p.add_argument("--checkpoint-every", type=int, help="updates between checkpoints")


def build_config(args: argparse.Namespace) -> Any:
    """TrainConfig from the preset (or the run's saved config with --resume) plus the flags."""
    from diffusion_studio.training.config import TrainConfig, preset

    saved = Path(args.out) / "config.json"
    config = TrainConfig.load(saved) if args.resume and saved.is_file() else preset(args.preset)
    if args.image_size is not None and args.image_size != config.image_size:
        config = config.with_image_size(args.image_size)
    overrides = {"dataset": args.dataset, "steps": args.steps, "batch_size": args.batch_size,
                 "lr": args.lr, "seed": args.seed, "device": args.device, "num_threads": args.threads,
                 "sample_every": args.sample_every, "checkpoint_every": args.checkpoint_every}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    config.validate()
    return config


def run(args: argparse.Namespace) -> int:
    # Passive OpenMP waiting: on a busy 2-core machine, spinning threads made steps ~5x slower.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError("Training needs PyTorch: pip install 'diffusion-studio[train]'.") from None
    if args.dataset != "shapes" and not args.dataset.startswith("folder:"):
        raise UsageError(f"Unknown dataset '{args.dataset}'; use 'shapes' or 'folder:PATH'.")
    from diffusion_studio.training.trainer import Trainer

    config = build_config(args)
    listeners, bar = [], None
    if not args.json:
        bar = _ProgressBar()
        listeners.append(bar)
    trainer = Trainer(config, args.out, resume=args.resume, listeners=listeners,
                      echo=sys.stdout if args.json else None)
    try:
        result = trainer.run()
    finally:
        if bar is not None:
            bar.close()
    if result.stopped:
        sys.stderr.write(f"stopped at step {result.step}; continue with --resume --out {args.out}\n")
    elif not args.json:
        sys.stderr.write(f"done: {result.step} steps; latest checkpoint {result.checkpoint}\n")
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
                       f"{event['flops_per_forward'] / 1e9:.2f} GFLOP per image; device {event['device']}")
        elif self.bar is None:
            return
        elif kind == "progress":
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix(loss=f"{event['loss']:.4f}", lr=f"{event['lr']:.1e}",
                                 img_s=f"{event['images_per_s']:.0f}", refresh=False)
        elif kind == "sample":
            tqdm.write(f"step {event['step']}: samples {event['sample_grid']}")
        elif kind == "checkpoint":
            tqdm.write(f"step {event['step']}: checkpoint {event['checkpoint']}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
