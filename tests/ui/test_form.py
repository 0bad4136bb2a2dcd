"""GenerationSettings: validation, persistence round trip, metadata -> form."""

from __future__ import annotations

import random

import pytest

from diffusion_studio.errors import UsageError
from diffusion_studio.ui.form import Device, GenerationSettings, normalise_sampler


def test_defaults_are_valid_and_round_trip_through_dict() -> None:
    s = GenerationSettings(prompt="a red circle", steps=12, guidance=4.5, seed=99, batch=4, device=Device.CPU)
    assert s.validated() is s
    assert GenerationSettings.from_dict(s.to_dict()) == s
    assert s.to_dict()["device"] == "cpu"


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [("steps", 0, "Steps"), ("steps", 1001, "Steps"), ("guidance", -1.0, "Guidance"),
     ("batch", 0, "Batch"), ("seed", -5, "seed"), ("sampler", "euler", "sampler")],
)
def test_out_of_range_fields_raise_one_sentence(field: str, value: object, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        GenerationSettings(**{field: value}).validated()


def test_from_dict_ignores_garbage_and_falls_back_to_defaults() -> None:
    s = GenerationSettings.from_dict({"prompt": "x", "steps": "not a number", "device": "tpu", "seed_locked": "true"})
    assert (s.prompt, s.steps, s.device, s.seed_locked) == ("x", 20, Device.AUTO, True)
    assert GenerationSettings.from_dict({"steps": 0}) == GenerationSettings()  # invalid -> defaults


def test_unlocked_seed_is_rerolled_locked_seed_kept() -> None:
    rng = random.Random(3)
    expected = random.Random(3).randint(0, 2**31 - 1)
    assert GenerationSettings(seed=7).for_next_run(rng).seed == expected
    assert GenerationSettings(seed=7, seed_locked=True).for_next_run(rng).seed == 7


def test_metadata_fills_form_and_locks_seed() -> None:
    base = GenerationSettings(batch=3, device=Device.CPU)
    meta = {"prompt": "a blue square", "negative_prompt": "red", "sampler": "DPM++ 2M", "steps": "30",
            "guidance": 5.5, "seed": 1234}
    s = base.with_metadata(meta)
    assert (s.prompt, s.negative_prompt, s.sampler, s.steps, s.guidance, s.seed) == (
        "a blue square", "red", "dpmpp-2m", 30, 5.5, 1234)
    assert s.seed_locked and s.batch == 3 and s.device is Device.CPU  # untouched fields stay


def test_metadata_without_prompt_or_with_bad_numbers_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no generation parameters"):
        GenerationSettings().with_metadata({"Software": "GIMP"})
    with pytest.raises(UsageError, match="steps"):
        GenerationSettings().with_metadata({"prompt": "x", "steps": "many"})
    assert normalise_sampler(" DDIM ") == "ddim"
