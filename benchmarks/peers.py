"""The models each table compares: our bundle (ONNX Runtime), our U-Net in torch eager, and a
same-size diffusers UNet2DConditionModel with random weights (speed does not depend on them)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

PROMPT = "a large red circle in the top left on a black background"

# A diffusers UNet2DConditionModel the size of the shipped model (1.97M parameters vs our 1.74M):
# three levels 32/64/64 at 32², one ResNet per level, cross-attention on the two lower levels to
# 384-d MiniLM tokens, 4 heads, GroupNorm(8) — the same layout class as training.unet's cpu preset.
DIFFUSERS_UNET = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 384,
    "attention_head_dim": 4,
    "norm_num_groups": 8,
}


def diffusers_missing() -> str | None:
    """Why the diffusers peer cannot run here, or None."""
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        return f"diffusers/torch not installed ({exc.name}); pip install 'diffusion-studio[test]'"
    return None


def diffusers_unet() -> Any:
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(**DIFFUSERS_UNET)


def parameters(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def load_bundle(device: str = "cpu") -> Any:
    from diffusion_studio.inference.bundle_loader import load_bundle as load

    return load(None, device=device)


def our_torch_unet(bundle: Any | None = None) -> tuple[Any, str]:
    """Our U-Net in torch eager: the bundle's own EMA weights when its training checkpoint is on
    disk, else the cpu preset's architecture with fresh weights. Returns (model, where from)."""
    from diffusion_studio.training.config import preset
    from diffusion_studio.training.unet import UNet

    if bundle is not None:
        checkpoint = bundle.spec.provenance.extra.get("checkpoint")
        path = (bundle.folder / checkpoint).resolve() if checkpoint else None
        if path is not None and path.is_file():
            from diffusion_studio.training.checkpoints import load_checkpoint

            ckpt = load_checkpoint(path)
            model = UNet(ckpt.unet_config)
            model.load_state_dict(ckpt.ema)
            return model.eval(), f"checkpoint {path.name}"
    model = UNet(preset("cpu").unet)
    return model.eval(), "cpu preset, fresh weights (the bundle's checkpoint is not on disk)"


class EagerDenoiser:
    """training.denoiser.TorchDenoiser with the few attributes the Pipeline reads from an OrtDenoiser."""

    def __init__(self, model: Any) -> None:
        import torch

        from diffusion_studio.inference.providers import ProviderInfo
        from diffusion_studio.training.denoiser import TorchDenoiser

        self._call = TorchDenoiser(model)
        self.provider_info = ProviderInfo(requested="cpu", active="torch eager",
                                          fallback_reason=None, onnxruntime_version=f"torch {torch.__version__}")
        self.input_names = ("x", "t", "context", "context_mask")

    def __call__(self, x: Any, t: Any, context: Any = None, context_mask: Any = None, class_labels: Any = None) -> Any:
        return self._call(x, t, context, context_mask)

    def cancel(self) -> None:
        pass


def with_eager_unet(bundle: Any, model: Any) -> Any:
    """The same loaded bundle with our U-Net in torch eager as ε_θ, so the same Pipeline loop runs it."""
    return dataclasses.replace(bundle, denoiser=EagerDenoiser(model))


def bundle_folder() -> Path:
    from diffusion_studio.paths import default_model_dir

    return default_model_dir()
