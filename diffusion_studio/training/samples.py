"""Sample grids during training: core.sampling_loop.sample() through a TorchDenoiser (the app's loop).

At every sample interval the trainer draws the run's fixed prompts (config.sample_prompts)
with the same seed twice: from the EMA weights (what the exporter ships by default) into
RUN_DIR/samples/step-NNNNNNNN.png and from the raw weights into step-NNNNNNNN-raw.png. The
grid holds prompt i at row i // cols, column i % cols, cols = ⌈√N⌉ (core.images.make_grid).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from diffusion_studio.core.files import atomic_write_bytes
from diffusion_studio.core.guidance import guided_eps_fn
from diffusion_studio.core.images import make_grid, to_uint8
from diffusion_studio.core.params import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from diffusion_studio.core.sampling_loop import run_to_end, sample
from diffusion_studio.core.schedule import Schedule
from diffusion_studio.errors import UsageError
from diffusion_studio.training.denoiser import TorchDenoiser, model_variance

Encode = Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]

SAMPLES_DIR = "samples"
RAW_SUFFIX = "-raw"  # step-00000150-raw.png: the raw weights' grid beside the EMA one


def grid_columns(count: int) -> int:
    """Columns of a grid of `count` samples: ⌈√count⌉, make_grid's default (prompt i at row i // cols)."""
    return max(1, math.ceil(math.sqrt(count)))


def grid_paths(run_dir: Path, step: int) -> tuple[Path, Path]:
    """(EMA grid, raw grid) of a step: RUN_DIR/samples/step-NNNNNNNN.png and step-NNNNNNNN-raw.png."""
    folder = Path(run_dir) / SAMPLES_DIR
    return folder / f"step-{step:08d}.png", folder / f"step-{step:08d}{RAW_SUFFIX}.png"


def sample_images(model: nn.Module, schedule: Schedule, encode: Encode, prompts: Sequence[str], *,
                  image_size: int, channels: int = 3, steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE,
                  seed: int = 0, sampler: str = DEFAULT_SAMPLER.value, bf16: bool = False,
                  should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """uint8 [N, H, W, C] samples for the prompts (DPM-Solver++ by default, classifier-free guidance).

    A U-Net with a learned variance is sampled with it ("learned_range": DDPM uses its Σ_θ)."""
    context, mask = encode(list(prompts))
    uncond_context, uncond_mask = encode([""])
    variance = model_variance(model)
    eps_fn = guided_eps_fn(TorchDenoiser(model, bf16=bf16), context, mask, uncond_context, uncond_mask, guidance,
                           variance)
    shape = (len(prompts), channels, image_size, image_size)
    steps_run = sample(eps_fn, schedule, shape, sampler=sampler, steps=steps, rng=np.random.default_rng(seed),
                       should_stop=should_stop, variance=variance)
    # A grid is written even if a sample is not finite (black pixels): the trainer's loss check,
    # not a preview, decides whether a run has diverged.
    return to_uint8(run_to_end(steps_run, check_finite=False).x_prev)


def write_grid(path: Path, images: np.ndarray, scale: int = 2) -> Path:
    """Tile images into a PNG (nearest-neighbour upscaled for visibility), written atomically."""
    grid = make_grid(images, padding=2, fill=255)
    img = Image.fromarray(grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"Cannot create the samples folder {path.parent} ({exc.strerror or exc}).") from None
    return atomic_write_bytes(path, buf.getvalue())


def write_sample_grids(run_dir: Path, step: int, ema_model: nn.Module, raw_model: nn.Module, schedule: Schedule,
                       encode: Encode, prompts: Sequence[str], *, image_size: int, channels: int = 3,
                       steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE, seed: int = 0,
                       bf16: bool = False, should_stop: Callable[[], bool] | None = None) -> tuple[Path, Path]:
    """Draw the prompts from the EMA and the raw weights with the same seed (x_T and every ε are
    the same draws, so the grids differ only by the weights) and write both grids; returns their
    paths. Cancelled (from should_stop) before anything is written if either is interrupted."""
    grids = [sample_images(model, schedule, encode, prompts, image_size=image_size, channels=channels,
                           steps=steps, guidance=guidance, seed=seed, bf16=bf16, should_stop=should_stop)
             for model in (ema_model, raw_model)]
    ema_path, raw_path = grid_paths(run_dir, step)
    return write_grid(ema_path, grids[0]), write_grid(raw_path, grids[1])
