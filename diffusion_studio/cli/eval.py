"""`diffusion-studio eval` (placeholder until implemented)."""

from __future__ import annotations

import argparse

from diffusion_studio.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("eval", help="not implemented yet")


def run(args: argparse.Namespace) -> int:
    raise UsageError("'eval' is not implemented yet.")
