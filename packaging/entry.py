"""Entry point of the frozen desktop app: the `diffusion-studio` command (no subcommand: the window)."""

import sys

from diffusion_studio.cli import main

if __name__ == "__main__":
    sys.exit(main())
