"""The pixel analyzer proves itself on real Shapes images, degraded copies and hand-built edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffusion_studio.core import shapes
from diffusion_studio.errors import UsageError
from diffusion_studio.eval.analyzer import (
    POSITION_ANCHORS,
    SIZE_THRESHOLD,
    analyze,
    analyze_batch,
    largest_component,
)

ATTRS = ("color", "shape", "size", "position", "background")


def _dataset(seeds: tuple[int, ...], per_seed: int, size: int = 32) -> tuple[np.ndarray, list[shapes.ShapeSpec]]:
    specs, images = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for _ in range(per_seed):
            image, _, spec = shapes.sample_example(rng, size)  # jittered colors, nudged positions
            images.append(image)
            specs.append(spec)
    return np.stack(images), specs


def _accuracy(images: np.ndarray, specs: list[shapes.ShapeSpec]) -> dict[str, float]:
    results = analyze_batch(images)
    return {a: float(np.mean([getattr(r, a) == getattr(s, a) for r, s in zip(results, specs)])) for a in ATTRS}


def _blur(images: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur (edges replicated), the softness of generated images."""
    x = images.astype(np.float32)
    k = (0.25, 0.5, 0.25)
    for axis in (1, 2):
        p = np.pad(x, [(0, 0)] + [(1, 1) if a == axis else (0, 0) for a in (1, 2)] + [(0, 0)], mode="edge")
        n = x.shape[axis]
        x = sum(w * np.take(p, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _noisy(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(images + rng.normal(0.0, sigma, images.shape)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def dataset() -> tuple[np.ndarray, list[shapes.ShapeSpec]]:
    return _dataset(seeds=(0, 1, 2, 3), per_seed=300)  # 1200 images


def test_analyzer_reads_dataset_images_at_least_99_percent(dataset):
    images, specs = dataset
    assert len(specs) >= 1000
    # every vocabulary value occurs, so each one is actually tested
    for attr, vocab in (("color", shapes.COLORS), ("shape", shapes.SHAPES), ("size", shapes.SIZES),
                        ("position", shapes.POSITIONS), ("background", shapes.BACKGROUNDS)):
        assert {getattr(s, attr) for s in specs} == set(vocab)
    acc = _accuracy(images, specs)
    print("clean:", acc)
    for attr in ATTRS:
        assert acc[attr] >= 0.99, (attr, acc[attr])


@pytest.mark.parametrize("variant,floor", [
    ("noise sigma 8", 0.99), ("noise sigma 15", 0.96), ("blur 1-2-1", 0.99), ("blur twice", 0.98),
    ("blur + noise 5", 0.98),
])
def test_analyzer_on_noisy_and_blurred_dataset_images(dataset, variant, floor):
    images, specs = dataset
    degraded = {
        "noise sigma 8": lambda: _noisy(images, 8.0),
        "noise sigma 15": lambda: _noisy(images, 15.0),
        "blur 1-2-1": lambda: _blur(images),
        "blur twice": lambda: _blur(_blur(images)),
        "blur + noise 5": lambda: _noisy(_blur(images), 5.0, seed=1),
    }[variant]()
    acc = _accuracy(degraded, specs)
    print(f"{variant}:", {k: round(v, 4) for k, v in acc.items()})
    for attr in ATTRS:
        assert acc[attr] >= floor, (variant, attr, acc[attr])


def test_analyzer_works_at_64_pixels():
    images, specs = _dataset(seeds=(7,), per_seed=60, size=64)
    acc = _accuracy(images, specs)
    assert min(acc.values()) >= 0.98, acc


def _canvas(bg: tuple[int, int, int], size: int = 32) -> np.ndarray:
    return np.broadcast_to(np.asarray(bg, np.uint8), (size, size, 3)).copy()


def test_exact_square_measures_fill_one_and_known_extent_and_centre():
    img = _canvas(shapes.BACKGROUNDS["black"])
    img[4:16, 6:18] = shapes.COLORS["green"]  # 12x12 square, box centre (12, 10) px
    a = analyze(img)
    assert a.valid and a.reason == ""
    assert (a.color, a.shape, a.background, a.position) == ("green", "square", "black", "top left")
    assert a.fill == pytest.approx(1.0, abs=1e-6)
    assert a.extent == pytest.approx(12 / 32, abs=1e-6)
    assert a.size == "small" and 12 / 32 < SIZE_THRESHOLD
    assert a.center == pytest.approx((12 / 32, 10 / 32), abs=1e-6)
    assert a.skew == pytest.approx(0.0, abs=1e-6)
    assert a.area_fraction == pytest.approx(144 / 1024, abs=1e-6)
    assert a.component_share == 1.0


def test_triangle_pointing_up_has_the_closed_form_fill_and_skew():
    spec = shapes.ShapeSpec("blue", "triangle", "large", "center", "white", 0.5, 0.5, 0.6,
                            shapes.COLORS["blue"], shapes.BACKGROUNDS["white"])
    a = analyze(shapes.render(spec, 64))
    assert (a.shape, a.size, a.position) == ("triangle", "large", "center")
    assert a.fill == pytest.approx(0.5, abs=0.04)
    assert a.skew == pytest.approx(-2 * math.sqrt(2) / 5, abs=0.05)  # density ∝ y on [0, h]
    assert a.extent == pytest.approx(0.6, abs=0.02)


def test_circle_fill_is_pi_over_four():
    spec = shapes.ShapeSpec("red", "circle", "large", "center", "gray", 0.5, 0.5, 0.6,
                            shapes.COLORS["red"], shapes.BACKGROUNDS["gray"])
    a = analyze(shapes.render(spec, 64))
    assert a.shape == "circle" and a.fill == pytest.approx(math.pi / 4, abs=0.03)
    assert a.center == pytest.approx((0.5, 0.5), abs=0.01)


def test_blank_and_nearly_blank_images_are_not_valid_but_keep_the_background():
    blank = analyze(_canvas(shapes.BACKGROUNDS["gray"]))
    assert not blank.valid and blank.reason.startswith("no shape")
    assert blank.background == "gray"
    assert (blank.color, blank.shape, blank.size, blank.position) == (None, None, None, None)
    assert blank.confidence == 0.0
    speck = _canvas(shapes.BACKGROUNDS["white"])
    speck[10:12, 10:12] = shapes.COLORS["red"]  # 4 pixels: 0.4% of the image
    a = analyze(speck)
    assert not a.valid and a.reason.startswith("no shape") and a.background == "white"
    dust = _canvas(shapes.BACKGROUNDS["white"])
    dust[2:30:4, 2:30:4] = shapes.COLORS["blue"]  # 49 isolated pixels: 4.8% of the image, no blob
    a = analyze(dust)
    assert not a.valid and "too small" in a.reason and a.contrast > 100


def test_stray_blobs_do_not_move_the_shape():
    img = _canvas(shapes.BACKGROUNDS["white"])
    spec = shapes.ShapeSpec("purple", "circle", "large", "bottom right", "white", 0.64, 0.64, 0.56,
                            shapes.COLORS["purple"], shapes.BACKGROUNDS["white"])
    img = shapes.render(spec, 32)
    img[2:4, 2:4] = shapes.COLORS["purple"]  # a 2x2 speck in the opposite corner
    a = analyze(img)
    assert (a.color, a.shape, a.size, a.position) == ("purple", "circle", "large", "bottom right")
    assert a.component_share < 1.0  # the speck was seen and dropped


def test_background_is_read_when_the_shape_touches_the_border():
    img = _canvas(shapes.BACKGROUNDS["black"])
    img[0:18, 0:18] = shapes.COLORS["yellow"]  # a square in the corner, over two borders
    a = analyze(img)
    assert (a.background, a.color, a.shape, a.position, a.size) == ("black", "yellow", "square", "top left", "large")


def test_salt_and_pepper_noise_keeps_every_attribute():
    spec = shapes.ShapeSpec("orange", "triangle", "small", "top right", "gray", 0.72, 0.27, 0.32,
                            shapes.COLORS["orange"], shapes.BACKGROUNDS["gray"])
    img = shapes.render(spec, 32)
    rng = np.random.default_rng(3)
    flips = rng.random(img.shape[:2]) < 0.02
    img[flips] = rng.integers(0, 256, size=(int(flips.sum()), 3), dtype=np.uint8)
    a = analyze(img)
    assert (a.color, a.shape, a.size, a.position, a.background) == ("orange", "triangle", "small", "top right", "gray")


def test_position_anchors_follow_the_dataset_layout():
    assert POSITION_ANCHORS["center"] == (0.5, 0.5)
    x, y = POSITION_ANCHORS["top left"]
    assert x == y and 0.25 <= x < 0.4  # between the quadrant centre and where large boxes are clamped
    assert POSITION_ANCHORS["bottom right"] == pytest.approx((1 - x, 1 - y))


def test_largest_component_uses_8_connectivity_and_reports_its_share():
    mask = np.zeros((2, 6, 6), bool)
    mask[0, 0, 0] = mask[0, 1, 1] = mask[0, 2, 2] = True  # a diagonal: one 8-connected component
    mask[0, 5, 5] = True
    mask[1, 0:2, 0:2] = True  # 4 pixels
    mask[1, 4:6, 3:6] = True  # 6 pixels: the largest
    keep, share = largest_component(mask)
    assert keep[0].sum() == 3 and keep[0, 2, 2] and not keep[0, 5, 5]
    assert keep[1].sum() == 6 and keep[1, 5, 5] and not keep[1, 0, 0]
    np.testing.assert_allclose(share, [3 / 4, 6 / 10])
    empty_keep, empty_share = largest_component(np.zeros((1, 4, 4), bool))
    assert not empty_keep.any() and empty_share[0] == 0.0


@pytest.mark.parametrize("bad,match", [
    (np.zeros((32, 32, 3), np.float32), "uint8"),
    (np.zeros((32, 32), np.uint8), r"\[H, W, 3\]"),
    (np.zeros((32, 32, 4), np.uint8), r"\[N, H, W, 3\]"),
    (np.zeros((4, 4, 3), np.uint8), "at least 8 pixels"),
])
def test_bad_input_raises_usage_error(bad, match):
    with pytest.raises(UsageError, match=match):
        analyze(bad)
