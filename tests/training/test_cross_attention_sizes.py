"""`--cross-attention SIZES`: the feature sizes whose blocks attend to the prompt tokens. Added
sizes start with a zero output, so a run can start (--init-from) from a U-Net without them."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from diffusion_studio.errors import UsageError
from diffusion_studio.training.checkpoints import load_checkpoint
from diffusion_studio.training.trainer import Trainer
from diffusion_studio.training.unet import UNet
from tests.training.conftest import export_and_generate, tiny_config, tiny_unet


def _at_both_sizes():
    return replace(tiny_unet(16), cross_attention_resolutions=(16, 8))


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 16, 16, generator=g)
    context = torch.randn(2, 6, 384, generator=g)
    mask = torch.ones(2, 6)
    mask[1, 4:] = 0
    return x, torch.tensor([3, 700]), context, mask


def test_added_cross_attention_starts_as_the_identity_then_depends_on_the_prompt():
    torch.manual_seed(0)
    a = UNet(tiny_unet(16)).eval()
    with torch.no_grad():
        for p in a.parameters():  # as if trained: the zero-initialised output layers are not zero any more
            p.add_(0.2 * torch.randn_like(p))
    b = UNet(_at_both_sizes()).eval()
    missing = b.load_state_dict(a.state_dict(), strict=False).missing_keys
    levels_at_16 = {name.split(".cross_attn.")[0] for name in missing}
    assert missing and all(".cross_attn." in k for k in missing) and len(levels_at_16) >= 2  # down and up
    inputs = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(a(*inputs), b(*inputs), rtol=0, atol=0)
        for name, p in b.named_parameters():
            if name in missing:
                p.copy_(0.2 * torch.randn_like(p))
        changed = b(*inputs)
        other_prompt = b(inputs[0], inputs[1], torch.randn_like(inputs[2]), inputs[3])
    assert not torch.allclose(a(*inputs), changed)
    # the new layers read the prompt: with only them changed, another prompt gives another ε
    assert (changed - other_prompt).abs().max() > 1e-3


def test_init_from_adds_sizes_trains_them_and_cannot_remove_them(tmp_path, text_encoder):
    Trainer(tiny_config(steps=5), tmp_path / "a", text_encoder=text_encoder).run()
    cfg = tiny_config(steps=6, init_from=str(tmp_path / "a"), unet=_at_both_sizes())
    cfg.validate()
    b = Trainer(cfg, tmp_path / "b", text_encoder=text_encoder)
    assert b.notes[0].endswith("with new cross-attention at 16² (zero output).")
    start = load_checkpoint(tmp_path / "a")
    new = [name for name in b.model.state_dict() if name not in start.ema]
    assert new and all(".cross_attn." in name for name in new)
    for name, value in b.model.state_dict().items():
        if name.endswith("cross_attn.out.weight") and name in new:
            assert value.abs().max() == 0
        elif name in start.ema:
            torch.testing.assert_close(value, start.ema[name], rtol=0, atol=0)
    b.run()
    outs = [v for k, v in b.model.state_dict().items() if k in new and k.endswith("out.weight")]
    assert outs and all(v.abs().max() > 0 for v in outs)  # they receive gradients
    assert json.loads((tmp_path / "b" / "config.json").read_text())["unet"]["cross_attention_resolutions"] == [16, 8]
    with pytest.raises(UsageError, match="U-Net differs"):  # dropping a size is a different U-Net
        Trainer(tiny_config(steps=6, init_from=str(tmp_path / "b")), tmp_path / "c", text_encoder=text_encoder)


def test_cli_trains_exports_and_refuses_bad_sizes_and_a_resume_that_changes_them(tmp_path, capsys):
    """The real chain: train --cross-attention 16,8 from a run with 8 only, export with the parity
    check (ONNX Runtime against PyTorch), generate; bad sizes and a resume that changes them: one line."""
    from diffusion_studio.cli import main

    common = ["--preset", "cpu-quick", "--image-size", "16", "--batch-size", "2", "--threads", "1",
              "--sample-every", "0", "--json"]
    plain, wider = tmp_path / "plain", tmp_path / "wider"
    assert main(["train", *common, "--out", str(plain), "--steps", "2", "--cross-attention", "8"]) == 0
    assert load_checkpoint(plain).unet_config.cross_attention_resolutions == (8,)
    assert main(["train", *common, "--out", str(wider), "--steps", "3", "--cross-attention", "8,16",
                 "--init-from", str(plain)]) == 0
    capsys.readouterr()
    assert load_checkpoint(wider).unet_config.cross_attention_resolutions == (16, 8)
    for sizes, message in (("16,x", "--cross-attention takes feature sizes"),
                           ("5", "Attention resolution 5 is not one of the U-Net's feature sizes")):
        assert main(["train", *common, "--out", str(tmp_path / "bad"), "--steps", "2",
                     "--cross-attention", sizes]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()
    assert main(["train", *common, "--out", str(plain), "--steps", "4", "--resume", "--cross-attention", "16,8"]) == 2
    err = capsys.readouterr().err
    assert "Cannot resume with --cross-attention 16,8" in err and err.count("\n") == 1
    # the same sizes on resume change nothing
    assert main(["train", *common, "--out", str(plain), "--steps", "3", "--resume", "--cross-attention", "8"]) == 0
    export_and_generate(wider, tmp_path / "bundle")
