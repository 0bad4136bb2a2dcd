"""core.toy_data: the 2D datasets are deterministic, unit-variance, and have their shapes."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_studio.core.toy_data import (
    DATASET_LABELS,
    ToyDataset,
    drawn_points,
    make_dataset,
    parse_dataset,
)
from diffusion_studio.errors import UsageError

SHAPES = [k for k in ToyDataset if k is not ToyDataset.DRAWN]


@pytest.mark.parametrize("kind", SHAPES)
def test_deterministic_float32_and_unit_variance(kind: ToyDataset) -> None:
    a = make_dataset(kind, 20_000, seed=3)
    assert a.dtype == np.float32 and a.shape == (20_000, 2)
    assert np.array_equal(a, make_dataset(kind.value, 20_000, seed=3))
    assert not np.array_equal(a, make_dataset(kind, 20_000, seed=4))
    assert np.abs(a.mean(axis=0)).max() < 0.03  # centred
    assert a.var(axis=0).mean() == pytest.approx(1.0, abs=0.03)  # each coordinate ≈ unit variance on average
    # a prefix of a larger draw is not required, but a small draw has the same scale
    assert make_dataset(kind, 500, seed=3).var(axis=0).mean() == pytest.approx(1.0, abs=0.2)


def test_moons_lie_on_two_half_circles() -> None:
    p = make_dataset("moons", 5000, 0) * 0.7079 + np.array([0.5, 0.25])  # undo the scaling
    r_upper = np.hypot(p[:, 0], p[:, 1])
    r_lower = np.hypot(p[:, 0] - 1.0, p[:, 1] - 0.5)
    dist = np.minimum(np.abs(r_upper - 1.0), np.abs(r_lower - 1.0))
    assert np.median(dist) < 0.06  # noise σ = 0.06 around radius 1


def test_gaussian_mixture_has_eight_modes_on_a_circle() -> None:
    p = make_dataset("gaussians", 8000, 0) * 1.4221
    angle = np.round(np.arctan2(p[:, 1], p[:, 0]) / (np.pi / 4)) % 8
    counts = np.bincount(angle.astype(int), minlength=8)
    assert counts.min() > 800  # equal weights
    assert np.median(np.hypot(p[:, 0], p[:, 1])) == pytest.approx(2.0, abs=0.05)


def test_checkerboard_fills_only_the_dark_squares() -> None:
    p = make_dataset("checkerboard", 8000, 0) * 1.1547
    assert np.abs(p).max() <= 2.0 + 1e-5
    col, row = np.floor(p[:, 0] + 2).astype(int), np.floor(p[:, 1] + 2).astype(int)
    assert np.all((col + row) % 2 == 0)
    assert len(set(zip(col.tolist(), row.tolist()))) == 8


def test_spiral_radius_grows_with_the_angle() -> None:
    p = make_dataset("spiral", 4000, 0)
    assert np.hypot(p[:, 0], p[:, 1]).max() > 1.5


def test_drawn_points_are_drawn_positions_plus_small_jitter() -> None:
    drawn = np.array([[1.0, 2.0], [-1.0, 0.0], [0.5, -0.5]])
    p = drawn_points(drawn, 3000, seed=1, jitter=0.05)
    assert p.dtype == np.float32 and p.shape == (3000, 2)
    offsets = p[:, None, :] - drawn[None]
    nearest = np.argmin(np.linalg.norm(offsets, axis=2), axis=1)
    residual = p - drawn[nearest]
    assert residual.std() == pytest.approx(0.05, rel=0.1)  # jitter σ
    assert np.bincount(nearest).min() > 850  # uniform over the drawn points
    assert np.array_equal(p, make_dataset("drawn", 3000, 1, points=drawn, jitter=0.05))
    assert np.array_equal(drawn_points(drawn, 10, 1, jitter=0.0), drawn_points(drawn, 10, 1, jitter=0.0))
    assert set(map(tuple, drawn_points(drawn, 50, 1, jitter=0.0).tolist())) <= set(map(tuple, drawn.tolist()))


@pytest.mark.parametrize("bad", [np.zeros((0, 2)), np.zeros((3,)), [[np.nan, 0.0]]])
def test_drawn_points_refuse_bad_input_with_a_sentence(bad) -> None:
    with pytest.raises(UsageError):
        drawn_points(bad, 10)


def test_names_labels_and_bad_arguments() -> None:
    assert parse_dataset("Two moons") is ToyDataset.MOONS
    assert parse_dataset(" SPIRAL ") is ToyDataset.SPIRAL
    assert list(DATASET_LABELS) == list(ToyDataset)
    with pytest.raises(UsageError, match="Unknown 2D dataset 'swiss'"):
        parse_dataset("swiss")
    for n in (0, -1, 1.5, True, 10**9):
        with pytest.raises(UsageError, match="number of points"):
            make_dataset("moons", n)
    with pytest.raises(UsageError, match="needs the drawn points"):
        make_dataset("drawn", 10)
