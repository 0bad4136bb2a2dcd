"""core.sliced_wasserstein against closed forms and scipy's 1D Wasserstein distance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffusion_studio.core.sliced_wasserstein import projection_directions, sliced_wasserstein, wasserstein_1d
from diffusion_studio.errors import UsageError

rng = np.random.default_rng(0)
A = rng.normal(size=(300, 2))
B = rng.normal(size=(200, 2)) * [2.0, 0.5] + [1.0, -1.0]


def test_identical_clouds_are_at_distance_zero() -> None:
    assert sliced_wasserstein(A, A) == 0.0
    # the order of the points does not matter (up to the last bit of the projections' dot products)
    assert sliced_wasserstein(A, A[::-1].copy()) == pytest.approx(0.0, abs=1e-15)
    assert sliced_wasserstein(A, np.concatenate([A, A])) == pytest.approx(0.0, abs=1e-12)  # same distribution


def test_a_translated_cloud_is_at_the_mean_projected_shift() -> None:
    d = np.array([0.7, -1.9])
    theta = projection_directions(64, 2, seed=5)
    exact = float(np.mean(np.abs(theta @ d)))  # W₁ of a shifted 1D law is the shift |⟨d, θ⟩|
    assert sliced_wasserstein(A, A + d, projections=64, seed=5) == pytest.approx(exact, rel=1e-12)
    # over many uniform directions E|⟨d, θ⟩| = |d| E|cos φ| = 2|d|/π
    many = sliced_wasserstein(A, A + d, projections=20_000, seed=1)
    assert many == pytest.approx(2 * np.linalg.norm(d) / math.pi, rel=0.01)


def test_two_point_masses() -> None:
    p, q = np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]])
    theta = projection_directions(100, 2, seed=0)
    expected = float(np.mean(np.abs(theta @ (p[0] - q[0]))))
    assert sliced_wasserstein(np.repeat(p, 7, 0), np.repeat(q, 3, 0), projections=100) == pytest.approx(expected)


def test_shift_invariance_symmetry_and_scaling() -> None:
    c = np.array([5.0, -3.0])
    base = sliced_wasserstein(A, B)
    assert base > 0
    assert sliced_wasserstein(A + c, B + c) == pytest.approx(base, rel=1e-12)
    assert sliced_wasserstein(B, A) == pytest.approx(base, rel=1e-12)
    assert sliced_wasserstein(3.0 * A, 3.0 * B) == pytest.approx(3.0 * base, rel=1e-12)
    # rotating both clouds is the same as rotating the directions: equal in expectation
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    assert sliced_wasserstein(A @ rot.T, B @ rot.T, projections=20_000) == pytest.approx(
        sliced_wasserstein(A, B, projections=20_000), rel=0.02)


def test_triangle_inequality() -> None:
    C = rng.uniform(-2, 2, size=(250, 2))
    ab, bc, ac = (sliced_wasserstein(x, y) for x, y in ((A, B), (B, C), (A, C)))
    assert ac <= ab + bc + 1e-12


def test_wasserstein_1d_matches_scipy_for_unequal_sizes() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    r = np.random.default_rng(3)
    for n, m in ((5, 7), (10, 10), (3, 100), (64, 48)):
        a, b = r.normal(size=n), r.normal(1.0, 2.0, size=m)
        assert wasserstein_1d(a, b)[0] == pytest.approx(scipy_stats.wasserstein_distance(a, b), rel=1e-12)


def test_directions_are_unit_vectors_and_seeded() -> None:
    theta = projection_directions(500, 3, seed=2)
    assert np.allclose(np.linalg.norm(theta, axis=1), 1.0)
    assert np.array_equal(theta, projection_directions(500, 3, seed=2))
    assert abs(theta.mean(axis=0)).max() < 0.1  # spread over the sphere
    assert sliced_wasserstein(A, B, seed=1) != sliced_wasserstein(A, B, seed=2)


@pytest.mark.parametrize("a, b, message", [
    (np.zeros((0, 2)), A, "non-empty"),
    (np.zeros(3), A, "non-empty"),
    ([[np.inf, 0.0]], A, "NaN or infinite"),
    (np.zeros((4, 3)), A, "differ in dimension"),
])
def test_bad_clouds_raise_one_sentence(a, b, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        sliced_wasserstein(a, b)
