"""U-Net token-position keys (`--token-positions`): zero at first, so starting from a U-Net
without them changes nothing; then they train, export to ONNX, and refuse a bad resume."""

from __future__ import annotations

import json

import pytest
import torch

from diffusion_studio.errors import UsageError
from diffusion_studio.training.checkpoints import load_checkpoint
from diffusion_studio.training.trainer import Trainer
from diffusion_studio.training.unet import UNet, UNetConfig
from tests.training.conftest import export_and_generate, tiny_config, tiny_unet


def _inputs(tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 16, 16, generator=g)
    t = torch.tensor([3, 700])
    context = torch.randn(2, tokens, 384, generator=g)
    mask = torch.ones(2, tokens)
    mask[1, 5:] = 0
    return x, t, context, mask


def test_token_positions_start_at_zero_and_change_only_the_cross_attention_keys():
    base = tiny_unet(16)
    with_pos = UNetConfig(**{**base.to_dict(), "token_positions": 8})
    assert "token_positions" not in base.to_dict() and with_pos.to_dict()["token_positions"] == 8
    torch.manual_seed(0)
    a = UNet(base).eval()
    with torch.no_grad():
        for p in a.parameters():  # as if trained: the zero-initialised output layers are not zero any more
            p.add_(0.2 * torch.randn_like(p))
    b = UNet(with_pos).eval()
    missing = b.load_state_dict(a.state_dict(), strict=False).missing_keys
    assert missing and all(k.endswith("cross_attn.token_pos") for k in missing)
    inputs = _inputs(8)
    with torch.no_grad():
        torch.testing.assert_close(a(*inputs), b(*inputs), rtol=0, atol=0)
        for name, p in b.named_parameters():
            if name.endswith("token_pos"):
                p.copy_(torch.randn_like(p))  # once trained, the keys depend on the token's place
        assert not torch.allclose(a(*inputs), b(*inputs))


def test_bad_token_positions_are_refused():
    with pytest.raises(UsageError, match="token_positions"):
        UNetConfig.from_dict({**tiny_unet(16).to_dict(), "token_positions": -1})
    cfg = tiny_config(unet=UNetConfig(**{**tiny_unet(16).to_dict(), "token_positions": 4}))
    with pytest.raises(UsageError, match="must cover the"):
        cfg.validate()


def test_init_from_a_run_without_them_then_train(tmp_path, text_encoder):
    Trainer(tiny_config(steps=5), tmp_path / "a", text_encoder=text_encoder).run()
    cfg = tiny_config(steps=6, init_from=str(tmp_path / "a"),
                      unet=UNetConfig(**{**tiny_unet(16).to_dict(), "token_positions": 32}))
    cfg.validate()
    b = Trainer(cfg, tmp_path / "b", text_encoder=text_encoder)
    assert "with new zero token-position keys" in b.notes[0]
    start = load_checkpoint(tmp_path / "a")
    for name, value in b.model.state_dict().items():
        if name.endswith("token_pos"):
            assert value.abs().max() == 0
        else:
            torch.testing.assert_close(value, start.ema[name], rtol=0, atol=0)
    b.run()
    trained = [v for k, v in b.model.state_dict().items() if k.endswith("token_pos")]
    assert trained and all(v.abs().max() > 0 for v in trained)  # they receive gradients
    assert json.loads((tmp_path / "b" / "config.json").read_text())["unet"]["token_positions"] == 32
    # the other way round (dropping them) is a different U-Net
    with pytest.raises(UsageError, match="U-Net differs"):
        Trainer(tiny_config(steps=6, init_from=str(tmp_path / "b")), tmp_path / "c", text_encoder=text_encoder)


def test_cli_trains_exports_and_refuses_a_resume_that_adds_them(tmp_path, capsys):
    """The real chain: train --token-positions (from a run without them), export with the parity
    check (ONNX Runtime against PyTorch), generate; --resume of a plain run cannot add them."""
    from diffusion_studio.cli import main

    common = ["--preset", "cpu-quick", "--image-size", "16", "--batch-size", "2", "--threads", "1",
              "--sample-every", "0", "--json"]
    plain, with_pos = tmp_path / "plain", tmp_path / "pos"
    assert main(["train", *common, "--out", str(plain), "--steps", "2"]) == 0
    assert main(["train", *common, "--out", str(with_pos), "--steps", "3", "--token-positions",
                 "--init-from", str(plain)]) == 0
    capsys.readouterr()
    assert load_checkpoint(with_pos).unet_config.token_positions == 32
    assert main(["train", *common, "--out", str(plain), "--steps", "4", "--resume", "--token-positions"]) == 2
    err = capsys.readouterr().err
    assert "Cannot resume with --token-positions" in err and err.count("\n") == 1
    export_and_generate(with_pos, tmp_path / "bundle")
