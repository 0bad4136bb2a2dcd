"""Score analyzed images against their prompts: accuracy per attribute, variety where omitted.

Color and shape are scored on every prompt; size, position and background only on
prompts that name them. An image in which the analyzer finds no shape counts as wrong
for every scored attribute (except background, which is always readable). For prompts
that omit an attribute, the variety of the values produced is reported as the entropy
of their histogram normalised by log K (1 = uniform over the K vocabulary values,
0 = always the same) and the share of the most common value.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from diffusion_studio.core import shapes
from diffusion_studio.eval.analyzer import Analysis
from diffusion_studio.eval.prompts import ALWAYS_NAMED, ATTRIBUTES, OPTIONAL, EvalPrompt

# Issue 6: the quality bar of the shipped model (accuracy per attribute).
QUALITY_BAR: dict[str, float] = {"color": 0.95, "shape": 0.90, "position": 0.90, "size": 0.90, "background": 0.95}
# Omitted attributes must vary: normalised entropy of the produced values at least this.
VARIETY_BAR = 0.5
SIZE_BALANCE = (0.3, 0.7)  # issue 15: with the size omitted, small and large each 30–70%
MIN_VARIETY_SAMPLES = 10  # fewer omitted prompts than this: variety is reported, not judged

VOCABULARY: dict[str, tuple[str, ...]] = {
    "color": tuple(shapes.COLORS), "shape": shapes.SHAPES, "size": shapes.SIZES,
    "position": shapes.POSITIONS, "background": tuple(shapes.BACKGROUNDS),
}
NOT_FOUND = "none"  # confusion-matrix column for images without a detected shape


def _detected(analysis: Analysis, attr: str) -> str | None:
    return analysis.attributes()[attr]


def correctness(prompt: EvalPrompt, analysis: Analysis) -> dict[str, bool]:
    """For each attribute the prompt names (color and shape always): detected == named."""
    return {attr: _detected(analysis, attr) == value for attr, value in prompt.named.items()}


def normalized_entropy(counts: dict[str, int], k: int) -> float:
    """H(p) / log K of a histogram (0 for an empty or single-valued one)."""
    total = sum(counts.values())
    if total == 0 or k < 2:
        return 0.0
    h = -sum(c / total * math.log(c / total) for c in counts.values() if c > 0)
    return max(0.0, h / math.log(k))  # max(): -0.0 for a single value


def score(prompts: Sequence[EvalPrompt], analyses: Sequence[Analysis]) -> dict:
    """Accuracy, confusion and variety per attribute, plus the pass/fail of the quality bar."""
    if len(prompts) != len(analyses):
        raise ValueError(f"{len(prompts)} prompts but {len(analyses)} analyses.")
    attributes: dict[str, dict] = {}
    for attr in ATTRIBUTES:
        confusion: dict[str, Counter] = {v: Counter() for v in VOCABULARY[attr]}
        scored = correct = 0
        for p, a in zip(prompts, analyses):
            if attr not in p.named:
                continue
            got = _detected(a, attr)
            scored += 1
            correct += got == p.named[attr]
            confusion[p.named[attr]][got or NOT_FOUND] += 1
        accuracy = correct / scored if scored else None
        bar = QUALITY_BAR[attr]
        attributes[attr] = {
            "scored": scored, "correct": correct, "accuracy": accuracy, "bar": bar,
            "pass": accuracy is not None and accuracy >= bar,
            "always_named": attr in ALWAYS_NAMED,
            "confusion": {k: dict(v) for k, v in confusion.items()},
        }
    variety: dict[str, dict] = {}
    for attr in OPTIONAL:
        values = [_detected(a, attr) for p, a in zip(prompts, analyses) if attr not in p.named]
        counts = Counter(v for v in values if v is not None)
        found = sum(counts.values())
        entropy = normalized_entropy(counts, len(VOCABULARY[attr]))
        variety[attr] = {
            "omitted": len(values), "found": found, "counts": dict(counts),
            "normalized_entropy": entropy,
            "top_share": max(counts.values()) / found if found else None,
            "bar": VARIETY_BAR,
            "pass": entropy >= VARIETY_BAR if found >= MIN_VARIETY_SAMPLES else None,
        }
    size = variety["size"]
    small = size["counts"].get("small", 0) / size["found"] if size["found"] else None
    size["small_share"] = small
    size["balanced"] = (SIZE_BALANCE[0] <= small <= SIZE_BALANCE[1]
                        if small is not None and size["found"] >= MIN_VARIETY_SAMPLES else None)
    valid = sum(a.valid for a in analyses)
    return {
        "n": len(prompts),
        "valid_share": valid / len(analyses) if analyses else 0.0,
        "attributes": attributes,
        "variety": variety,
        "passed": all(v["pass"] for v in attributes.values()),
        "variety_passed": all(v["pass"] is not False for v in variety.values()),
    }
