"""Diffusion Studio: a desktop studio for denoising diffusion probabilistic models."""

__version__ = "0.1.0"
