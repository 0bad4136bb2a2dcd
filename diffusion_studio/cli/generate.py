"""`diffusion-studio generate [PROMPT] ...`: PNG(s) with generation metadata, on ONNX Runtime.

PROMPT is needed by text-conditioned bundles only: an unconditional bundle (an imported
diffusers DDPMPipeline) generates with no arguments, a class-conditional one takes
`--class LABEL` (an index or one of its class names). A prompt given to either is ignored
with a note; `--class` given to another kind is refused with one sentence (exit 2).

Sampler, steps and guidance default to the bundle's `sampler_defaults`; the model defaults
to the bundled one. The output path is checked before anything is generated, and PNGs are
written atomically. A batch of N writes OUT-0.png … OUT-{N-1}.png (image i has seed + i)
or, with --grid, one grid image. The sampler options (--eta, --ddpm-variance, --no-clip) and
img2img (--init-image, --strength) go into the PNG metadata with everything else.
When the prompt is empty (an unconditional image) or holds words the bundle's `vocabulary`
does not list, a `note:` line on stderr says so (`core.vocabulary.prompt_note`, as in the GUI).

A prompt whose bytes are not valid UTF-8 (a terminal in another encoding) is not refused:
each undecodable byte becomes U+FFFD, a note on stderr says so, and the metadata records the
text the model saw. Refusing would leave the user with nothing to fix but their terminal.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from diffusion_studio.core.params import (
    BATCH_MAX,
    DDPM_VARIANCES,
    ETA_MAX,
    GUIDANCE_MAX,
    SAMPLER_IDS,
    DdpmVariance,
    check_batch,
    check_eta,
    check_strength,
)
from diffusion_studio.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

DEFAULT_OUTPUT = "generated.png"
DEFAULT_STRENGTH = 0.75  # img2img default when --init-image is given without --strength
TEMP_SUFFIX_RESERVE = 16  # bytes of a file name kept for the atomic write's ".tmp-<pid>" suffix
NAME_MAX_FALLBACK = 255  # ext4, APFS, NTFS; used where os.pathconf cannot tell


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate image(s) from a prompt (or a class, or nothing) and write PNG(s) with metadata",
        description="Generate images with an ONNX model bundle: from a text prompt, a class label "
                    "(--class) or unconditionally, as the bundle's conditioning says.",
    )
    p.add_argument("prompt", nargs="?", default=None,
                   help="what to draw, for text-conditioned models (any length; long prompts are truncated by "
                   "the tokenizer; bytes that are not valid UTF-8 are replaced with U+FFFD, with a note)")
    p.add_argument("--class", dest="class_label", metavar="LABEL",
                   help="the class of a class-conditional model: an index 0..N-1 or one of its class names")
    p.add_argument("--negative", default="", metavar="TEXT",
                   help="negative prompt (replaces the unconditional prompt; invalid UTF-8 as for PROMPT)")
    p.add_argument("--model", metavar="BUNDLE", help="model bundle folder, or a latent bundle / Optimum ONNX "
                   "folder (Stable-Diffusion family); default: the bundled model")
    p.add_argument("--width", type=int, metavar="W", help="image width in pixels (latent models: a multiple of "
                   "the VAE factor; pixel bundles: only their own size)")
    p.add_argument("--height", type=int, metavar="H", help="image height in pixels (as --width)")
    p.add_argument("--sampler", choices=SAMPLER_IDS, help="default: the bundle's")
    p.add_argument("--steps", type=int, metavar="N", help="sampler steps, 1..T (default: the bundle's)")
    p.add_argument("--guidance", type=float, metavar="W",
                   help=f"classifier-free guidance scale, 0..{GUIDANCE_MAX:g} (default: the bundle's)")
    p.add_argument("--seed", type=int, metavar="N", help="noise seed (default: random, printed and stored)")
    p.add_argument("--batch", type=int, default=1, metavar="N",
                   help=f"images to generate, 1..{BATCH_MAX} (seeds seed..seed+N-1)")
    p.add_argument("--grid", action="store_true", help="write a batch as one grid image")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="execution provider")
    p.add_argument("--eta", type=float, default=0.0, metavar="F",
                   help=f"DDIM η in [0, {ETA_MAX:g}]: 0 deterministic (default), 1 DDPM-like noise (ddim sampler only)")
    p.add_argument("--ddpm-variance", choices=DDPM_VARIANCES, default=None,
                   help="σ_t² of the ddpm sampler: β_t or the posterior's β̃_t (default: the model's, "
                   f"{DdpmVariance.BETA.value} unless it was trained with β̃_t)")
    p.add_argument("--no-clip", dest="clip_x0", action="store_false", default=None,
                   help="do not clip the predicted x̂_0 to [-1, 1] at each step (default: the model's "
                   "clip_sample, on for our own models)")
    p.add_argument("--init-image", type=Path, metavar="PATH",
                   help="img2img: start from this PNG/JPG (resized and center-cropped to the model's size)")
    p.add_argument("--strength", type=float, metavar="S",
                   help=f"img2img strength in (0, 1]: how much of the image is redrawn (default {DEFAULT_STRENGTH})")
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT, metavar="OUT.png", help=f"default: {DEFAULT_OUTPUT}")


def output_paths(output: Path, batch: int, grid: bool) -> list[Path]:
    """OUT.png for one image or a grid; OUT-0.png, OUT-1.png, … for a batch."""
    if batch == 1 or grid:
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(batch)]


def _name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system of `folder` takes."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or the folder is missing
        return NAME_MAX_FALLBACK


def check_file_name(path: Path, what: str = "output file") -> None:
    """UsageError if the name of `path`, with room for a temp suffix, is too long for its folder."""
    size = len(os.fsencode(path.name))
    limit = _name_max(path.parent) - TEMP_SUFFIX_RESERVE
    if size > limit:
        raise UsageError(f"The {what} name {path.name[:20]}… is {size} bytes long; use at most {limit}.")


def check_writable(paths: list[Path]) -> None:
    """UsageError unless every path can be written; probes the folder with a temp file, leaves nothing."""
    output = paths[0]
    if output.suffix.lower() != ".png":
        raise UsageError(f"The output file must end in .png, got {str(output)!r}.")
    check_file_name(max(paths, key=lambda path: len(os.fsencode(path.name))))
    try:
        _check_writable(paths)
    except OSError as exc:  # e.g. ENAMETOOLONG for a folder name, EACCES on a parent folder
        too_long = exc.errno == errno.ENAMETOOLONG
        reason = "a name in it is too long" if too_long else exc.strerror or type(exc).__name__
        raise UsageError(f"Cannot use the output path {output} ({reason}).") from None


def _check_writable(paths: list[Path]) -> None:
    output = paths[0]
    for path in paths:
        if path.is_dir():
            raise UsageError(f"The output {path} is a folder; give a file name ending in .png.")
    folder = output.parent
    if not folder.exists():
        raise UsageError(f"The output folder {folder} does not exist.")
    if not folder.is_dir():
        raise UsageError(f"The output's parent {folder} is not a folder.")
    probe = folder / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
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


def open_init_image(path: Path) -> Image.Image:
    """The image file decoded by Pillow (EXIF rotation applied); UsageError if it is not an image.

    A very large photo is accepted (it is scaled down to the model's size); one beyond Pillow's
    decompression-bomb limit is refused with a sentence (see `core.png_meta.read_image`).
    """
    from diffusion_studio.core.png_meta import read_image

    return read_image(path, "The init image")


def init_image_array(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """Center-crop, resize and scale to the model: `core.images.init_image_array` (the GUI's too)."""
    from diffusion_studio.core import images

    return images.init_image_array(image, size, channels)


def _check_img2img(args: argparse.Namespace) -> float:
    """The strength to use (1.0 without --init-image); UsageError for a bad combination."""
    if args.init_image is None:
        if args.strength is not None:
            raise UsageError("--strength needs --init-image (the image to start from).")
        return 1.0
    return check_strength(DEFAULT_STRENGTH if args.strength is None else args.strength)


def _say(line: str, stream: TextIO | None = None) -> None:
    print(line, file=stream or sys.stdout, flush=True)


def run(args: argparse.Namespace) -> int:
    # Heavy imports here so `diffusion-studio --help` stays fast.
    from diffusion_studio.core.bundle import ConditioningKind
    from diffusion_studio.core.images import make_grid
    from diffusion_studio.core.png_meta import write_png
    from diffusion_studio.core.vocabulary import prompt_note
    from diffusion_studio.inference.latent import LatentModel, check_pixel_size, latent_init_image, open_model
    from diffusion_studio.inference.latent import make_pipeline as pipeline_for
    from diffusion_studio.inference.pipeline import GenerationRequest
    from diffusion_studio.inference.text_encoder import replace_undecodable

    check_batch(args.batch)  # before the model loads: it decides the file names
    paths = output_paths(Path(args.output), args.batch, args.grid)
    check_writable(paths)
    check_eta(args.eta)
    strength = _check_img2img(args)
    init_file = open_init_image(args.init_image) if args.init_image is not None else None

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = open_model(args.model, device=args.device)  # a LatentModel for SD-family folders
    for warning in caught:
        _say(f"warning: {warning.message}", sys.stderr)

    latent = isinstance(bundle, LatentModel)
    if not latent:
        check_pixel_size(bundle, args.width, args.height)
    pipeline = pipeline_for(bundle)
    text = bundle.conditioning_kind is ConditioningKind.TEXT
    if text and args.prompt is None:
        raise UsageError(f"The model {bundle.name} is text-conditioned: give a PROMPT (\"\" for an "
                         "unconditional image).")
    pipeline.class_index(args.class_label)  # a label this model cannot take: one sentence, before any work
    if latent:
        init = None if init_file is None else latent_init_image(init_file, *pipeline.size_of(
            GenerationRequest(width=args.width, height=args.height)))
    else:
        init = None if init_file is None else init_image_array(init_file, bundle.image_size, bundle.channels)
    prompt, bad_in_prompt = replace_undecodable(args.prompt or "")  # bytes of argv that are not UTF-8
    negative, bad_in_negative = replace_undecodable(args.negative)
    request = GenerationRequest(
        prompt=prompt,
        negative_prompt=negative,
        sampler=args.sampler,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        batch=args.batch,
        preview=False,
        init_image=init,
        strength=strength,
        eta=args.eta,
        ddpm_variance=args.ddpm_variance,
        clip_x0=args.clip_x0,
        class_label=args.class_label,
        width=args.width,
        height=args.height,
    )
    if latent and not pipeline.provider_info.on_cuda:  # a CPU run of a big U-Net: say how long, before it starts
        seconds = pipeline.estimate_seconds(request)
        if seconds > 2.0:
            _say(f"note: this should take about {seconds:.0f} s on the CPU (the U-Net's FLOPs at this size "
                 "over the measured FLOP rate).", sys.stderr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pipeline.generate(request)
    request = result.request  # resolved: the bundle's defaults and the seed filled in
    for label, count in (("prompt", bad_in_prompt), ("negative prompt", bad_in_negative)):
        if count:  # said only after the run: an error stays the only line
            _say(f"note: the {label} is not valid UTF-8; {count} undecodable byte{'s' if count > 1 else ''} "
                 "became U+FFFD (\ufffd).", sys.stderr)
    for note in result.notes:
        _say(f"note: {note}", sys.stderr)
    # the GUI's prompt hint, the same sentence (a model without text has the pipeline's note instead)
    vocabulary_note = prompt_note(prompt, bundle.vocabulary) if text else None
    if vocabulary_note:
        _say(f"note: {vocabulary_note}", sys.stderr)
    for warning in caught:
        _say(f"warning: {warning.message}", sys.stderr)
    if args.init_image is not None:  # the pipeline knows the pixels, the CLI the file they came from
        for meta in result.metadata:
            meta["init_image"] = str(args.init_image)

    if args.grid and args.batch > 1:
        seeds = f"{request.seed}..{request.seed + args.batch - 1}"
        grid_meta = {**result.metadata[0], "grid": f"{args.batch} images, seeds {seeds}"}
        write_png(paths[0], make_grid(result.images), grid_meta)
    else:
        for path, image, meta in zip(paths, result.images, result.metadata):
            write_png(path, image, meta)

    info = result.provider
    for path in paths:
        _say(f"wrote {path}")
    img2img = f", img2img strength {request.strength:g}" if init is not None else ""
    if text:
        condition = f"guidance {request.guidance:g}"
    elif request.class_label is not None:
        index = int(request.class_label)
        name = bundle.class_names[index] if bundle.class_names else None
        condition = f"class {index}" + (f" ({name})" if name else "")
    else:
        condition = "unconditional"
    _say(f"model: {bundle.name} ({bundle.model_hash}), seed {request.seed}, {request.sampler}, "
         f"{request.steps} steps, {condition}{img2img}")
    _say(f"provider: {info.describe()}")
    _say(f"time: {result.seconds:.2f} s ({result.steps_per_s:.1f} steps/s)")
    return 0
