"""Shapes as an infinite, deterministic stream of training batches (torch wrapper of core.shapes).

Example `i` is drawn from `numpy.random.default_rng([seed, i])`, and batch `s` holds examples
`s·B·W + r·B … s·B·W + (r+1)·B − 1` for rank `r` of `W` workers; so a resumed run (or any
rank) continues the exact same stream from its step number, with no hidden iterator state.
"""

from __future__ import annotations

import numpy as np
import torch

from diffusion_studio.core.shapes import sample_example


class ShapesStream:
    """`batch(step) -> (x0 float32 [B, 3, H, W] in [-1, 1], captions)`."""

    def __init__(self, image_size: int, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.image_size = image_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    def example(self, index: int) -> tuple[np.ndarray, str]:
        image, text, _ = sample_example(np.random.default_rng([self.seed, index]), self.image_size)
        return image, text

    def batch(self, step: int) -> tuple[torch.Tensor, list[str]]:
        first = (step * self.world_size + self.rank) * self.batch_size
        images, captions = [], []
        for i in range(first, first + self.batch_size):
            image, text = self.example(i)
            images.append(image)
            captions.append(text)
        x = np.stack(images).astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
        return torch.from_numpy(np.ascontiguousarray(x)), captions
