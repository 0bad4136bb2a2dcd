"""Fixtures of the exporter tests: a tiny trained run folder and its exported bundles.

The run is real: `training.trainer.Trainer` runs a few steps of Algorithm 1 on Shapes with
a tiny text-conditioned U-Net (8x8, T=100, 16 tokens) and writes its checkpoint; the
bundles are made by `python -m exporter` (in-process, so the tests share one torch import).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


@dataclass
class CliResult:
    rc: int
    out: str
    err: str


def _run_cli(*argv: object) -> CliResult:
    """`python -m exporter ARGV` in-process, capturing stdout and stderr."""
    from exporter.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return CliResult(rc, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., CliResult]:
    return _run_cli


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_config():
    from diffusion_studio.training.config import TrainConfig
    from diffusion_studio.training.unet import UNetConfig

    unet = UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                      attention_resolutions=(4,), cross_attention_resolutions=(4,), num_heads=2, groups=4)
    # A high LR without warm-up so that 4 updates move the raw weights well away from the EMA.
    return TrainConfig(image_size=8, steps=4, batch_size=4, lr=1e-2, warmup_steps=0, T=100, max_tokens=16,
                       sample_every=0, checkpoint_every=4, sample_guidance=2.0, ema_decay=0.9,
                       device="cpu", unet=unet)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_config) -> Path:
    from diffusion_studio.training.trainer import Trainer

    run_dir = tmp_path_factory.mktemp("runs") / "tiny-run"
    Trainer(tiny_config, run_dir, echo=io.StringIO()).run()
    return run_dir


@pytest.fixture(scope="session")
def ema_export(tmp_path_factory, tiny_run) -> tuple[Path, CliResult]:
    """The run exported with defaults (EMA weights, validated) plus --fp16."""
    out = tmp_path_factory.mktemp("bundles") / "tiny-ema"
    result = _run_cli(tiny_run, "--out", out, "--fp16")
    assert result.rc == 0, result.err
    return out, result


@pytest.fixture(scope="session")
def raw_export(tmp_path_factory, tiny_run) -> tuple[Path, CliResult]:
    """The run's checkpoint file (not the folder) with --weights raw and --no-validate."""
    out = tmp_path_factory.mktemp("bundles") / "tiny-raw"
    checkpoint = next((tiny_run / "checkpoints").glob("*.safetensors"))
    result = _run_cli(checkpoint, "--out", out, "--weights", "raw", "--no-validate", "--name", "tiny raw")
    assert result.rc == 0, result.err
    return out, result


@pytest.fixture
def fixed_inputs(tiny_config):
    """Batch 3 (not one of the parity batch sizes): x, t, context, context_mask."""
    rng = np.random.default_rng(7)
    L = tiny_config.max_tokens
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    t = np.array([1, 50, 100], dtype=np.int64)
    context = rng.standard_normal((3, L, 384)).astype(np.float32)
    mask = (np.arange(L)[None] < np.array([[2], [4], [8]])).astype(np.float32)
    return x, t, context, mask
