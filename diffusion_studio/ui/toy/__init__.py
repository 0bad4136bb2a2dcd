"""The 2D diffusion lab: point-cloud datasets, an MLP ε_θ trained in numpy, the image samplers on 2D."""

from diffusion_studio.ui.toy.workspace import ToyLabWorkspace

__all__ = ["ToyLabWorkspace"]
