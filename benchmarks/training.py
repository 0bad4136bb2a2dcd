"""Training throughput: one optimiser step (forward, ε-MSE loss, backward, AdamW) at batch 64,
our U-Net (training.unet, cpu preset) vs the same-size diffusers UNet2DConditionModel, in images/s.

Both get the same inputs: x_t [N, 3, 32, 32], t ∈ 1…T, 384-d token embeddings [N, 32, 384]
with a padding mask, and the target ε; loss = ‖ε − ε̂‖² (Ho et al. 2020, eq. 14).
"""

from __future__ import annotations

from typing import Any

from benchmarks import peers
from benchmarks.timing import median_seconds, ratio

BATCH = 64


def _inputs(batch: int, device: str) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(batch, 32)
    mask[:, :12] = 1.0
    data = {
        "x": torch.randn(batch, 3, 32, 32, generator=g),
        "t": torch.randint(1, 1001, (batch,), generator=g),
        "context": torch.randn(batch, 32, 384, generator=g),
        "mask": mask,
        "eps": torch.randn(batch, 3, 32, 32, generator=g),
    }
    return {k: v.to(device) for k, v in data.items()}


def _step_fn(model: Any, forward: Any, batch: int, device: str) -> Any:
    import torch

    data = _inputs(batch, device)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(forward(data), data["eps"])
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def run(*, batch: int = BATCH, repeat: int, device: str = "cpu") -> dict[str, Any]:
    from diffusion_studio.training.config import preset
    from diffusion_studio.training.unet import UNet

    ours = UNet(preset("cpu").unet)
    forward = lambda d: ours(d["x"], d["t"], d["context"], d["mask"])  # noqa: E731
    ours_s = median_seconds(_step_fn(ours, forward, batch, device), repeat)
    result: dict[str, Any] = {
        "batch": batch, "device": device, "ours_parameters": peers.parameters(ours),
        "ours_images_per_s": batch / ours_s,
        "diffusers_parameters": None, "diffusers_images_per_s": None, "speedup_vs_diffusers": None,
        "diffusers_skipped": peers.diffusers_missing(),
    }
    if result["diffusers_skipped"] is None:
        peer = peers.diffusers_unet()

        def forward(d: dict[str, Any]) -> Any:
            return peer(d["x"], d["t"], encoder_hidden_states=d["context"], encoder_attention_mask=d["mask"]).sample

        peer_s = median_seconds(_step_fn(peer, forward, batch, device), repeat)
        result.update(diffusers_parameters=peers.parameters(peer), diffusers_images_per_s=batch / peer_s,
                      speedup_vs_diffusers=ratio(peer_s, ours_s))
    return result
