"""The Shapes stream with a share of two-object examples ("a red circle next to a blue square").

Off by default (`TrainConfig.two_shape_share = 0.0`, and then the plain ShapesStream is used,
unchanged). With a share p > 0, example i is a two-object example (`core.shape_pairs`) with
probability p, decided by its own generator seeded by (seed, i), so the mixed stream stays a
pure function of the step like the plain one. Held-out noun pairs never appear.
"""

from __future__ import annotations

import numpy as np

from diffusion_studio.core.shape_pairs import pair_example
from diffusion_studio.training.datasets.shapes import ShapesStream

_MIX_KEY = 0x2525  # seed-sequence tag of the "one or two shapes" decision


class MixedShapesStream(ShapesStream):
    """The Shapes stream where a share of the examples hold two shapes."""

    def __init__(self, image_size: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, two_shape_share: float = 0.0) -> None:
        super().__init__(image_size, batch_size, seed, rank, world_size)
        self.two_shape_share = two_shape_share

    def example(self, index: int) -> tuple[np.ndarray, str]:
        rng = np.random.default_rng([self.seed, _MIX_KEY, index])
        if rng.random() < self.two_shape_share:
            image, text, _ = pair_example(rng, self.image_size)
            return image, text
        return super().example(index)
