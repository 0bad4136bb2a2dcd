"""`diffusion-studio generate PROMPT ...`: text -> PNG(s) with generation metadata, on ONNX Runtime.

Sampler, steps and guidance default to the bundle's `sampler_defaults`; the model defaults
to the bundled one. The output path is checked before anything is generated, and PNGs are
written atomically. A batch of N writes OUT-0.png … OUT-{N-1}.png (image i has seed + i)
or, with --grid, one grid image.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
import warnings
from pathlib import Path
from typing import TextIO

from diffusion_studio.errors import UsageError

DEFAULT_OUTPUT = "generated.png"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate image(s) from a prompt and write PNG(s) with metadata",
        description="Generate images from a text prompt with an ONNX model bundle.",
    )
    p.add_argument("prompt", help="what to draw (any length; long prompts are truncated by the tokenizer)")
    p.add_argument("--negative", default="", metavar="TEXT", help="negative prompt (replaces the unconditional prompt)")
    p.add_argument("--model", metavar="BUNDLE", help="model bundle folder (default: the bundled model)")
    p.add_argument("--sampler", choices=("ddpm", "ddim", "dpmpp-2m"), help="default: the bundle's")
    p.add_argument("--steps", type=int, metavar="N", help="sampler steps, 1..T (default: the bundle's)")
    p.add_argument("--guidance", type=float, metavar="W", help="classifier-free guidance scale >= 0")
    p.add_argument("--seed", type=int, metavar="N", help="noise seed (default: random, printed and stored)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="images to generate (seeds seed..seed+N-1)")
    p.add_argument("--grid", action="store_true", help="write a batch as one grid image")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="execution provider")
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT, metavar="OUT.png", help=f"default: {DEFAULT_OUTPUT}")


def output_paths(output: Path, batch: int, grid: bool) -> list[Path]:
    """OUT.png for one image or a grid; OUT-0.png, OUT-1.png, … for a batch."""
    if batch == 1 or grid:
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(batch)]


def check_writable(paths: list[Path]) -> None:
    """UsageError unless every path can be written; probes the folder with a temp file, leaves nothing."""
    output = paths[0]
    if output.suffix.lower() != ".png":
        raise UsageError(f"The output file must end in .png, got {str(output)!r}.")
    for path in paths:
        if path.is_dir():
            raise UsageError(f"The output {path} is a folder; give a file name ending in .png.")
    folder = output.parent
    if not folder.exists():
        raise UsageError(f"The output folder {folder} does not exist.")
    if not folder.is_dir():
        raise UsageError(f"The output's parent {folder} is not a folder.")
    probe = folder / f".{output.name}.probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        raise UsageError(f"Cannot write to the output folder {folder} ({exc.strerror or exc}).") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    for path in paths:
        if path.exists() and not os.access(path, os.W_OK):
            raise UsageError(f"The output file {path} exists and is not writable.")


def _say(line: str, stream: TextIO | None = None) -> None:
    print(line, file=stream or sys.stdout, flush=True)


def run(args: argparse.Namespace) -> int:
    # Heavy imports here so `diffusion-studio --help` stays fast.
    from diffusion_studio.core.images import make_grid
    from diffusion_studio.core.png_meta import write_png
    from diffusion_studio.inference.bundle_loader import load_bundle
    from diffusion_studio.inference.pipeline import BATCH_MAX, GenerationRequest, Pipeline

    if not 1 <= args.batch <= BATCH_MAX:  # before the model loads: it decides the file names
        raise UsageError(f"Batch must be an integer between 1 and {BATCH_MAX}, got {args.batch}.")
    paths = output_paths(Path(args.output), args.batch, args.grid)
    check_writable(paths)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = load_bundle(args.model, device=args.device)
    for warning in caught:
        _say(f"warning: {warning.message}", sys.stderr)

    pipeline = Pipeline(bundle)
    request = pipeline.resolve(
        GenerationRequest(
            prompt=args.prompt,
            negative_prompt=args.negative,
            sampler=args.sampler,
            steps=args.steps,
            guidance=args.guidance,
            seed=args.seed,
            batch=args.batch,
            preview=False,
        )
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pipeline.generate(request)
    for note in result.notes:
        _say(f"note: {note}", sys.stderr)
    for warning in caught:
        _say(f"warning: {warning.message}", sys.stderr)

    if args.grid and args.batch > 1:
        grid_meta = {**result.metadata[0], "grid": f"{args.batch} images, seeds {request.seed}..{request.seed + args.batch - 1}"}
        write_png(paths[0], make_grid(result.images), grid_meta)
    else:
        for path, image, meta in zip(paths, result.images, result.metadata):
            write_png(path, image, meta)

    info = result.provider
    for path in paths:
        _say(f"wrote {path}")
    _say(f"model: {bundle.name} ({bundle.model_hash}), seed {request.seed}, {request.sampler}, "
         f"{request.steps} steps, guidance {request.guidance:g}")
    _say(f"provider: {info.describe()}")
    _say(f"time: {result.seconds:.2f} s ({result.steps_per_s:.1f} steps/s)")
    return 0
