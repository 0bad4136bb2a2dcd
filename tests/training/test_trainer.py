"""Trainer: Algorithm 1 pieces, falling loss, exact resume, checkpoints, events, sample grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffusion_studio.core.schedule import make_schedule
from diffusion_studio.errors import UsageError
from diffusion_studio.training.captions import CaptionCache
from diffusion_studio.training.checkpoints import list_checkpoints, load_checkpoint
from diffusion_studio.training.ema import ema_decay_at
from diffusion_studio.training.events import read_events
from diffusion_studio.training.trainer import Trainer, lr_at, schedule_tensors, timestep_buckets

from .conftest import tiny_config


def test_schedule_bridge_lr_warmup_buckets_and_ema_decay():
    sched = make_schedule("linear", 1000)
    a, s = schedule_tensors(sched, torch.device("cpu"))
    assert a.dtype == torch.float32 and a.shape == (1000,)
    np.testing.assert_allclose(a.numpy() ** 2 + s.numpy() ** 2, 1.0, atol=1e-6)  # ᾱ + (1−ᾱ) = 1
    assert float(a[0] ** 2) == pytest.approx(1 - 1e-4, abs=1e-7)  # ᾱ_1 = 1 − β_1
    cfg = tiny_config(lr=1e-3, warmup_steps=10, steps=110, lr_schedule="cosine")
    assert lr_at(cfg, 0) == pytest.approx(1e-4) and lr_at(cfg, 9) == pytest.approx(1e-3)
    assert lr_at(cfg, 109) == pytest.approx(1e-4)  # cosine ends at 10%
    assert timestep_buckets(torch.tensor([1, 100, 101, 1000]), 1000).tolist() == [0, 0, 1, 9]
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1) and ema_decay_at(10**6, 0.999) == 0.999


def test_caption_embeddings_do_not_depend_on_the_batch(text_encoder):
    captions = ["a red circle", "a small blue square in the center", "", "green triangle, top left"]
    together = CaptionCache(text_encoder).encode(captions)
    alone = CaptionCache(text_encoder)
    for i, c in enumerate(captions):
        ctx, mask = alone.encode([c])
        assert np.array_equal(ctx[0], together[0][i]) and np.array_equal(mask[0], together[1][i])
    assert together[1][2].sum() == 2  # "" is [CLS] [SEP]
    full, full_mask = text_encoder.encode(captions[:1])
    n = int(full_mask[0].sum())
    assert np.array_equal(together[0][0, :n], full[0, :n]) and not together[0][0, n:].any()


def test_loss_falls_and_run_folder_is_complete(tmp_path, text_encoder):
    events = []
    cfg = tiny_config(steps=60, batch_size=16, lr=2e-3, warmup_steps=5, log_every=10,
                      checkpoint_every=20, keep_last=2, sample_every=60)
    result = Trainer(cfg, tmp_path / "run", text_encoder=text_encoder, listeners=[events.append]).run()
    assert result.step == 60 and not result.stopped
    losses = [e["loss"] for e in events if e["event"] == "progress"]
    assert len(losses) == 6
    assert losses[0] > 0.6 and losses[-1] < 0.75 * losses[0]
    # events.jsonl holds the same events the listener saw, one JSON object per line
    logged = read_events(tmp_path / "run" / "events.jsonl")
    assert [e["event"] for e in logged] == [e["event"] for e in events]
    assert logged[-1]["event"] == "done" and logged[-1]["done"] is True
    progress = next(e for e in logged if e["event"] == "progress")
    assert len(progress["bucket_loss"]) == 10 and progress["images_per_s"] > 0 and progress["eta_s"] >= 0
    # keep_last=2 of the checkpoints at 20, 40, 60
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [40, 60]
    grid = next(e for e in logged if e["event"] == "sample")["sample_grid"]
    from PIL import Image

    img = np.asarray(Image.open(grid))
    assert img.shape == (32, 32, 3) and img.std() > 1.0  # one 16x16 sample, upscaled 2x
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["unet"]["base_channels"] == 8 and len(config["text_encoder"]["sha256"]) == 64


def test_resume_continues_exactly(tmp_path, text_encoder):
    cfg = tiny_config(steps=20, checkpoint_every=10, p_uncond=0.3)
    straight = Trainer(cfg, tmp_path / "a", text_encoder=text_encoder)
    straight.run()
    first = Trainer(tiny_config(steps=10, checkpoint_every=10, p_uncond=0.3), tmp_path / "b",
                    text_encoder=text_encoder)
    first.run()
    resumed = Trainer(cfg, tmp_path / "b", resume=True, text_encoder=text_encoder)
    assert resumed.step == 10
    resumed.run()
    for a, b in ((straight.model, resumed.model), (straight.ema.model, resumed.ema.model)):
        for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
            torch.testing.assert_close(pa, pb, rtol=0, atol=1e-7, msg=name)
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for k in sa:
        torch.testing.assert_close(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"], rtol=0, atol=1e-10)
    ck = load_checkpoint(tmp_path / "b")
    assert ck.step == 20 and ck.unet_config == cfg.unet and set(ck.model) == set(ck.ema)


def test_run_folder_rules_and_config_mismatch(tmp_path, text_encoder):
    run = tmp_path / "run"
    Trainer(tiny_config(steps=10), run, text_encoder=text_encoder).run()
    with pytest.raises(UsageError, match="not empty"):
        Trainer(tiny_config(steps=10), run, text_encoder=text_encoder)
    with pytest.raises(UsageError, match="already at step 10"):
        Trainer(tiny_config(steps=10), run, resume=True, text_encoder=text_encoder)
    with pytest.raises(UsageError, match="'weight_decay'"):
        Trainer(tiny_config(steps=20, weight_decay=0.5), run, resume=True, text_encoder=text_encoder)
    with pytest.raises(UsageError, match="no run folder"):
        Trainer(tiny_config(steps=20), tmp_path / "missing", resume=True, text_encoder=text_encoder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no checkpoint"):
        Trainer(tiny_config(steps=20), tmp_path / "empty", resume=True, text_encoder=text_encoder)


def test_resume_with_a_new_learning_rate_and_data_mix(tmp_path, text_encoder):
    """A curriculum: lr and the two-shape share may change on --resume; the change is noted,
    the new lr is the one used, and the run's config and checkpoints record the new values."""
    run = tmp_path / "run"
    Trainer(tiny_config(steps=10, lr=1e-3, warmup_steps=0), run, text_encoder=text_encoder).run()
    cfg = tiny_config(steps=14, lr=3e-4, warmup_steps=0, two_shape_share=0.5)
    resumed = Trainer(cfg, run, resume=True, text_encoder=text_encoder)
    assert resumed.step == 10
    assert resumed.notes == ["changed from step 10 on: two_shape_share 0.0 -> 0.5, lr 0.001 -> 0.0003."]
    resumed.run()
    assert {g["lr"] for g in resumed.optimizer.param_groups} == {3e-4}
    assert json.loads((run / "config.json").read_text())["two_shape_share"] == 0.5
    ck = load_checkpoint(run)
    assert ck.step == 14 and ck.config["lr"] == 3e-4 and ck.config["two_shape_share"] == 0.5
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert any("lr 0.001 -> 0.0003" in e.get("note", "") for e in events)
    again = Trainer(tiny_config(steps=16, lr=3e-4, warmup_steps=0, two_shape_share=0.5), run, resume=True,
                    text_encoder=text_encoder)
    assert again.notes == []  # nothing changed this time


def test_bad_checkpoints_raise_usage_error(tmp_path, text_encoder):
    run = tmp_path / "run"
    Trainer(tiny_config(steps=10), run, text_encoder=text_encoder).run()
    path = list_checkpoints(run)[-1][1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="truncated or damaged"):
        load_checkpoint(path)
    with pytest.raises(UsageError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(UsageError, match="damaged"):
        load_checkpoint(path)


def test_stop_request_writes_a_checkpoint(tmp_path, text_encoder):
    cfg = tiny_config(steps=50, checkpoint_every=100)
    trainer = Trainer(cfg, tmp_path / "run", text_encoder=text_encoder)

    def stop_at_7(event):
        if event["event"] == "progress" and event["step"] >= 5:
            trainer.request_stop()

    trainer.events.listeners.append(stop_at_7)
    result = trainer.run()
    assert result.stopped and result.step == 5
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [5]
    assert read_events(tmp_path / "run" / "events.jsonl")[-1]["event"] == "stopped"
