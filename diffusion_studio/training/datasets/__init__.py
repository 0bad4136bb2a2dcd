"""Training data streams: `make_stream(...)` picks one from `TrainConfig.dataset`."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from diffusion_studio.errors import UsageError


class BatchStream(Protocol):
    """Deterministic batches by step number: batch(step) -> (x0 [B, C, H, W] in [-1, 1], captions).

    `batch_size` is the per-rank share b of the global batch B = b·W; rank r of W gets the
    global examples step·B + r·b … step·B + (r+1)·b − 1.
    """

    def batch(self, step: int) -> tuple[torch.Tensor, list[str]]: ...


def make_stream(dataset: str, image_size: int, batch_size: int, seed: int,
                rank: int = 0, world_size: int = 1, hflip: bool = False,
                two_shape_share: float = 0.0) -> BatchStream:
    if dataset == "shapes":
        from diffusion_studio.training.datasets.shapes import ShapesStream

        if hflip:
            raise UsageError("Horizontal flips would swap left and right in the Shapes captions; "
                             "they are for folder datasets only.")
        if two_shape_share > 0:
            from diffusion_studio.training.datasets.two_shapes import MixedShapesStream

            return MixedShapesStream(image_size, batch_size, seed, rank, world_size, two_shape_share)
        return ShapesStream(image_size, batch_size, seed, rank, world_size)
    if two_shape_share > 0:
        raise UsageError("Two-shape examples are part of the Shapes dataset only.")
    if dataset.startswith("folder:"):
        from diffusion_studio.training.datasets.folder import FolderStream

        return FolderStream(dataset[len("folder:"):], image_size, batch_size, seed, rank, world_size, hflip)
    raise UsageError(f"Unknown dataset '{dataset}'; use 'shapes' or 'folder:PATH'.")


def describe_stream(stream: Any, dataset: str) -> dict[str, Any]:
    """A JSON summary of a stream for the start event (the folder stream adds its counts)."""
    describe = getattr(stream, "describe", None)
    return describe() if callable(describe) else {"name": dataset}
