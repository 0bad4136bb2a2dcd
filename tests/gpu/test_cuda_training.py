"""Training on CUDA end to end: `train --preset gpu` for a few hundred steps, export, generate; DDP over NCCL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.torch_cuda


def _run(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "DIFFUSION_STUDIO_DEBUG": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def test_train_gpu_preset_then_export_and_generate(tmp_path):
    run_dir, bundle, png = tmp_path / "run", tmp_path / "bundle", tmp_path / "image.png"
    _run("-m", "diffusion_studio", "train", "--preset", "gpu", "--device", "cuda", "--steps", "300",
         "--sample-every", "0", "--checkpoint-every", "300", "--out", str(run_dir))
    events = _events(run_dir)
    start = next(e for e in events if e["event"] == "start")
    assert start["device"].startswith("cuda")
    losses = [e["loss"] for e in events if e["event"] == "progress"]
    assert losses and np.isfinite(losses).all() and losses[-1] < losses[0]  # it learns
    _run("-m", "exporter", str(run_dir), "--out", str(bundle), "--fp16")
    _run("-m", "diffusion_studio", "generate", "a large red circle", "--model", str(bundle), "--device", "cuda",
         "--seed", "0", "-o", str(png))
    image = np.asarray(Image.open(png))
    assert image.shape[:2] == (32, 32) and image.std() > 0


def test_nccl_all_reduce():
    import torch
    import torch.distributed as dist

    store = dist.HashStore()
    dist.init_process_group("nccl", store=store, rank=0, world_size=1)
    try:
        value = torch.arange(4.0, device="cuda")
        dist.all_reduce(value)
        assert value.device.type == "cuda" and value.tolist() == [0.0, 1.0, 2.0, 3.0]
        assert dist.get_backend() == "nccl"
    finally:
        dist.destroy_process_group()


def test_ddp_over_nccl_across_the_gpus(tmp_path):
    import torch

    count = torch.cuda.device_count()
    if count < 2:
        pytest.skip(f"DDP needs at least 2 GPUs; this machine has {count}")
    run_dir = tmp_path / "ddp"
    _run("-m", "diffusion_studio", "train", "--preset", "gpu", "--device", "cuda", "--nproc", str(count),
         "--steps", "100", "--batch-size", str(64 * count), "--sample-every", "0", "--checkpoint-every", "100",
         "--out", str(run_dir))
    events = _events(run_dir)
    start = next(e for e in events if e["event"] == "start")
    assert start["world_size"] == count
    assert any(e.get("done") for e in events)
    assert list((run_dir / "checkpoints").glob("*.safetensors"))
