"""GenerationSettings: validation (core.params ranges), persistence round trip, metadata -> form."""

from __future__ import annotations

import random

import pytest

from diffusion_studio.core.bundle import MAX_T
from diffusion_studio.core.params import BATCH_MAX, GUIDANCE_MAX, SEED_MAX, closest_sampler
from diffusion_studio.errors import UsageError
from diffusion_studio.ui.generate.settings import Device, GenerationSettings


def test_defaults_are_valid_and_round_trip_through_dict() -> None:
    s = GenerationSettings(prompt="a red circle", steps=12, guidance=4.5, seed=99, batch=4, device=Device.CPU)
    assert s.validated() is s
    assert GenerationSettings.from_dict(s.to_dict()) == s
    assert s.to_dict()["device"] == "cpu"


@pytest.mark.parametrize(
    ("field", "value", "T", "words"),
    [("steps", 0, None, "Steps"), ("steps", 51, 50, "between 1 and 50"), ("steps", MAX_T + 1, None, "Steps"),
     ("guidance", -1.0, None, "Guidance"), ("guidance", GUIDANCE_MAX + 1, None, "Guidance"),
     ("batch", 0, None, "Batch"), ("batch", BATCH_MAX + 1, None, "Batch"), ("seed", -5, None, "seed"),
     ("sampler", "euler", None, "sampler")],
)
def test_out_of_range_fields_raise_the_core_sentence(field: str, value: object, T: int | None, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        GenerationSettings(**{field: value}).validated(T)


def test_the_limits_are_the_core_ones() -> None:
    assert GenerationSettings(steps=50).validated(50).steps == 50
    assert GenerationSettings(steps=MAX_T).validated().steps == MAX_T  # no model: any bundle's T
    assert GenerationSettings(guidance=GUIDANCE_MAX, batch=BATCH_MAX).validated().batch == BATCH_MAX
    with pytest.raises(UsageError, match="seed"):  # image i of the batch uses seed + i
        GenerationSettings(seed=SEED_MAX, batch=2).validated()


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


def test_metadata_without_prompt_is_a_usage_error_bad_numbers_keep_the_current_values() -> None:
    with pytest.raises(UsageError, match="no generation parameters"):
        GenerationSettings().with_metadata({"Software": "GIMP"})
    base = GenerationSettings(steps=25, guidance=4.0, seed=11)
    s, notes = base.restore({"prompt": "x", "steps": "many", "guidance": "lots", "seed": "3.5", "sampler": "DDIM"})
    assert (s.prompt, s.steps, s.guidance, s.seed, s.sampler) == ("x", 25, 4.0, 11, "ddim")
    assert notes == ["steps 'many' is not a number; kept 25", "guidance 'lots' is not a number; kept 4",
                     f"seed '3.5' is not an integer between 0 and {2**63 - 1}; kept 11"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("DPM++ 2M", "dpmpp-2m"), ("DPM++ 2M Karras", "dpmpp-2m"), ("DPM++ 2M SDE Karras", "dpmpp-2m"),
     ("dpmpp_2m_sde_gpu", "dpmpp-2m"), ("DDIM", "ddim"), ("ddim", "ddim"), ("DDPM", "ddpm"),
     ("Euler a", None), ("Euler", None), ("DPM++ SDE Karras", None), ("DPM++ 2S a Karras", None),
     ("UniPC", None), ("LMS", None)],
)
def test_samplers_of_other_tools_map_to_the_closest_or_none(name: str, expected: str | None) -> None:
    assert closest_sampler(name) == expected


def test_a1111_sampler_names_fill_the_form_with_a_note_never_an_error() -> None:
    base = GenerationSettings(sampler="ddim", steps=20)
    meta = {"prompt": "a cat", "sampler": "Euler a", "steps": 30, "guidance": 7.0, "seed": 3_000_000_000}
    s, notes = base.restore(meta)
    assert (s.prompt, s.sampler, s.steps, s.guidance, s.seed, s.seed_locked) == (
        "a cat", "ddim", 30, 7.0, 3_000_000_000, True)
    assert notes == ["sampler 'Euler a' is not available; kept DDIM"]
    s, notes = base.restore({**meta, "sampler": "DPM++ 2M Karras"})
    assert s.sampler == "dpmpp-2m" and notes == ["sampler 'DPM++ 2M Karras' runs as DPM-Solver++ (2M)"]
    s, notes = base.restore({**meta, "sampler": "DPM++ 2M"})  # our own label: no note
    assert s.sampler == "dpmpp-2m" and notes == []


@pytest.mark.parametrize(
    ("steps", "T", "expected", "note"),
    [(150, 50, 50, "150 steps is outside the model's T = 50; using 50"),
     (1500, None, 1500, None), (1500, 4000, 1500, None),
     (MAX_T + 5, None, MAX_T, f"{MAX_T + 5} steps is outside the range 1–{MAX_T}; using {MAX_T}"),
     (0, 50, 1, "0 steps is outside the range 1–50; using 1"),
     (50, 50, 50, None)],
)
def test_steps_beyond_the_model_or_the_form_are_clamped_with_a_note(
    steps: int, T: int | None, expected: int, note: str | None
) -> None:
    s, notes = GenerationSettings().restore({"prompt": "p", "steps": steps}, T)
    assert s.steps == expected
    assert notes == ([note] if note else [])


def test_guidance_out_of_range_is_clamped_and_seeds_use_the_pipelines_full_range() -> None:
    assert GenerationSettings().with_metadata({"prompt": "p", "guidance": 45}).guidance == 45.0
    s, notes = GenerationSettings().restore({"prompt": "p", "guidance": 145})
    assert s.guidance == 100.0 and notes == ["guidance 145 is outside 0–100; using 100"]
    for seed in (3_000_000_000, 2**62, 2**63 - 1, "4611686018427387904"):
        assert GenerationSettings().with_metadata({"prompt": "p", "seed": seed}).seed == int(seed)
    for bad in (2**63, -1):
        s, notes = GenerationSettings(seed=5).restore({"prompt": "p", "seed": bad})
        assert s.seed == 5 and notes == [f"seed '{bad}' is not an integer between 0 and {2**63 - 1}; kept 5"]
    assert GenerationSettings(seed=2**63 - 1).validated().seed == 2**63 - 1
    with pytest.raises(UsageError, match="seed"):
        GenerationSettings(seed=2**63).validated()
    assert GenerationSettings.from_dict(GenerationSettings(seed=2**62).to_dict()).seed == 2**62
    s, notes = GenerationSettings(seed=5, batch=4).restore({"prompt": "p", "seed": SEED_MAX})
    assert s.seed == 5 and notes == [f"seed {SEED_MAX} leaves no room for a batch of 4; kept 5"]
