import sys

from diffusion_studio.cli import main

sys.exit(main())
