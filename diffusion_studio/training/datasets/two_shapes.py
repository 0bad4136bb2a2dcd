"""Optional second kind of Shapes example: two small shapes, e.g. "a red circle and a blue square".

Off by default (`TrainConfig.two_shape_share = 0.0` in every preset, and then the plain
ShapesStream is used, unchanged). With a share p > 0, example i of the stream is a
two-shape example with probability p, decided by its own generator seeded by (seed, i), so
the mixed stream stays a pure function of the step like the plain one. The two shapes are
small, sit in two different corners (their boxes cannot overlap) on one background, and
differ in color or shape; the caption always names both, in image order, and often their
corners and the background.
"""

from __future__ import annotations

import numpy as np

from diffusion_studio.core.shapes import BACKGROUNDS, COLORS, SHAPES, ShapeSpec, coverage, random_spec, render
from diffusion_studio.training.datasets.shapes import ShapesStream

CORNERS = ("top left", "top right", "bottom left", "bottom right")
_MIX_KEY = 0x2525  # seed-sequence tag of the "one or two shapes" decision


def _noun(spec: ShapeSpec) -> str:
    return f"{'an' if spec.color[0] in 'aeiou' else 'a'} {spec.color} {spec.shape}"


def two_shape_caption(a: ShapeSpec, b: ShapeSpec, rng: np.random.Generator) -> str:
    """'a red circle and a blue square', with their corners (p 0.6) and the background (p 0.7)."""
    with_corners = rng.random() < 0.6
    parts = [f"{_noun(s)} in the {s.position}" if with_corners else _noun(s) for s in (a, b)]
    text = " and ".join(parts)
    if rng.random() < 0.7:
        text += f" on a {a.background} background"
    return text


def two_shape_example(rng: np.random.Generator,
                      image_size: int) -> tuple[np.ndarray, str, tuple[ShapeSpec, ShapeSpec]]:
    """(uint8 [H, W, 3] image, caption, (first, second) spec) of a two-shape example."""
    corner_a, corner_b = (str(c) for c in rng.choice(CORNERS, size=2, replace=False))
    background = str(rng.choice(list(BACKGROUNDS)))
    a = random_spec(rng, size="small", position=corner_a, background=background)
    others = [(c, s) for c in COLORS for s in SHAPES if (c, s) != (a.color, a.shape)]
    color, shape = others[int(rng.integers(len(others)))]
    b = random_spec(rng, size="small", position=corner_b, background=background, color=color, shape=shape)
    cover = coverage(b, image_size)[..., None]  # draw b over a's image (disjoint corners)
    img = cover * np.asarray(b.color_rgb, np.float32) + (1 - cover) * render(a, image_size).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), two_shape_caption(a, b, rng), (a, b)


class MixedShapesStream(ShapesStream):
    """The Shapes stream where a share of the examples hold two shapes."""

    def __init__(self, image_size: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, two_shape_share: float = 0.0) -> None:
        super().__init__(image_size, batch_size, seed, rank, world_size)
        self.two_shape_share = two_shape_share

    def example(self, index: int) -> tuple[np.ndarray, str]:
        rng = np.random.default_rng([self.seed, _MIX_KEY, index])
        if rng.random() < self.two_shape_share:
            image, text, _ = two_shape_example(rng, self.image_size)
            return image, text
        return super().example(index)
