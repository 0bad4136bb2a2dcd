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
