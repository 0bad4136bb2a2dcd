"""Evaluate a text-to-image Shapes model: prompts -> images -> pixel analysis -> scores.

`evaluate(generator, prompts)` is the loop (any `ImageGenerator`: a bundle's pipeline,
or an oracle that renders each prompt's spec); `evaluate_bundle(path, ...)` loads a
model bundle and runs it with the given sampler settings. Both return a JSON-ready dict.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from diffusion_studio.errors import UsageError
from diffusion_studio.eval.analyzer import analyze_batch
from diffusion_studio.eval.generation import ImageGenerator, PipelineGenerator
from diffusion_studio.eval.pairs import PairPrompt, analyze_pairs, background_fidelity, draw_pair_prompts, score_pairs
from diffusion_studio.eval.prompts import EvalPrompt, draw_prompts
from diffusion_studio.eval.report import write_png
from diffusion_studio.eval.scoring import correctness, score

REPORT_VERSION = 1
DEFAULT_N = 300
DEFAULT_BATCH = 16
PAIR_SEED_OFFSET = 100_000  # two-object prompt i samples with seed + 100000 + i
ProgressFn = Callable[[int, int, float], None]  # (done, total, seconds so far)


def prepare_image_dir(path: Path | str) -> Path:
    """Create the folder for --save-images (UsageError if it cannot be)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} exists and is not a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"Cannot create the image folder {folder}: {exc.strerror or exc}.") from None
    return folder


def evaluate(
    generator: ImageGenerator,
    prompts: Sequence[EvalPrompt],
    *,
    batch_size: int = DEFAULT_BATCH,
    save_images: Path | str | None = None,
    progress: ProgressFn | None = None,
) -> dict:
    """Generate every prompt (batch_size per call), analyze, score. Returns the report core:
    scores, per-sample records and timing (seconds of generation per image)."""
    if not prompts:
        raise UsageError("There are no prompts to evaluate.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"The batch size must be a positive integer, got {batch_size!r}.")
    folder = prepare_image_dir(save_images) if save_images is not None else None
    analyses, flats, gen_seconds, ana_seconds = [], [], 0.0, 0.0
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        t0 = time.perf_counter()
        images = np.asarray(generator([p.prompt for p in chunk], [p.seed for p in chunk]))
        t1 = time.perf_counter()
        if images.dtype != np.uint8 or images.shape[0] != len(chunk) or images.ndim != 4 or images.shape[-1] != 3:
            raise RuntimeError(f"The generator returned {images.dtype} {images.shape}; expected uint8 RGB images.")
        analyses.extend(analyze_batch(images))
        flats.extend(analyze_pairs(images, max_objects=1))  # background colour and flatness
        t2 = time.perf_counter()
        gen_seconds, ana_seconds = gen_seconds + (t1 - t0), ana_seconds + (t2 - t1)
        if folder is not None:
            for p, image in zip(chunk, images):
                write_png(image, folder / f"{p.index:04d}.png", {"prompt": p.prompt, "seed": str(p.seed)})
        if progress is not None:
            progress(start + len(chunk), len(prompts), gen_seconds + ana_seconds)
    report = score(prompts, analyses)
    report["background_fidelity"] = background_fidelity(flats, [p.named.get("background") for p in prompts])
    report["timing"] = {
        "generate_seconds": gen_seconds,
        "analyze_seconds": ana_seconds,
        "seconds_per_image": gen_seconds / len(prompts),
        "batch_size": batch_size,
    }
    report["samples"] = [
        {
            "index": p.index, "prompt": p.prompt, "seed": p.seed, "named": p.named,
            "detected": a.attributes(), "correct": correctness(p, a),
            "valid": a.valid, "reason": a.reason, "confidence": round(a.confidence, 4),
            "measures": {"fill": round(a.fill, 4), "skew": round(a.skew, 4), "extent": round(a.extent, 4),
                         "center": [round(c, 4) for c in a.center], "contrast": round(a.contrast, 2)},
        }
        for p, a in zip(prompts, analyses)
    ]
    return report


def evaluate_pairs(
    generator: ImageGenerator,
    prompts: Sequence[PairPrompt],
    *,
    batch_size: int = DEFAULT_BATCH,
    save_images: Path | str | None = None,
) -> dict:
    """Generate every two-object prompt, find both objects and score attribute binding."""
    folder = prepare_image_dir(save_images) if save_images is not None else None
    analyses = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        images = np.asarray(generator([p.prompt for p in chunk], [p.seed for p in chunk]))
        analyses.extend(analyze_pairs(images))
        if folder is not None:
            for p, image in zip(chunk, images):
                write_png(image, folder / f"pair-{p.index:04d}.png", {"prompt": p.prompt, "seed": str(p.seed)})
    report = score_pairs(prompts, analyses)
    report["samples"] = [
        {"index": p.index, "prompt": p.prompt, "seed": p.seed,
         "named": [[s.color, s.shape, s.position] for s in (p.pair.first, p.pair.second)],
         "detected": [[o.color, o.shape, o.position] for o in a.objects], "background": a.background}
        for p, a in zip(prompts, analyses)
    ]
    return report


def evaluate_bundle(
    bundle: Path | str | None,
    *,
    n: int = DEFAULT_N,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH,
    two_objects: int = 0,
    latency_images: int = 3,
    save_images: Path | str | None = None,
    progress: ProgressFn | None = None,
) -> dict:
    """Load a bundle (None: the shipped default model) and evaluate it on n prompts drawn with
    `seed` (image i: seed + i).

    `two_objects` > 0 also scores that many two-object prompts over held-out noun pairs
    (seed + 100000 + i). `latency_images` images are also made one at a time through `Pipeline.generate`
    (the app's path, batch 1) to report the time a user waits for one image.
    """
    from diffusion_studio.inference.bundle_loader import load_bundle
    from diffusion_studio.inference.pipeline import Pipeline

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"The seed must be a non-negative integer, got {seed!r}.")
    if isinstance(latency_images, bool) or not isinstance(latency_images, int) or latency_images < 0:
        raise UsageError(f"latency_images must be a non-negative integer, got {latency_images!r}.")
    prompts = draw_prompts(n, seed)
    loaded = load_bundle(bundle, device=device)  # None: the shipped default model
    if loaded.channels != 3:
        raise UsageError(f"The evaluation needs an RGB Shapes model; this bundle has {loaded.channels} channel(s).")
    pipeline = Pipeline(loaded)
    generator = PipelineGenerator(pipeline, sampler, steps, guidance)
    report: dict = {
        "report_version": REPORT_VERSION,
        "bundle": str(loaded.folder),  # resolved
        "model": loaded.name,
        "model_hash": loaded.model_hash,
        "provider": pipeline.provider_info.active,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "settings": {**generator.settings, "seed": seed, "device": device, "n": n},
    }
    report.update(evaluate(generator, prompts, batch_size=batch_size, save_images=save_images, progress=progress))
    if two_objects:
        pair_prompts = draw_pair_prompts(two_objects, seed + PAIR_SEED_OFFSET)
        report["two_objects"] = evaluate_pairs(generator, pair_prompts, batch_size=batch_size,
                                               save_images=save_images)
    latencies = [generator.generate_one(p.prompt, p.seed)[1] for p in prompts[:latency_images]]
    report["timing"]["seconds_per_image_batch1"] = float(np.median(latencies)) if latencies else None
    report["timing"]["latency_images"] = len(latencies)
    report["notes"] = sorted(set(generator.notes))
    return report
