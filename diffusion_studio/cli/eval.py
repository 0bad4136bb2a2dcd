"""`diffusion-studio eval [BUNDLE]`: generate Shapes prompts, score them from the pixels, print a table.

Accuracy per attribute (color, shape always; size, position, background when the prompt
names them) against the quality bar of issue 6, the variety of omitted attributes, and the
time per image. It always writes the full report (with every sample) atomically as JSON: to
`--json OUT.json`, else to `eval-<bundle name>-<sampler>-<steps>.json` in the current folder.
`--summarize A.json B.json` prints a Markdown table comparing such reports (for a model card).
Every path is checked before anything is generated: a bad one is exit 2 and one sentence.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import uuid
from pathlib import Path

from diffusion_studio.core.params import BATCH_MAX, GUIDANCE_MAX, SAMPLER_IDS, check_batch, check_guidance, check_seed
from diffusion_studio.errors import UsageError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score a Shapes model: generate prompts, read the attributes back from the pixels",
        description="Generate images for prompts drawn from the Shapes grammar and score background, "
        "color, shape, size and position from the pixels.",
    )
    p.add_argument("bundle", nargs="?", default=None, metavar="BUNDLE",
                   help="model bundle folder (default: the shipped Shapes model)")
    p.add_argument("--n", type=int, default=300, help="number of prompts (default 300)")
    p.add_argument("--sampler", choices=SAMPLER_IDS, default=None, help="default: the bundle's")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the bundle's)")
    p.add_argument("--guidance", type=float, default=None,
                   help=f"guidance scale w, 0..{GUIDANCE_MAX:g} (default: the bundle's)")
    p.add_argument("--seed", type=int, default=0, help="prompt draw and sampling seed (image i uses seed + i)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--two-objects", type=int, default=0, metavar="N",
                   help="also score N two-object prompts ('a red circle next to a blue square') over noun "
                   "pairs held out of training: both objects, attribute binding, swaps (default 0)")
    p.add_argument("--batch-size", type=int, default=16, help=f"prompts per network call, 1..{BATCH_MAX} (default 16)")
    p.add_argument("--latency-images", type=int, default=3,
                   help="images also timed one at a time through the app's pipeline (default 3)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT.json",
                   help="write the full report here (default: eval-<bundle name>-<sampler>-<steps>.json "
                   "in the current folder)")
    p.add_argument("--save-images", type=Path, default=None, metavar="DIR", help="save every image as a PNG")
    p.add_argument("--summarize", type=Path, nargs="+", default=None, metavar="REPORT.json",
                   help="print a Markdown table comparing reports written with --json (generates nothing)")


def _check_args(args: argparse.Namespace) -> None:
    # --steps is checked against the model's T once the bundle is loaded (core.params.check_steps).
    if args.n < 1:
        raise UsageError(f"--n must be at least 1, got {args.n}.")
    if args.guidance is not None:
        check_guidance(args.guidance)
    check_seed(args.seed)
    check_batch(args.batch_size)
    if not 0 <= args.two_objects <= 100_000:
        raise UsageError(f"--two-objects must be between 0 and 100000, got {args.two_objects}.")
    if args.latency_images < 0:
        raise UsageError(f"--latency-images must be at least 0, got {args.latency_images}.")
    try:
        _check_paths(args)
    except OSError as exc:  # e.g. a name too long for the file system, a parent folder without access
        too_long = exc.errno == errno.ENAMETOOLONG
        reason = "a name in it is too long" if too_long else exc.strerror or type(exc).__name__
        raise UsageError(f"Cannot use the path {exc.filename or 'given'} ({reason}).") from None


def _check_paths(args: argparse.Namespace) -> None:
    from diffusion_studio.cli.generate import check_file_name

    if args.json is not None:
        check_file_name(args.json, "report file")
        if args.json.is_dir():
            raise UsageError(f"--json {args.json} is a folder; give a file name.")
        if not args.json.parent.resolve().is_dir():
            raise UsageError(f"The folder of --json {args.json} does not exist.")
        _check_writable_folder(args.json.parent, f"Cannot write the report {args.json}")
    else:
        cwd = Path.cwd()
        _check_writable_folder(cwd, f"Cannot write the report into the current folder {cwd}", "; pass --json OUT.json")
    if args.save_images is not None and args.save_images.exists() and not args.save_images.is_dir():
        raise UsageError(f"--save-images {args.save_images} exists and is not a folder.")


def _check_writable_folder(folder: Path, failure: str, advice: str = "") -> None:
    """UsageError `failure (reason)advice.` unless a file can be created in `folder` (a probe, removed again)."""
    probe = folder / f".eval-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        raise UsageError(f"{failure} ({exc.strerror or exc}){advice}.") from None
    probe.unlink(missing_ok=True)


def default_json_path(report: dict) -> Path:
    """eval-<bundle name>-<sampler>-<steps>.json in the current folder (name made file-safe)."""
    settings = report["settings"]
    name = re.sub(r"[^\w.+-]+", "_", str(report.get("model") or "model")).strip("._")[:80] or "model"
    return Path(f"eval-{name}-{settings['sampler']}-{settings['steps']}.json")


def _progress(done: int, total: int, seconds: float) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r  {done}/{total} images, {seconds:.1f} s")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from diffusion_studio.eval.evaluate import evaluate_bundle
    from diffusion_studio.eval.report import format_table, markdown_table, read_report, write_json

    if args.summarize is not None:
        if args.bundle is not None:
            raise UsageError("--summarize reads reports and generates nothing; give no BUNDLE with it.")
        print(markdown_table([read_report(path) for path in args.summarize]))
        return 0
    _check_args(args)
    report = evaluate_bundle(
        args.bundle, n=args.n, sampler=args.sampler, steps=args.steps, guidance=args.guidance,
        seed=args.seed, device=args.device, batch_size=args.batch_size, two_objects=args.two_objects,
        latency_images=args.latency_images, save_images=args.save_images, progress=_progress,
    )
    print(format_table(report))
    path = args.json if args.json is not None else default_json_path(report)
    if path.is_dir():
        raise UsageError(f"Cannot write the report to {path}: it is a folder; pass --json OUT.json.")
    write_json(report, path)
    print(f"report written to {path.absolute()}")
    return 0
