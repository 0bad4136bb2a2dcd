"""Command line: `diffusion-studio [generate|train|eval] ...`; no subcommand launches the app.

Each subcommand lives in its own module exposing `add_parser(subparsers)` and
`run(args) -> int`. Exit codes: 0 success, 2 bad input (one line on stderr), 1 a model failure
(NaN output) or an internal error (one line; DIFFUSION_STUDIO_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from diffusion_studio import __version__
from diffusion_studio.errors import Cancelled, ModelOutputError, UsageError

SUBCOMMANDS = ("generate", "train", "eval")
DEBUG_ENV = "DIFFUSION_STUDIO_DEBUG"  # set to 1: unexpected errors end in their traceback


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="diffusion-studio", description="Denoising diffusion studio.")
    parser.add_argument("--version", action="version", version=f"diffusion-studio {__version__}")
    parser.add_argument("--model", help="model bundle folder to open in the app")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"diffusion_studio.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse: --help (0) or bad usage (2)
        return int(exc.code or 0)
    try:
        if args.command is None:
            return gui_main(args.model)
        module = importlib.import_module(f"diffusion_studio.cli.{args.command}")
        return int(module.run(args))
    except UsageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except ModelOutputError as exc:  # the model failed, not the user: exit 1, still one line
        sys.stderr.write(f"error: {_one_line(exc)}\n")
        return 1
    except Cancelled:
        sys.stderr.write("cancelled\n")
        return 130
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line, or the traceback when debugging
        if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
            raise
        sys.stderr.write(f"error: internal error: {type(exc).__name__}: {_one_line(exc)} "
                         f"(run with {DEBUG_ENV}=1 for the traceback)\n")
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def gui_main(model: str | None = None) -> int:
    """Launch the desktop app (imports Qt only here)."""
    from diffusion_studio.ui.app import run_app

    return run_app(model_path=model)
