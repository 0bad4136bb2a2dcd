"""Two-object analysis: exact on rendered pairs, swaps caught, background fidelity measured."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from diffusion_studio.core.shape_pairs import HELD_OUT_PAIRS, ShapePair, is_held_out, render_pair
from diffusion_studio.core.shapes import BACKGROUNDS, COLORS
from diffusion_studio.errors import UsageError
from diffusion_studio.eval.pairs import (
    BACKGROUND_TOLERANCE,
    analyze_pairs,
    background_error,
    background_fidelity,
    draw_pair_prompts,
    pair_correctness,
    score_pairs,
)


def test_rendered_pairs_read_back_exactly():
    prompts = draw_pair_prompts(120, seed=3)
    images = np.stack([render_pair(p.pair) for p in prompts])
    analyses = analyze_pairs(images)
    report = score_pairs(prompts, analyses)
    assert report["bound_rate"] == 1.0 and report["swapped_rate"] == 0.0 and report["pass"]
    assert report["objects_found"] == {"2": 120}
    fid = report["background_fidelity"]
    assert fid["within_tolerance"] == 1.0 and fid["error_p95"] <= 12  # the data's own jitter
    assert fid["noise_rms_p95"] < 1.0  # flat backgrounds
    positions = {(p.pair.first.position, p.pair.second.position) for p in prompts}
    for p, a in zip(prompts, analyses):
        read = {(o.color, o.shape): o.position for o in a.objects}
        for s in (p.pair.first, p.pair.second):
            assert read[(s.color, s.shape)] == s.position
    assert len(positions) > 6


def test_prompts_use_held_out_pairs_only():
    for p in draw_pair_prompts(200, seed=0):
        a, b = p.pair.first, p.pair.second
        assert is_held_out((a.color, a.shape), (b.color, b.shape))
        assert p.prompt.index(f"{a.color} {a.shape}") < p.prompt.index(f"{b.color} {b.shape}")
    assert len({tuple(sorted(((p.pair.first.color, p.pair.first.shape), (p.pair.second.color, p.pair.second.shape))))
                for p in draw_pair_prompts(400)}) == len(HELD_OUT_PAIRS)
    with pytest.raises(UsageError):
        draw_pair_prompts(0)


def test_a_color_swap_is_a_failure_and_a_missing_object_too():
    p = draw_pair_prompts(1, seed=11)[0].pair
    a, b = p.first, p.second
    swapped = ShapePair(replace(a, color=b.color, color_rgb=COLORS[b.color]),
                        replace(b, color=a.color, color_rgb=COLORS[a.color]))
    got = pair_correctness(p, analyze_pairs(render_pair(swapped)[None])[0])
    assert got["swapped"] and not got["bound"] and not got["both"] and got["shapes"]
    lone = render_pair(ShapePair(a, replace(b, color_rgb=b.background_rgb)))  # b painted as background
    got = pair_correctness(p, analyze_pairs(lone[None])[0])
    assert not got["both"] and not got["bound"] and not got["swapped"]


def test_background_error_and_noise():
    prompts = draw_pair_prompts(2, seed=5)
    pairs = [p.pair for p in prompts]
    named = np.asarray(BACKGROUNDS[pairs[0].background])
    tint = tuple(int(v) for v in np.clip(named + np.where(named > 128, -25, 25) * np.array([1, 0, 0]), 0, 255))
    pairs[0] = ShapePair(replace(pairs[0].first, background_rgb=tint), pairs[0].second)  # off by 25 in red
    images = np.stack([render_pair(p) for p in pairs]).astype(np.int16)
    rng = np.random.default_rng(0)
    images[1] += rng.integers(-10, 11, size=images[1].shape).astype(np.int16)  # noisy flats
    analyses = analyze_pairs(np.clip(images, 0, 255).astype(np.uint8))
    assert background_error(analyses[0], pairs[0].background) == 25.0
    fid = background_fidelity(analyses, [p.background for p in pairs])
    assert fid["within_tolerance"] == 0.5 and not fid["pass"]
    assert analyses[1].background_noise > 4.0 and analyses[0].background_noise < 1.0
    assert BACKGROUND_TOLERANCE == 16.0
