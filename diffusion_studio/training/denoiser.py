"""TorchDenoiser: the core `Denoiser` protocol over a PyTorch U-Net (numpy in, numpy out).

Training draws its sample grids through it with `core.sampling_loop.sample()` — the same loop
the app runs over ONNX Runtime — and the exporter uses it for torch-vs-ONNX parity. It returns
the network's raw output: ε̂, or [ε̂, v] (2C channels) for a U-Net with a learned variance, which
the loop splits when told `variance=model_variance(model)`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def model_variance(model: nn.Module) -> str:
    """The sampling loop's `variance` for a U-Net: "learned_range" when it learns Σ_θ
    (Improved DDPM eq. 15), else "fixed_large" (σ_t² = β_t, DDPM's default)."""
    config = getattr(model, "config", None)
    return "learned_range" if getattr(config, "learn_sigma", False) else "fixed_large"


class TorchDenoiser:
    """The raw output of ε_θ(x, t, context, context_mask) as float32 numpy, evaluated without gradients."""

    def __init__(self, model: nn.Module, device: torch.device | str | None = None,
                 bf16: bool = False) -> None:
        self.model = model
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.bf16 = bf16

    def __call__(self, x: np.ndarray, t: np.ndarray, context: np.ndarray,
                 context_mask: np.ndarray) -> np.ndarray:
        dev = self.device
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
                eps = self.model(
                    torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev),
                    torch.from_numpy(np.ascontiguousarray(t, dtype=np.int64)).to(dev),
                    torch.from_numpy(np.ascontiguousarray(context, dtype=np.float32)).to(dev),
                    torch.from_numpy(np.ascontiguousarray(context_mask, dtype=np.float32)).to(dev),
                )
        finally:
            self.model.train(was_training)
        return eps.float().cpu().numpy()
