"""core.shapes: determinism, pixels that match the caption, parse_caption round trip."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_studio.core.shapes import (
    BACKGROUND_JITTER,
    BACKGROUNDS,
    COLORS,
    MAX_JITTER,
    SIZE_RANGES,
    caption,
    coverage,
    parse_caption,
    random_spec,
    render,
    sample_example,
)
from diffusion_studio.errors import UsageError


def test_same_seed_same_example_and_different_seed_differs():
    a = sample_example(np.random.default_rng(7), 32)
    b = sample_example(np.random.default_rng(7), 32)
    c = sample_example(np.random.default_rng(8), 32)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


def _classify_pixels(image: np.ndarray) -> dict[str, str]:
    """Read the facts back from the pixels alone: palette colours and the moments of the shape mask."""
    img = image.astype(np.float64)
    corner = np.median(np.concatenate([img[0, :2], img[-1, -2:]]), axis=0)
    background = min(BACKGROUNDS, key=lambda k: np.abs(np.asarray(BACKGROUNDS[k]) - corner).sum())
    strong = np.abs(img - corner).sum(-1) > 120
    fg_rgb = np.median(img[strong], axis=0)
    color = min(COLORS, key=lambda k: np.abs(np.asarray(COLORS[k]) - fg_rgb).sum())
    d = fg_rgb - corner
    alpha = np.clip(((img - corner) @ d) / (d @ d), 0.0, 1.0)  # per-pixel coverage
    n = image.shape[0]
    ys, xs = np.mgrid[0:n, 0:n] + 0.5
    area = alpha.sum()
    cx, cy = (alpha * xs).sum() / area, (alpha * ys).sum() / area
    # area / (longest chord)^2: square 1, circle pi/4, triangle (pointing up) 1/2
    chord = max(alpha.sum(axis=0).max(), alpha.sum(axis=1).max())
    fill = area / chord**2
    sy = np.sqrt((alpha * (ys - cy) ** 2).sum() / area)
    skew = (alpha * (ys - cy) ** 3).sum() / area / sy**3  # apex up: mass sits low, skew ~ -0.57
    shape = "triangle" if skew < -0.3 else ("square" if fill > 0.9 else "circle")
    size = "small" if chord / n < 0.43 else "large"
    rows = np.nonzero(alpha.sum(axis=1) > 0.5)[0]
    bx, by = cx / n, ((rows[0] + rows[-1] + 1) / 2 / n if shape == "triangle" else cy / n)
    if abs(bx - 0.5) < 0.08 and abs(by - 0.5) < 0.08:
        position = "center"
    else:
        position = ("top" if by < 0.5 else "bottom") + " " + ("left" if bx < 0.5 else "right")
    return {"color": color, "shape": shape, "size": size, "position": position, "background": background}


@pytest.mark.parametrize("image_size", [32, 64])
def test_every_caption_matches_its_pixels(image_size):
    rng = np.random.default_rng(123)
    for _ in range(300):
        image, text, spec = sample_example(rng, image_size)
        facts = _classify_pixels(image)
        truth = {"color": spec.color, "shape": spec.shape, "size": spec.size,
                 "position": spec.position, "background": spec.background}
        assert facts == truth, (text, facts, truth)
        named = parse_caption(text)
        assert named["color"] == spec.color and named["shape"] == spec.shape
        for key, value in named.items():
            assert truth[key] == value, (text, key)


def test_geometry_inside_image_sizes_distinct_and_jitter_bounded():
    rng = np.random.default_rng(5)
    for _ in range(500):
        spec = random_spec(rng)
        x0, y0, x1, y1 = spec.bbox(32)
        assert x0 >= 0 and y0 >= 0 and x1 <= 32 and y1 <= 32
        lo, hi = SIZE_RANGES[spec.size]
        assert lo <= spec.extent <= hi
        assert np.abs(np.subtract(spec.color_rgb, COLORS[spec.color])).max() <= MAX_JITTER
        assert np.abs(np.subtract(spec.background_rgb, BACKGROUNDS[spec.background])).max() <= BACKGROUND_JITTER
    assert SIZE_RANGES["small"][1] < SIZE_RANGES["large"][0]


def test_render_exact_colors_and_area():
    spec = random_spec(np.random.default_rng(0), color="red", shape="square", size="large",
                       position="center", background="black")
    image = render(spec, 32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert tuple(image[16, 16]) == spec.color_rgb and tuple(image[0, 0]) == spec.background_rgb
    area = coverage(spec, 32).sum()
    assert area == pytest.approx((spec.extent * 32) ** 2, rel=0.02)
    circle = random_spec(np.random.default_rng(0), shape="circle", size="large", position="center")
    assert coverage(circle, 64).sum() == pytest.approx(np.pi * (circle.extent * 32) ** 2, rel=0.02)
    tri = random_spec(np.random.default_rng(0), shape="triangle", size="large", position="center")
    assert coverage(tri, 64).sum() == pytest.approx(0.5 * (tri.extent * 64) ** 2, rel=0.03)


def test_caption_probabilities_and_phrasings():
    rng = np.random.default_rng(1)
    spec = random_spec(rng, color="orange", shape="triangle", size="small", position="top left",
                       background="gray")
    texts = {caption(spec, rng) for _ in range(400)}
    assert len(texts) >= 20  # several phrasings of the same facts
    assert any(t.startswith("an orange") for t in texts)
    assert caption(spec, rng, 0, 0, 0) in {"an orange triangle", "orange triangle"}
    full = [parse_caption(caption(spec, rng, 1, 1, 1)) for _ in range(50)]
    assert all(f == {"color": "orange", "shape": "triangle", "size": "small",
                     "position": "top left", "background": "gray"} for f in full)
    named = [parse_caption(caption(spec, rng)) for _ in range(2000)]
    share = np.mean([["size" in f, "position" in f, "background" in f] for f in named], axis=0)
    assert np.all(np.abs(share - 0.85) < 0.04)


def test_parse_caption_examples_and_bad_attribute():
    assert parse_caption("a large red circle in the top left on a white background") == {
        "color": "red", "shape": "circle", "size": "large", "position": "top left", "background": "white"}
    assert parse_caption("a blue triangle") == {"color": "blue", "shape": "triangle"}
    assert parse_caption("red circle, top left, white background")["position"] == "top left"
    assert parse_caption("a small yellow square in the middle")["position"] == "center"
    assert parse_caption("") == {}
    with pytest.raises(UsageError):
        random_spec(np.random.default_rng(0), color="pink")
