"""Sample grids of the EMA and the raw weights: both written at every interval, same prompts and seed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from diffusion_studio.training.checkpoints import stale_temp_files
from diffusion_studio.training.events import read_events
from diffusion_studio.training.samples import grid_columns, grid_paths, sample_images
from diffusion_studio.training.trainer import Trainer

from .conftest import tiny_config

PROMPTS = ("a red circle", "a blue square", "a green triangle")


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_grid_layout_matches_make_grid() -> None:
    assert [grid_columns(n) for n in (1, 2, 3, 4, 5, 8, 9, 10)] == [1, 2, 2, 2, 3, 3, 3, 4]
    ema, raw = grid_paths(Path("/r"), 150)
    assert (str(ema), str(raw)) == ("/r/samples/step-00000150.png", "/r/samples/step-00000150-raw.png")


def test_ema_and_raw_grids_at_every_interval(tmp_path, text_encoder) -> None:
    run = tmp_path / "run"
    cfg = tiny_config(steps=8, sample_every=4, checkpoint_every=4, lr=2e-3, ema_decay=0.9, sample_prompts=PROMPTS)
    trainer = Trainer(cfg, run, text_encoder=text_encoder)
    trainer.run()
    samples = [e for e in read_events(run / "events.jsonl") if e["event"] == "sample"]
    assert [e["step"] for e in samples] == [0, 4, 8]
    for event in samples:
        ema, raw = grid_paths(run, event["step"])
        assert (event["sample_grid"], event["raw_sample_grid"]) == (str(ema), str(raw))
        assert event["prompts"] == list(PROMPTS) and event["grid_columns"] == 2  # 3 prompts: 2 x 2 grid
        assert _png(ema).shape == _png(raw).shape == (68, 68, 3)  # (2·16 + 2 padding) · 2
    # step 0: the EMA is a copy of the net, so the grids are the same; later the EMA lags the net
    assert np.array_equal(_png(grid_paths(run, 0)[0]), _png(grid_paths(run, 0)[1]))
    for step in (4, 8):
        ema, raw = (_png(p).astype(int) for p in grid_paths(run, step))
        assert np.abs(ema - raw).mean() > 0.05, step  # different pixels, not only rounding
    # the raw grid is exactly the raw weights' samples (the same seed as the EMA grid)
    raw_images = sample_images(trainer.model, trainer.schedule, trainer.text.encode, PROMPTS, image_size=16,
                               steps=cfg.sample_steps, guidance=cfg.sample_guidance, seed=cfg.seed)
    top_left = _png(grid_paths(run, 8)[1])[:32:2, :32:2]  # prompt 0, un-upscaled
    np.testing.assert_array_equal(top_left, raw_images[0])


def test_temp_files_of_raw_grids_count_as_ours(tmp_path) -> None:
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = run / "samples" / f"step-00000010-raw.png.tmp-{int(dead.stdout)}"
    live = run / "samples" / f"step-00000010-raw.png.tmp-{os.getpid()}"
    for path in (stale, live):
        path.write_bytes(b"x")
    assert stale_temp_files(run) == [stale]
