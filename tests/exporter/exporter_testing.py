"""Helpers for the exporter tests: a tiny trained run and an in-process CLI runner.

The run is real: a tiny text-conditioned U-Net trained for a few steps of Algorithm 1
(DDPM) with AdamW and an EMA copy, saved by `training.checkpoints.save_checkpoint`.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path


T_TINY = 100
TOKENS = 8
TRAIN_STEPS = 4


def tiny_train_config():
    from diffusion_studio.training.config import TrainConfig
    from diffusion_studio.training.unet import UNetConfig

    unet = UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                      attention_resolutions=(4,), cross_attention_resolutions=(8, 4), num_heads=2, groups=4)
    return TrainConfig(image_size=8, steps=TRAIN_STEPS, batch_size=4, T=T_TINY, max_tokens=TOKENS,
                       sample_guidance=2.0, ema_decay=0.9, unet=unet)


def train_tiny_run(run_dir: Path, seed: int = 0) -> Path:
    """A few steps of Algorithm 1 on random images and contexts, then one checkpoint."""
    import torch

    from diffusion_studio.core.schedule import make_schedule
    from diffusion_studio.training.checkpoints import save_checkpoint
    from diffusion_studio.training.ema import EMA
    from diffusion_studio.training.unet import UNet

    cfg = tiny_train_config()
    torch.manual_seed(seed)
    net = UNet(cfg.unet)
    ema = EMA(net, cfg.ema_decay)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    sched = make_schedule(cfg.schedule, cfg.T)
    abar = torch.tensor(sched.alphas_cumprod, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(cfg.steps):
        x0 = torch.rand(4, 3, 8, 8, generator=gen) * 2 - 1
        context = torch.randn(4, TOKENS, 384, generator=gen)
        mask = (torch.arange(TOKENS)[None] < torch.tensor([[2], [3], [5], [8]])).float()
        t = torch.randint(1, cfg.T + 1, (4,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = abar[t - 1].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps  # closed form q(x_t | x_0)
        loss = ((net(x_t, t, context, mask) - eps) ** 2).mean()  # Algorithm 1 objective
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(net, step)
        losses.append(float(loss.detach()))
    save_checkpoint(run_dir, cfg.steps, model=net, ema=ema.model, optimizer=opt, config=cfg.to_dict(),
                    scheduler={}, metrics={"loss": losses[-1]}, keep_last=3)
    return run_dir


@dataclass
class CliResult:
    rc: int
    out: str
    err: str


def run_cli(*argv: str) -> CliResult:
    """`python -m exporter ARGV` in-process, capturing stdout and stderr."""
    from exporter.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return CliResult(rc, out.getvalue(), err.getvalue())
