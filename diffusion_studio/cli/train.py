"""`diffusion-studio train` (placeholder until implemented)."""

from __future__ import annotations

import argparse

from diffusion_studio.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("train", help="not implemented yet")


def run(args: argparse.Namespace) -> int:
    raise UsageError("'train' is not implemented yet.")
