"""U-Net without the pooled prompt in FiLM (`--no-pooled-text`): the prompt then reaches the net
through cross-attention only; a run may start from a U-Net with it, exports and generates."""

from __future__ import annotations

import json

import pytest
import torch

from diffusion_studio.errors import UsageError
from diffusion_studio.training.checkpoints import load_checkpoint
from diffusion_studio.training.trainer import Trainer
from diffusion_studio.training.unet import UNet, UNetConfig
from tests.training.conftest import export_and_generate, tiny_config, tiny_unet


def _without_pooled_text() -> UNetConfig:
    return UNetConfig(**{**tiny_unet(16).to_dict(), "pooled_text": False})


def _trained_like(config: UNetConfig) -> UNet:
    torch.manual_seed(0)
    model = UNet(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # as if trained: the zero-initialised output layers are not zero any more
            p.add_(0.2 * torch.randn_like(p))
    return model


def _prompt_effect(model: UNet) -> float:
    """Largest change of ε̂ between two prompts, with every cross-attention's output layer at zero."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".cross_attn.out." in name:
                p.zero_()
        g = torch.Generator().manual_seed(1)
        x, t, mask = torch.randn(1, 3, 16, 16, generator=g), torch.tensor([500]), torch.ones(1, 6)
        a = model(x, t, torch.randn(1, 6, 384, generator=g), mask)
        b = model(x, t, torch.randn(1, 6, 384, generator=g), mask)
    return float((a - b).abs().max())


def test_without_pooled_text_the_prompt_acts_through_cross_attention_only():
    plain, off = tiny_unet(16), _without_pooled_text()
    assert "pooled_text" not in plain.to_dict() and off.to_dict()["pooled_text"] is False
    assert UNetConfig.from_dict(off.to_dict()) == off
    model = _trained_like(off)
    assert not any(name.startswith("text_mlp") for name, _ in model.named_parameters())
    assert _prompt_effect(model) == 0.0
    assert _prompt_effect(_trained_like(plain)) > 1e-3  # with it, FiLM alone carries the prompt


def test_bad_pooled_text_is_refused():
    with pytest.raises(UsageError, match="pooled_text must be true or false"):
        UNetConfig.from_dict({**tiny_unet(16).to_dict(), "pooled_text": "no"})
    with pytest.raises(UsageError, match="needs cross-attention"):
        UNetConfig.from_dict({**_without_pooled_text().to_dict(), "cross_attention_resolutions": []})


def test_init_from_a_run_with_it_then_train(tmp_path, text_encoder):
    Trainer(tiny_config(steps=5), tmp_path / "a", text_encoder=text_encoder).run()
    cfg = tiny_config(steps=6, init_from=str(tmp_path / "a"), unet=_without_pooled_text())
    b = Trainer(cfg, tmp_path / "b", text_encoder=text_encoder)
    assert "with its pooled-prompt FiLM weights left out" in b.notes[0]
    start = load_checkpoint(tmp_path / "a")
    own = b.model.state_dict()
    assert set(start.ema) - set(own) == {k for k in start.ema if k.startswith("text_mlp.")} != set()
    for name, value in own.items():
        torch.testing.assert_close(value, start.ema[name], rtol=0, atol=0)
    b.run()
    assert json.loads((tmp_path / "b" / "config.json").read_text())["unet"]["pooled_text"] is False
    # the other way round (adding FiLM weights that were never trained) is a different U-Net
    with pytest.raises(UsageError, match="U-Net differs"):
        Trainer(tiny_config(steps=6, init_from=str(tmp_path / "b")), tmp_path / "c", text_encoder=text_encoder)


def test_cli_trains_exports_and_refuses_a_resume_that_drops_it(tmp_path, capsys):
    """The real chain: train --no-pooled-text --token-positions from a plain run, export with the
    parity check (ONNX Runtime against PyTorch), generate; --resume of a plain run cannot drop it."""
    from diffusion_studio.cli import main

    common = ["--preset", "cpu-quick", "--image-size", "16", "--batch-size", "2", "--threads", "1",
              "--sample-every", "0", "--json"]
    plain, off = tmp_path / "plain", tmp_path / "off"
    assert main(["train", *common, "--out", str(plain), "--steps", "2"]) == 0
    assert main(["train", *common, "--out", str(off), "--steps", "3", "--no-pooled-text", "--token-positions",
                 "--init-from", str(plain)]) == 0
    capsys.readouterr()
    unet = load_checkpoint(off).unet_config
    assert unet.pooled_text is False and unet.token_positions == 32
    assert main(["train", *common, "--out", str(plain), "--steps", "4", "--resume", "--no-pooled-text"]) == 2
    err = capsys.readouterr().err
    assert "Cannot resume with --no-pooled-text" in err and err.count("\n") == 1
    export_and_generate(off, tmp_path / "bundle")
