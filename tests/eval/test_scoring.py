"""Scoring wiring: an oracle generator (the dataset's own rendering of each prompt's spec) scores
~100%; hand-built analyses give the exact counts; entropy and the quality bar behave."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from diffusion_studio.core import shapes
from diffusion_studio.errors import UsageError
from diffusion_studio.eval.analyzer import analyze
from diffusion_studio.eval.evaluate import evaluate
from diffusion_studio.eval.prompts import OPTIONAL, draw_prompts
from diffusion_studio.eval.report import format_table
from diffusion_studio.eval.scoring import QUALITY_BAR, normalized_entropy, score


class Oracle:
    """Renders the spec each prompt was written from (looked up by its seed)."""

    def __init__(self, prompts, size: int = 32) -> None:
        self.by_seed = {p.seed: p for p in prompts}
        self.size = size
        self.calls: list[int] = []

    def __call__(self, texts, seeds):
        self.calls.append(len(texts))
        out = []
        for text, seed in zip(texts, seeds):
            p = self.by_seed[seed]
            assert p.prompt == text  # the loop hands each prompt over with its own seed
            out.append(shapes.render(p.spec, self.size))
        return np.stack(out)


def test_draw_prompts_is_seeded_and_names_color_and_shape_always():
    a, b, c = draw_prompts(50, seed=3), draw_prompts(50, seed=3), draw_prompts(50, seed=4)
    assert [p.prompt for p in a] == [p.prompt for p in b]
    assert [p.prompt for p in a] != [p.prompt for p in c]
    assert [p.seed for p in a] == list(range(3, 53))
    for p in a:
        assert p.named["color"] == p.spec.color and p.named["shape"] == p.spec.shape
        assert set(p.named) - {"color", "shape"} <= set(OPTIONAL)
        assert p.named == shapes.parse_caption(p.prompt)
    every = draw_prompts(20, p_named=1.0)
    assert all(len(p.named) == 5 for p in every)
    bare = draw_prompts(20, p_named=0.0)
    assert all(set(p.named) == {"color", "shape"} and p.omitted() == OPTIONAL for p in bare)


@pytest.mark.parametrize("n,p_named", [(0, 0.5), (10, 1.5)])
def test_draw_prompts_rejects_bad_input(n, p_named):
    with pytest.raises(UsageError):
        draw_prompts(n, p_named=p_named)


def test_oracle_generator_scores_every_attribute_near_100_percent():
    prompts = draw_prompts(240, seed=11, p_named=0.7)
    oracle = Oracle(prompts)
    report = evaluate(oracle, prompts, batch_size=16)
    assert oracle.calls == [16] * 15
    assert report["n"] == 240 and report["valid_share"] == 1.0
    for attr, row in report["attributes"].items():
        assert row["accuracy"] >= 0.99, (attr, row)
        assert row["pass"] and row["bar"] == QUALITY_BAR[attr]
        named = sum(attr in p.named for p in prompts)
        assert row["scored"] == named
        # confusion rows sum to the number of prompts naming each value
        for value, got in row["confusion"].items():
            assert sum(got.values()) == sum(p.named.get(attr) == value for p in prompts)
    assert report["attributes"]["color"]["scored"] == 240  # color and shape: every prompt
    assert report["passed"] and report["variety_passed"]
    # omitted attributes come out as the dataset draws them: uniform, so entropy near 1
    for attr in OPTIONAL:
        row = report["variety"][attr]
        assert row["omitted"] == sum(attr not in p.named for p in prompts) >= 40
        assert row["normalized_entropy"] > 0.85 and row["pass"]
        assert sum(row["counts"].values()) == row["found"] == row["omitted"]
    sample = report["samples"][0]
    assert sample["prompt"] == prompts[0].prompt and sample["seed"] == 11
    assert all(sample["correct"].values()) and set(sample["correct"]) == set(prompts[0].named)
    assert report["timing"]["seconds_per_image"] > 0
    table = format_table(report)
    assert "FAIL" not in table and table.count("pass") == 10  # 5 attributes, 3 varieties, size balance, background
    assert "size omitted: small" in table and "background fidelity (single objects): 100.0% within 16" in table


def test_a_generator_that_ignores_the_prompt_fails_the_bar():
    prompts = draw_prompts(60, seed=5)
    fixed = shapes.render(shapes.ShapeSpec("red", "circle", "large", "center", "white", 0.5, 0.5, 0.55,
                                           shapes.COLORS["red"], shapes.BACKGROUNDS["white"]))

    def always_the_same(texts, seeds):
        return np.stack([fixed] * len(texts))

    report = evaluate(always_the_same, prompts, batch_size=7)
    color = report["attributes"]["color"]
    assert color["correct"] == sum(p.spec.color == "red" for p in prompts)
    assert color["confusion"]["blue"] == {"red": sum(p.spec.color == "blue" for p in prompts)}
    assert not report["passed"]
    for attr in OPTIONAL:  # one value only: zero variety
        row = report["variety"][attr]
        assert row["normalized_entropy"] == 0.0 and row["top_share"] in (1.0, None)


def test_blank_images_count_as_wrong_and_show_as_none():
    prompts = draw_prompts(12, seed=2, p_named=1.0)
    blank = np.full((32, 32, 3), 245, np.uint8)
    report = evaluate(lambda t, s: np.stack([blank] * len(t)), prompts, batch_size=5)
    assert report["valid_share"] == 0.0
    for attr in ("color", "shape", "size", "position"):
        assert report["attributes"][attr]["correct"] == 0
        assert sum(r.get("none", 0) for r in report["attributes"][attr]["confusion"].values()) == 12
    # the background is still read from a blank image
    assert report["attributes"]["background"]["correct"] == sum(p.spec.background == "white" for p in prompts)


def test_score_counts_by_hand():
    prompts = draw_prompts(4, seed=0, p_named=1.0)
    analyses = [analyze(shapes.render(p.spec)) for p in prompts]
    wrong = analyses[1]
    other = next(c for c in shapes.COLORS if c != wrong.color)
    analyses[1] = replace(wrong, color=other)
    out = score(prompts, analyses)
    assert out["attributes"]["color"]["correct"] == 3 and out["attributes"]["color"]["accuracy"] == 0.75
    assert out["attributes"]["shape"]["accuracy"] == 1.0
    assert not out["attributes"]["color"]["pass"]
    with pytest.raises(ValueError):
        score(prompts, analyses[:3])


def test_normalized_entropy_closed_forms():
    assert normalized_entropy({"a": 5, "b": 5}, 2) == pytest.approx(1.0)
    assert normalized_entropy({"a": 3}, 5) == 0.0
    assert normalized_entropy({}, 3) == 0.0
    assert normalized_entropy({"a": 1, "b": 1}, 4) == pytest.approx(math.log(2) / math.log(4))
    p = np.array([0.7, 0.2, 0.1])
    counts = {"x": 70, "y": 20, "z": 10}
    assert normalized_entropy(counts, 3) == pytest.approx(-(p * np.log(p)).sum() / math.log(3))


def test_evaluate_rejects_bad_input():
    prompts = draw_prompts(3)
    with pytest.raises(UsageError):
        evaluate(Oracle(prompts), [], batch_size=2)
    with pytest.raises(UsageError):
        evaluate(Oracle(prompts), prompts, batch_size=0)
