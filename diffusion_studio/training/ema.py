"""Exponential moving average of the weights (the exporter ships the EMA weights by default)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay_at(updates: int, decay: float) -> float:
    """Warmed-up decay: min(decay, (1 + n) / (10 + n)) after n updates, so early weights fade fast."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class EMA:
    """A frozen copy of the model whose floating-point state follows θ_ema ← d·θ_ema + (1−d)·θ."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, updates: int) -> None:
        """Blend in the current weights; `updates` is how many updates happened before this one."""
        d = ema_decay_at(updates, self.decay)
        src = model.state_dict()
        for name, shadow in self.model.state_dict().items():
            if shadow.is_floating_point():
                shadow.lerp_(src[name].detach().to(shadow.dtype), 1.0 - d)
            else:
                shadow.copy_(src[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
