"""Image sources for the evaluation: prompts + seeds -> uint8 images.

`PipelineGenerator` runs several different prompts in one batch on a loaded
`inference.pipeline.Pipeline`: the same text encoder, unconditional embedding, guided
ε-function, core `sample()` loop and per-image seeds (`batch_rng`: image i of a batch
started at seed s is what seed s + i gives alone) that `Pipeline.generate` uses for one
prompt — so image i equals `Pipeline.generate(prompt_i, seed=seed_i)` (tested), while
one network call serves the whole batch. With batch size 1 it calls `Pipeline.generate`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np

from diffusion_studio.core.guidance import guided_eps_fn
from diffusion_studio.core.images import to_uint8
from diffusion_studio.core.sampling import sample
from diffusion_studio.errors import ModelOutputError
from diffusion_studio.inference.pipeline import GenerationRequest, Pipeline
from diffusion_studio.inference.seeds import batch_rng


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

    def generate_one(self, prompt: str, seed: int) -> tuple[np.ndarray, float]:
        """One image through `Pipeline.generate` (the app's path): (uint8 [H, W, 3], seconds)."""
        start = time.perf_counter()
        result = self.pipeline.generate(replace(self.request, prompt=prompt, seed=int(seed), batch=1),
                                        should_stop=self.should_stop)
        self.notes.extend(result.notes)
        return result.images[0], time.perf_counter() - start

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        seeds = [int(s) for s in seeds]
        if len(prompts) != len(seeds) or not prompts:
            raise ValueError("PipelineGenerator needs one seed per prompt and at least one prompt.")
        consecutive = all(b - a == 1 for a, b in zip(seeds, seeds[1:]))
        if len(prompts) == 1 or not consecutive:
            return np.stack([self.generate_one(p, s)[0] for p, s in zip(prompts, seeds)])
        b, r = self.pipeline.bundle, self.request
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            context, mask = b.text_encoder.encode(list(prompts))
        self.notes.extend(str(w.message) for w in caught)
        uncond_context, uncond_mask = self.pipeline.unconditional()
        eps_fn = guided_eps_fn(b.denoiser, context, mask, uncond_context, uncond_mask, r.guidance)
        last = None
        for last in sample(eps_fn, b.schedule, (len(prompts), b.channels, b.image_size, b.image_size),
                           sampler=r.sampler, steps=r.steps, rng=batch_rng(seeds[0], len(prompts)),
                           should_stop=self.should_stop):
            pass
        x_0 = np.asarray(last.x_t, dtype=np.float32)
        if not np.all(np.isfinite(x_0)):
            raise ModelOutputError("The model produced NaN or infinite values, so there is no image.")
        return to_uint8(x_0)
