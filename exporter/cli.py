"""Command line of the exporter.

    python -m exporter RUN_DIR_OR_CHECKPOINT --out BUNDLE [--weights ema|raw] [--opset N]
        [--fp16] [--no-validate] [--force] [--name NAME] [--guidance W] [--steps N] [--sampler S]
        [--include-text-encoder]
    python -m exporter inspect BUNDLE
    python -m exporter text-encoder --out DIR
    python -m exporter diffusers SRC --out BUNDLE [--name NAME] [--fp16] [--force] [--no-validate] [--opset N]

Exit codes: 0 success; 2 bad input (one line on stderr, nothing written); 1 internal error
(one line; the traceback with DIFFUSION_STUDIO_DEBUG=1) or failed parity (the bundle is not written).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from diffusion_studio.core.params import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, GUIDANCE_MAX, SAMPLER_IDS
from diffusion_studio.errors import ModelOutputError, UsageError

DEBUG_ENV = "DIFFUSION_STUDIO_DEBUG"  # as diffusion_studio.cli: set to 1 for the traceback of an internal error

USAGE_EXPORT = "python -m exporter RUN_DIR_OR_CHECKPOINT --out BUNDLE [options]"


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors become UsageError (one line, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message[0].upper()}{message[1:]}." if message else "Bad arguments.")


def _export_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m exporter", usage=USAGE_EXPORT,
                description="Export a training run (or one .safetensors checkpoint) to an ONNX model bundle. "
                            "Other commands: 'inspect BUNDLE', 'text-encoder --out DIR'.")
    p.add_argument("source", type=Path, help="training run folder (latest checkpoint) or a .safetensors file")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="EMA (default) or raw weights")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--fp16", action="store_true", help="also write unet.fp16.onnx (fp32 inputs/outputs)")
    p.add_argument("--no-validate", dest="validate", action="store_false",
                   help="skip the PyTorch vs ONNX Runtime parity check")
    p.add_argument("--force", action="store_true", help="replace an existing bundle (after the new one is complete)")
    p.add_argument("--name", help="bundle name in model.json (default: the folder name)")
    p.add_argument("--guidance", type=float,
                   help=f"default guidance scale, 0..{GUIDANCE_MAX:g} (default: the run's, else {DEFAULT_GUIDANCE:g})")
    p.add_argument("--steps", type=int, help=f"default number of sampling steps, 1..T (default {DEFAULT_STEPS})")
    p.add_argument("--sampler", choices=SAMPLER_IDS,
                   help=f"default sampler (default: the run's, else {DEFAULT_SAMPLER.value})")
    p.add_argument("--include-text-encoder", action="store_true",
                   help="copy the shared text encoder (text_encoder.onnx, tokenizer.json) into the bundle, "
                        "so it loads without the app's resources")
    return p


def _inspect_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m exporter inspect", description="Describe a model bundle.")
    p.add_argument("bundle", type=Path)
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    return p


def _diffusers_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m exporter diffusers",
                usage="python -m exporter diffusers SRC --out BUNDLE [options]",
                description="Import a saved diffusers DDPMPipeline / DDIMPipeline folder (or a bare UNet2DModel "
                            "folder) as a model bundle, or a StableDiffusionPipeline folder as a latent bundle "
                            "(CLIP text encoder, U-Net, VAE decoder and encoder, tokenizer).")
    p.add_argument("source", type=Path, help="the pipeline folder (model_index.json, unet/, scheduler/) "
                                             "or a UNet2DModel folder (config.json + weights)")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument("--name", help="bundle name in model.json (default: the folder name)")
    p.add_argument("--fp16", action="store_true", help="also write unet.fp16.onnx (fp32 inputs/outputs)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle (after the new one is complete)")
    p.add_argument("--no-validate", dest="validate", action="store_false",
                   help="skip the diffusers (PyTorch) vs ONNX Runtime parity check")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    return p


def _run_diffusers(argv: Sequence[str]) -> int:
    from exporter.diffusers_import import ImportOptions, import_bundle
    from exporter.parity import format_report

    args = _diffusers_parser().parse_args(list(argv))
    opts = ImportOptions(source=args.source, out=args.out, name=args.name, fp16=args.fp16, force=args.force,
                         validate=args.validate, opset=args.opset)
    result = import_bundle(opts, log=lambda msg: print(msg, flush=True))
    for note in result.notes:
        print(f"note: {note}")
    if result.report is not None:
        print(format_report(result.report))
    spec = result.spec
    dif, co = spec["diffusion"], spec["conditioning"]
    kind = co["kind"] + (f", {co['num_classes']} classes" if co["kind"] == "class" else "")
    if spec.get("latent"):  # a StableDiffusionPipeline (exporter.latent_import)
        la = spec["latent"]
        kind += (f", CLIP {co['max_tokens']} tokens; latent {la['channels']}x{spec['image']['size'] // la['factor']}"
                 f" (factor {la['factor']}, scaling {la['scaling_factor']:g})")
    print(f"wrote {result.bundle} ({', '.join(spec['files'])}; {spec['provenance']['exporter']}, opset "
          f"{spec['unet']['opset']}; T={dif['T']} {dif['schedule']}, {dif['prediction']}, {dif['variance']}; "
          f"conditioning {kind})")
    return 0


def _run_export(argv: Sequence[str]) -> int:
    from exporter.export import ExportOptions, export_bundle
    from exporter.parity import format_report

    args = _export_parser().parse_args(list(argv))
    opts = ExportOptions(source=args.source, out=args.out, weights=args.weights, opset=args.opset,
                         fp16=args.fp16, validate=args.validate, force=args.force, name=args.name,
                         guidance=args.guidance, steps=args.steps, sampler=args.sampler,
                         include_text_encoder=args.include_text_encoder)
    result = export_bundle(opts, log=lambda msg: print(msg, flush=True))
    for note in result.notes:
        print(f"note: {note}")
    if result.report is not None:
        print(format_report(result.report))
    spec = result.spec
    files = ", ".join(spec["files"])
    print(f"wrote {result.bundle} ({files}; {spec['provenance']['exporter']}, opset {spec['unet']['opset']}, "
          f"step {spec['provenance']['step']}, {spec['provenance']['weights']} weights)")
    return 0


def _run_inspect(argv: Sequence[str]) -> int:
    import json

    from exporter.inspect import describe, inspect_bundle

    args = _inspect_parser().parse_args(list(argv))
    facts = inspect_bundle(args.bundle)
    print(json.dumps(facts, indent=2) if args.json else describe(facts))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes as the main CLI: 0 success, 2 bad input (one line), 1 a failed parity check or an
    internal error (one line; DIFFUSION_STUDIO_DEBUG=1 shows the traceback instead)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        sys.stderr.write(f"error: Nothing to export; usage: {USAGE_EXPORT} (or: inspect BUNDLE).\n")
        return 2
    if argv[0] in ("-h", "--help"):
        _export_parser().print_help()
        print("\n  python -m exporter inspect BUNDLE [--json]\n  python -m exporter text-encoder --out DIR"
              "\n  python -m exporter diffusers SRC --out BUNDLE [--name NAME] [--fp16] [--force] [--no-validate] "
              "[--opset N]")
        return 0
    command = argv[0] if argv[0] in ("inspect", "text-encoder", "diffusers") else "export"
    try:
        if command == "text-encoder":
            from exporter import text_encoder

            return int(text_encoder.main(argv[1:]) or 0)
        if command == "inspect":
            if len(argv) > 1 and argv[1] in ("-h", "--help"):
                _inspect_parser().print_help()
                return 0
            return _run_inspect(argv[1:])
        if command == "diffusers":
            if len(argv) > 1 and argv[1] in ("-h", "--help"):
                _diffusers_parser().print_help()
                return 0
            return _run_diffusers(argv[1:])
        return _run_export(argv)
    except UsageError as exc:
        sys.stderr.write(f"error: {_one_line(exc)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; nothing was written\n" if command != "inspect" else "interrupted\n")
        return 130
    except Exception as exc:  # exit 1 with the reason in one line; nothing was written
        from exporter.parity import ParityError

        if isinstance(exc, ParityError):  # the report is the message: several lines on purpose
            sys.stderr.write(f"error: parity check failed, the bundle was not written: {exc}\n")
            return 1
        if isinstance(exc, ModelOutputError):
            sys.stderr.write(f"error: {_one_line(exc)}\n")
            return 1
        if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
            raise
        tail = {"export": "; the bundle was not written", "diffusers": "; the bundle was not written",
                "text-encoder": "; nothing was written"}.get(command, "")
        sys.stderr.write(f"error: internal error: {type(exc).__name__}: {_one_line(exc)}{tail} "
                         f"(run with {DEBUG_ENV}=1 for the traceback)\n")
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
