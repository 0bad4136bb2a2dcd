"""2D point-cloud datasets for the 2D diffusion lab: two moons, a spiral, a Gaussian mixture,
a checkerboard, and points drawn by the user (plus small Gaussian jitter).

Every dataset is a float32 array [N, 2], deterministic from its seed. The built-in shapes are
centred and scaled so that each coordinate has variance ≈ 1 (the same scale as ε ~ N(0, I),
so x_T ≈ ε at the end of the forward process); the scale of each shape is a fixed constant
(measured once on 200,000 points), so a small sample is not stretched to fit. Drawn points
stay where they were drawn: they are already in the plot's coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum

import numpy as np
import numpy.typing as npt

from diffusion_studio.errors import UsageError

__all__ = [
    "DATASET_LABELS",
    "DEFAULT_JITTER",
    "MAX_POINTS",
    "ToyDataset",
    "drawn_points",
    "make_dataset",
    "parse_dataset",
]

MAX_POINTS = 200_000
DEFAULT_JITTER = 0.05  # σ of the Gaussian jitter around drawn points (plot units)


class ToyDataset(str, Enum):
    MOONS = "moons"
    SPIRAL = "spiral"
    GAUSSIANS = "gaussians"
    CHECKERBOARD = "checkerboard"
    DRAWN = "drawn"


# In the order a menu lists them.
DATASET_LABELS: dict[ToyDataset, str] = {
    ToyDataset.MOONS: "Two moons",
    ToyDataset.SPIRAL: "Spiral",
    ToyDataset.GAUSSIANS: "Gaussian mixture (8)",
    ToyDataset.CHECKERBOARD: "Checkerboard",
    ToyDataset.DRAWN: "Draw points",
}


def parse_dataset(name: object) -> ToyDataset:
    """A dataset id ('moons', …) or its label -> ToyDataset; else UsageError with one sentence."""
    if isinstance(name, ToyDataset):
        return name
    if isinstance(name, str):
        key = name.strip().lower()
        for kind, label in DATASET_LABELS.items():
            if key in (kind.value, label.lower()):
                return kind
    ids = ", ".join(kind.value for kind in ToyDataset)
    raise UsageError(f"Unknown 2D dataset {name!r}; choose one of {ids}.")


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= int(n) <= MAX_POINTS:
        raise UsageError(f"The number of points must be an integer between 1 and {MAX_POINTS}, got {n!r}.")
    return int(n)


def _moons(n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Two interleaved half circles of radius 1 (the upper one centred at 0, the lower at (1, 0.5))."""
    upper = rng.random(n) < 0.5
    theta = rng.random(n) * math.pi
    x = np.where(upper, np.cos(theta), 1.0 - np.cos(theta))
    y = np.where(upper, np.sin(theta), 0.5 - np.sin(theta))
    return np.stack([x, y], axis=1) + rng.normal(0.0, 0.06, (n, 2))


def _spiral(n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """An Archimedean spiral r = θ over 1.5 turns, denser where the arm is longer (θ ∝ √u)."""
    theta = math.pi * (0.5 + 2.5 * np.sqrt(rng.random(n)))
    points = np.stack([theta * np.cos(theta), theta * np.sin(theta)], axis=1)
    return points + rng.normal(0.0, 0.25, (n, 2))


def _gaussians(n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Eight equal Gaussians (σ = 0.15) with centres on the unit circle scaled by 2."""
    k = rng.integers(0, 8, n)
    angle = k * (2 * math.pi / 8)
    centres = 2.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return centres + rng.normal(0.0, 0.15, (n, 2))


def _checkerboard(n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Uniform on the 8 dark squares of a 4 × 4 board of unit squares on [−2, 2]²."""
    cell = rng.integers(0, 8, n)
    row = cell // 2
    col = 2 * (cell % 2) + (row % 2)  # dark squares: (row + col) even
    return np.stack([col, row], axis=1) - 2.0 + rng.random((n, 2))


# Each shape's generator and the (centre, scale) that gives every coordinate variance ≈ 1:
# the mean and the root of the mean per-coordinate variance (exact where a formula is given, else
# measured on 200,000 points, seed 0).
_SHAPES: dict[ToyDataset, tuple[Callable[[int, np.random.Generator], npt.NDArray[np.float64]],
                                tuple[float, float], float]] = {
    ToyDataset.MOONS: (_moons, (0.5, 0.25), 0.7079),
    ToyDataset.SPIRAL: (_spiral, (-0.4934, 2.2868), 4.7141),
    ToyDataset.GAUSSIANS: (_gaussians, (0.0, 0.0), 1.4221),  # √(4/2 + 0.15²),
    ToyDataset.CHECKERBOARD: (_checkerboard, (0.0, 0.0), 1.1547),  # √(16/12)
}


def make_dataset(
    name: str | ToyDataset, n: int, seed: int = 0, *, points: npt.ArrayLike | None = None,
    jitter: float = DEFAULT_JITTER,
) -> npt.NDArray[np.float32]:
    """n points of dataset `name` as float32 [n, 2], the same for the same seed.

    'drawn' needs `points` (the drawn [M, 2] positions): see `drawn_points`.
    """
    kind = parse_dataset(name)
    n = _check_n(n)
    if kind is ToyDataset.DRAWN:
        if points is None:
            raise UsageError("The 'drawn' dataset needs the drawn points.")
        return drawn_points(points, n, seed, jitter=jitter)
    generate, centre, scale = _SHAPES[kind]
    raw = generate(n, np.random.default_rng([int(seed), 0x70]))
    scaled: npt.NDArray[np.float32] = ((raw - np.asarray(centre)) / scale).astype(np.float32)
    return scaled


def drawn_points(
    points: npt.ArrayLike, n: int, seed: int = 0, *, jitter: float = DEFAULT_JITTER
) -> npt.NDArray[np.float32]:
    """n points drawn uniformly from the M drawn positions, each moved by N(0, jitter² I)."""
    n = _check_n(n)
    base = np.asarray(points, dtype=np.float64)
    if base.ndim != 2 or base.shape[1] != 2 or base.shape[0] == 0:
        raise UsageError("Draw at least one point first (click or drag on the plot).")
    if not np.all(np.isfinite(base)):
        raise UsageError("The drawn points must be finite numbers.")
    if not (math.isfinite(jitter) and jitter >= 0.0):
        raise UsageError(f"The jitter must be a non-negative number, got {jitter!r}.")
    rng = np.random.default_rng([int(seed), 0x71])
    picked = base[rng.integers(0, base.shape[0], n)]
    return (picked + rng.normal(0.0, jitter, (n, 2))).astype(np.float32)
