"""Image sources for the evaluation: prompts + seeds -> uint8 images.

`PipelineGenerator` runs several different prompts in one batch through
`inference.pipeline.Pipeline.generate` (one prompt per image, image i of a batch started
at seed s is what seed s + i gives alone), so image i equals
`Pipeline.generate(prompt_i, seed=seed_i)` (tested) while one network call serves the
whole batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np

from diffusion_studio.inference.pipeline import GenerationRequest, GenerationResult, Pipeline


class ImageGenerator(Protocol):
    """prompts[i] sampled with seeds[i] -> uint8 [N, H, W, 3]."""

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray: ...


class PipelineGenerator:
    """Batches of different prompts through one pipeline with fixed sampler settings."""

    def __init__(self, pipeline: Pipeline, sampler: str | None = None, steps: int | None = None,
                 guidance: float | None = None, should_stop: Callable[[], bool] | None = None) -> None:
        self.pipeline = pipeline
        # Resolve the bundle's defaults and validate once (UsageError for bad settings).
        self.request = pipeline.resolve(GenerationRequest(
            prompt="", sampler=sampler, steps=steps, guidance=guidance, seed=0, preview=False))
        self.should_stop = should_stop
        self.notes: list[str] = []  # e.g. prompts truncated to max_tokens (warnings of the encoder)

    @property
    def settings(self) -> dict:
        r = self.request
        return {"sampler": r.sampler, "steps": r.steps, "guidance": r.guidance}

    def _generate(self, prompts: Sequence[str], seed: int) -> GenerationResult:
        request = replace(self.request, prompt=tuple(prompts), seed=int(seed), batch=len(prompts))
        result = self.pipeline.generate(request, should_stop=self.should_stop)
        self.notes.extend(result.notes)
        return result

    def generate_one(self, prompt: str, seed: int) -> tuple[np.ndarray, float]:
        """One image through `Pipeline.generate` (the app's path): (uint8 [H, W, 3], seconds)."""
        start = time.perf_counter()
        image = self._generate([prompt], seed).images[0]
        return image, time.perf_counter() - start

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        seeds = [int(s) for s in seeds]
        if len(prompts) != len(seeds) or not prompts:
            raise ValueError("PipelineGenerator needs one seed per prompt and at least one prompt.")
        if all(b - a == 1 for a, b in zip(seeds, seeds[1:])):  # image i of a batch has seed s + i
            return self._generate(prompts, seeds[0]).images
        return np.stack([self.generate_one(p, s)[0] for p, s in zip(prompts, seeds)])
