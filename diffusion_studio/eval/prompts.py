"""Evaluation prompts drawn from the Shapes grammar (seeded), with the facts each one names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffusion_studio.core import shapes
from diffusion_studio.errors import UsageError

ATTRIBUTES: tuple[str, ...] = ("color", "shape", "size", "position", "background")
ALWAYS_NAMED: tuple[str, ...] = ("color", "shape")
OPTIONAL: tuple[str, ...] = ("size", "position", "background")
MAX_PROMPTS = 100_000


@dataclass(frozen=True)
class EvalPrompt:
    """One prompt: its text, the spec it was written from, what it names, its sampling seed."""

    index: int
    prompt: str
    spec: shapes.ShapeSpec
    named: dict[str, str]  # attribute -> value, only those the prompt names
    seed: int

    def omitted(self) -> tuple[str, ...]:
        return tuple(a for a in OPTIONAL if a not in self.named)


def draw_prompts(n: int, seed: int = 0, p_named: float = 0.85) -> list[EvalPrompt]:
    """n prompts from `core.shapes` (random spec + caption); each optional attribute is
    named with probability p_named. Image i is sampled with seed `seed + i`."""
    if not 1 <= n <= MAX_PROMPTS:
        raise UsageError(f"The number of prompts must be between 1 and {MAX_PROMPTS}, got {n}.")
    if not 0.0 <= p_named <= 1.0:
        raise UsageError(f"p_named must be between 0 and 1, got {p_named}.")
    rng = np.random.default_rng([seed, 0x5EA1])  # prompt stream, independent of sampling noise
    out: list[EvalPrompt] = []
    for i in range(n):
        spec = shapes.random_spec(rng)
        text = shapes.caption(spec, rng, p_size=p_named, p_position=p_named, p_background=p_named)
        named = shapes.parse_caption(text)
        for attr, value in named.items():  # the grammar and its parser must agree
            if getattr(spec, attr) != value:
                raise RuntimeError(
                    f"parse_caption read {attr}={value!r} from {text!r}, spec says {getattr(spec, attr)!r}."
                )
        out.append(EvalPrompt(i, text, spec, named, seed + i))
    return out
