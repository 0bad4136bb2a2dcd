"""The Train form, headless: the command lines it runs, its one-sentence refusals, saved settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffusion_studio.errors import UsageError
from diffusion_studio.ui.train.settings import TrainForm, checkpoints_in, default_bundle_dir, export_arguments


def test_arguments_follow_the_cli_flags(tmp_path: Path) -> None:
    form = TrainForm(preset="cpu-quick", steps=6, batch_size=4, image_size=16, out=str(tmp_path / "run"),
                     sample_every=3, checkpoint_every=3, threads=1, device="cpu")
    assert form.arguments() == [
        "-m", "diffusion_studio", "train", "--dataset", "shapes", "--out", str(tmp_path / "run"),
        "--preset", "cpu-quick", "--device", "cpu", "--steps", "6", "--batch-size", "4", "--image-size", "16",
        "--sample-every", "3", "--checkpoint-every", "3", "--threads", "1", "--json"]
    minimal = TrainForm(out=str(tmp_path / "run"), dataset="folder", folder="/data/pics").arguments()
    assert minimal == ["-m", "diffusion_studio", "train", "--dataset", "folder:/data/pics", "--out",
                       str(tmp_path / "run"), "--preset", "cpu-quick", "--device", "auto", "--json"]
    assert "--sample-every" in TrainForm(out=str(tmp_path / "r"), sample_every=0).arguments()  # 0: only at the end


@pytest.mark.parametrize("changes, needle", [
    ({"out": ""}, "output run folder"),
    ({"dataset": "folder", "folder": " "}, "image folder"),
    ({"steps": 0}, "Steps must be at least 1"),
    ({"image_size": 4}, "Image size must be at least 8"),
    ({"preset": "huge"}, "Unknown preset"),
    ({"resume": True}, "no checkpoint"),
])
def test_bad_forms_are_refused_with_one_sentence(tmp_path: Path, changes: dict, needle: str) -> None:
    form = TrainForm(**{"out": str(tmp_path / "new"), **changes})
    with pytest.raises(UsageError, match=needle) as info:
        form.arguments()
    assert "\n" not in str(info.value)


def test_a_used_run_folder_needs_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(UsageError, match="tick Resume"):
        TrainForm(out=str(run)).arguments()
    (run / "checkpoints" / "step-00000010.safetensors").write_bytes(b"")
    assert TrainForm(out=str(run), resume=True).arguments()[-2:] == ["--resume", "--json"]
    assert checkpoints_in(run) == [run / "checkpoints" / "step-00000010.safetensors"]


def test_form_round_trips_and_survives_stale_settings(tmp_path: Path) -> None:
    form = TrainForm(dataset="folder", folder="/x", preset="gpu", steps=10, out="/o", resume=True, threads=2)
    assert TrainForm.from_dict(json.loads(json.dumps(form.to_dict()))) == form
    stale = {"preset": "gpu", "steps": "many", "resume": "yes", "unknown": 1, "device": "cpu"}
    assert TrainForm.from_dict(stale) == TrainForm(preset="gpu", device="cpu")
    assert TrainForm.from_dict({"preset": "nope"}) == TrainForm()


def test_export_arguments(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(UsageError, match="no checkpoint"):
        export_arguments(run, tmp_path / "bundle")
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step-00000006.safetensors").write_bytes(b"")
    assert export_arguments(run, tmp_path / "b", force=True) == [
        "-m", "exporter", str(run), "--out", str(tmp_path / "b"), "--force"]
    assert default_bundle_dir(run) == tmp_path / "run-bundle"


def test_preset_values_are_the_trainers_presets() -> None:
    from diffusion_studio.training.config import PRESETS as TRAINER_PRESETS
    from diffusion_studio.training.config import preset
    from diffusion_studio.ui.train.settings import PRESET_VALUES, PRESETS

    assert [name for name, _ in PRESETS] == list(TRAINER_PRESETS) == list(PRESET_VALUES)
    for name, values in PRESET_VALUES.items():
        config = preset(name)
        assert values == {key: getattr(config, key) for key in values}, name


def test_the_default_run_folder_is_the_same_every_time(tmp_path: Path) -> None:
    from diffusion_studio.ui.train.settings import default_run_dir

    assert default_run_dir(tmp_path) == default_run_dir(tmp_path) == tmp_path / "my-model"


def test_schedule_and_learn_sigma_reach_the_cli(tmp_path: Path) -> None:
    from diffusion_studio.cli import build_parser

    form = TrainForm(out=str(tmp_path / "run"), schedule="cosine", learn_sigma=True)
    args = form.arguments()
    assert args[-4:] == ["--schedule", "cosine", "--learn-sigma", "--json"]
    parsed = build_parser().parse_args(args[2:])
    assert parsed.schedule == "cosine" and parsed.learn_sigma is True
    assert "--schedule" not in TrainForm(out=str(tmp_path / "run")).arguments()  # None: the preset's
    # a resumed run keeps its own schedule and variance head (config.json): the flags are not passed
    run = tmp_path / "old"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step-00000010.safetensors").write_bytes(b"")
    assert TrainForm(out=str(run), resume=True, schedule="cosine", learn_sigma=True).arguments()[-2:] == [
        "--resume", "--json"]
    with pytest.raises(UsageError, match="Unknown noise schedule 'quadratic'; use linear or cosine.") as info:
        TrainForm(out=str(tmp_path / "x"), schedule="quadratic").arguments()
    assert "\n" not in str(info.value)


def test_schedule_and_learn_sigma_round_trip_in_saved_settings() -> None:
    form = TrainForm(schedule="cosine", learn_sigma=True, out="/o")
    assert TrainForm.from_dict(json.loads(json.dumps(form.to_dict()))) == form
    assert TrainForm.from_dict({"schedule": None, "learn_sigma": False}) == TrainForm()
    stale = {"schedule": "quadratic", "learn_sigma": "yes", "preset": "gpu"}
    assert TrainForm.from_dict(stale) == TrainForm(preset="gpu")
    assert TrainForm.from_dict({"schedule": 3}) == TrainForm()


def test_preset_schedules_are_the_trainers() -> None:
    from diffusion_studio.training.config import preset
    from diffusion_studio.ui.train.settings import PRESET_SCHEDULE, PRESETS

    assert list(PRESET_SCHEDULE) == [name for name, _ in PRESETS]
    for name, schedule in PRESET_SCHEDULE.items():
        assert preset(name).schedule == schedule and not preset(name).learn_sigma, name
