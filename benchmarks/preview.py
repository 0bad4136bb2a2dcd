"""Preview overhead: one image with a live preview of every step (what the Generate tab's worker
does: a Frame of x_t, x̂_0, ε̂ per step, rendered side by side) vs the last step only."""

from __future__ import annotations

from typing import Any

from benchmarks import peers
from benchmarks.timing import median_seconds


def run(bundle: Any, *, repeat: int, steps: int = 20) -> dict[str, Any]:
    from diffusion_studio.inference.pipeline import GenerationRequest, Pipeline
    from diffusion_studio.ui.generate.previews import PreviewMode, frame_from_step, render

    pipeline = Pipeline(bundle)
    frames = []

    def on_step(step: Any) -> None:
        frames.append(render(frame_from_step(step), PreviewMode.SIDE))

    def generate(preview: bool) -> None:
        request = GenerationRequest(prompt=peers.PROMPT, sampler="dpmpp-2m", steps=steps, seed=0, preview=preview)
        pipeline.generate(request, on_step=on_step)

    off = median_seconds(lambda: generate(False), repeat)
    on = median_seconds(lambda: generate(True), repeat)
    return {"steps": steps, "preview_off_s": off, "preview_on_s": on,
            "overhead_s": on - off, "overhead_fraction": (on - off) / off if off > 0 else None}
