"""--init-from: a new run starts from another run's EMA weights (fine-tuning), fresh optimizer, step 0."""

from __future__ import annotations

import pytest
import torch

from diffusion_studio.cli import main
from diffusion_studio.errors import UsageError
from diffusion_studio.training.checkpoints import load_checkpoint
from diffusion_studio.training.trainer import Trainer, train

from .conftest import tiny_config, tiny_unet


def test_new_run_starts_from_the_ema_weights(tmp_path, text_encoder):
    train(tiny_config(steps=10), tmp_path / "a", text_encoder=text_encoder)
    source = load_checkpoint(tmp_path / "a")
    trainer = Trainer(tiny_config(steps=4, init_from=str(tmp_path / "a"), two_shape_share=0.3),
                      tmp_path / "b", text_encoder=text_encoder)
    assert trainer.step == 0 and any("started from the EMA weights" in n for n in trainer.notes)
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, source.ema[name]), name
        assert torch.equal(trainer.ema.state_dict()[name], source.ema[name]), name
    assert not trainer.optimizer.state  # fresh AdamW moments
    result = trainer.run()
    assert result.step == 4 and load_checkpoint(tmp_path / "b").config["init_from"] == str(tmp_path / "a")
    # resuming the fine-tuned run continues from its own checkpoint, not from the init weights again
    resumed = Trainer(tiny_config(steps=6, init_from=str(tmp_path / "a"), two_shape_share=0.3),
                      tmp_path / "b", resume=True, text_encoder=text_encoder)
    assert resumed.step == 4 and not any("started from" in n for n in resumed.notes)


def test_a_different_architecture_is_refused_before_anything_is_written(tmp_path, text_encoder):
    train(tiny_config(steps=10), tmp_path / "a", text_encoder=text_encoder)
    other = tiny_unet(16)
    other.base_channels = 16
    with pytest.raises(UsageError, match="U-Net differs"):
        Trainer(tiny_config(steps=4, unet=other, init_from=str(tmp_path / "a")), tmp_path / "b",
                text_encoder=text_encoder)
    assert not (tmp_path / "b").exists()


def test_cli_missing_init_checkpoint_exits_2_and_writes_nothing(tmp_path, capsys):
    code = main(["train", "--preset", "cpu-quick", "--out", str(tmp_path / "run"), "--steps", "2",
                 "--init-from", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nowhere" in err[0]
    assert not (tmp_path / "run").exists()
