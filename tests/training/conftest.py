"""Training tests: one CPU thread, tiny configs, one shared text encoder."""

from __future__ import annotations

import pytest
import torch

from diffusion_studio.training.config import TrainConfig, preset
from diffusion_studio.training.unet import UNetConfig


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def text_encoder():
    from diffusion_studio.inference.text_encoder import TextEncoder

    return TextEncoder(max_tokens=32, cache_size=4096)


def tiny_unet(image_size: int = 16) -> UNetConfig:
    return UNetConfig(image_size=image_size, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                      attention_resolutions=(image_size // 2,), cross_attention_resolutions=(image_size // 2,),
                      num_heads=2, groups=4)


def tiny_config(**overrides) -> TrainConfig:
    """cpu-quick at 16x16 with an 8-channel U-Net: a step takes milliseconds."""
    cfg = preset("cpu-quick").with_image_size(16)
    fields = dict(unet=tiny_unet(16), batch_size=4, steps=20, warmup_steps=5, checkpoint_every=10,
                  sample_every=0, num_threads=1, log_every=5, sample_steps=2, sample_prompts=("a red circle",))
    fields.update(overrides)
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg


def export_and_generate(run_dir, bundle):
    """Export a 16×16 run with the parity check (ONNX Runtime against PyTorch), assert it passed,
    and return one generated image (uint8 [16, 16, 3]) from the bundle."""
    import json

    import numpy as np

    from diffusion_studio.inference.latent import make_pipeline, open_model
    from diffusion_studio.inference.pipeline import GenerationRequest
    from exporter.cli import main as export_main

    assert export_main([str(run_dir), "--out", str(bundle)]) == 0
    assert json.loads((bundle / "validation.json").read_text())["passed"] is True
    image = make_pipeline(open_model(bundle)).generate(
        GenerationRequest(prompt="a red circle", steps=4, seed=0)).images[0]
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    return image
