"""core.latent_preview: the least-squares latent -> RGB map recovers a known affine map exactly."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_studio.core.latent_preview import apply_preview, area_downsample, fit_preview


def test_area_downsample_is_the_block_mean() -> None:
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float64).reshape(2, 1, 4, 4)
    got = area_downsample(x, 2)
    assert got.shape == (2, 1, 2, 2)
    assert got[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)
    assert got[1, 0, 1, 1] == pytest.approx((26 + 27 + 30 + 31) / 4 + 0)  # 16 + (10, 11, 14, 15)
    with pytest.raises(ValueError, match="multiple"):
        area_downsample(np.zeros((1, 1, 5, 4)), 2)


@pytest.mark.parametrize("factor", [1, 2, 8])
def test_fit_recovers_a_known_affine_map(factor: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4))
    b = np.array([0.1, -0.2, 0.3])
    z = rng.standard_normal((5, 4, 3, 3))
    rgb = np.einsum("rc,nchw->nrhw", a, z) + b[None, :, None, None]
    images = np.repeat(np.repeat(rgb, factor, axis=2), factor, axis=3)
    if factor > 1:  # detail inside each block that the area mean removes: the fit must not see it
        detail = rng.standard_normal(images.shape)
        detail -= np.repeat(np.repeat(area_downsample(detail, factor), factor, axis=2), factor, axis=3)
        images = images + detail
    got_a, got_b = fit_preview(z, images, factor)
    np.testing.assert_allclose(got_a, a, atol=1e-10)
    np.testing.assert_allclose(got_b, b, atol=1e-10)
    small = apply_preview(z, got_a, got_b)
    assert small.dtype == np.float32 and small.shape == (5, 3, 3, 3)
    np.testing.assert_allclose(small, np.clip(rgb, -1, 1), atol=1e-5)
    assert small.max() == 1.0 and small.min() == -1.0  # |A z + b| exceeds 1 somewhere: clipped


def test_fit_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="do not match"):
        fit_preview(np.zeros((2, 4, 3, 3)), np.zeros((2, 3, 8, 8)), 2)
