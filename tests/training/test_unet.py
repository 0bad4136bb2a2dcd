"""U-Net: shapes, padding mask honoured, parameter count, FLOP estimate, config validation."""

from __future__ import annotations

import pytest
import torch

from diffusion_studio.errors import UsageError
from diffusion_studio.training.config import preset
from diffusion_studio.training.unet import UNet, UNetConfig, count_parameters, estimate_flops, timestep_embedding

from .conftest import tiny_unet


def _inputs(n: int, size: int, length: int = 32, real: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    t = torch.randint(1, 1001, (n,), generator=g)
    context = torch.randn(n, length, 384, generator=g)
    mask = torch.zeros(n, length)
    mask[:, :real] = 1.0
    return x, t, context, mask


def _randomise(model: torch.nn.Module) -> None:
    """Give the zero-initialised output layers weights, so eps depends on every input."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.05)


def test_output_shape_and_zero_init():
    model = UNet(tiny_unet(16))
    x, t, c, m = _inputs(3, 16)
    eps = model(x, t, c, m)
    assert eps.shape == (3, 3, 16, 16) and eps.dtype == torch.float32
    assert torch.count_nonzero(eps) == 0  # the output conv starts at zero


def test_padding_tokens_do_not_change_the_output():
    model = UNet(tiny_unet(16)).eval()
    _randomise(model)
    x, t, c, m = _inputs(2, 16, real=5)
    noisy = c.clone()
    noisy[:, 5:] = torch.randn_like(noisy[:, 5:]) * 100.0
    with torch.no_grad():
        a, b = model(x, t, c, m), model(x, t, noisy, m)
        real_changed = c.clone()
        real_changed[:, 2] += 1.0
        d = model(x, t, real_changed, m)
    assert torch.equal(a, b)
    assert (a - d).abs().max() > 1e-4  # real tokens do matter


def test_timestep_and_rows_are_independent():
    model = UNet(tiny_unet(16)).eval()
    _randomise(model)
    x, t, c, m = _inputs(4, 16)
    with torch.no_grad():
        full = model(x, t, c, m)
        one = model(x[2:3], t[2:3], c[2:3], m[2:3])
        t2 = t.clone()
        t2[0] = t[0] % 1000 + 1
        moved = model(x, t2, c, m)
    torch.testing.assert_close(full[2:3], one, rtol=1e-5, atol=1e-6)
    assert (full[0] - moved[0]).abs().max() > 1e-5 and torch.equal(full[1:], moved[1:])


def test_timestep_embedding_values():
    e = timestep_embedding(torch.tensor([0, 1]), 8)
    assert torch.allclose(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    assert torch.allclose(e[1], torch.cat([torch.cos(freqs), torch.sin(freqs)]))


def test_default_preset_parameter_count_and_flops():
    cfg = preset("cpu").unet
    model = UNet(cfg)
    params = count_parameters(model)
    assert params == sum(p.numel() for p in model.parameters())
    assert 1_200_000 <= params <= 2_000_000
    flops = estimate_flops(model)
    assert 0.3e9 <= flops <= 0.8e9
    # The stem conv alone: 2 x (32*32 pixels) x (3+2 -> 32 channels, 3x3) multiply-adds.
    stem = 2 * 32 * 32 * 32 * 5 * 9
    assert flops > stem


def test_flops_of_a_single_conv_layer_scale_with_width():
    small, wide = UNet(tiny_unet(16)), UNet(UNetConfig(**{**tiny_unet(16).__dict__, "base_channels": 16}))
    ratio = estimate_flops(wide) / estimate_flops(small)
    assert 2.5 < ratio < 4.0  # convs scale ~quadratically, text/attention terms less


@pytest.mark.parametrize("bad", [
    dict(image_size=30, channel_mults=(1, 2, 2)),
    dict(base_channels=10, groups=4),
    dict(cross_attention_resolutions=(7,)),
    dict(dropout=1.5),
])
def test_bad_configs_raise_usage_error(bad):
    with pytest.raises(UsageError):
        UNet(UNetConfig(**bad))


def test_config_round_trip():
    cfg = preset("gpu").unet
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(UsageError):
        UNetConfig.from_dict({"nonsense": 1})
