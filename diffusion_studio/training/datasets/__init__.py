"""Training data streams: `make_stream(config)` picks one from `TrainConfig.dataset`."""

from __future__ import annotations

from typing import Protocol

import torch

from diffusion_studio.errors import UsageError


class BatchStream(Protocol):
    """Deterministic batches by step number: batch(step) -> (x0 [B, C, H, W] in [-1, 1], captions)."""

    def batch(self, step: int) -> tuple[torch.Tensor, list[str]]: ...


def make_stream(dataset: str, image_size: int, batch_size: int, seed: int,
                rank: int = 0, world_size: int = 1) -> BatchStream:
    if dataset == "shapes":
        from diffusion_studio.training.datasets.shapes import ShapesStream

        return ShapesStream(image_size, batch_size, seed, rank, world_size)
    if dataset.startswith("folder:"):
        raise UsageError("The folder dataset is not implemented yet; use --dataset shapes.")
    raise UsageError(f"Unknown dataset '{dataset}'; use 'shapes' or 'folder:PATH'.")
