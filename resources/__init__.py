"""Data shipped with Diffusion Studio: the default model bundle and the shared text encoder."""
