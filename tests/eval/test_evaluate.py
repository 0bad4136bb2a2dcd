"""The evaluation loop on a tiny real ONNX bundle (tests/conftest.py): batching equals the app's
pipeline image by image, the report has every field, the CLI writes JSON and images, bad input exits 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusion_studio.cli import main
from diffusion_studio.core.params import GUIDANCE_MAX, SEED_MAX
from diffusion_studio.eval.evaluate import evaluate_bundle
from diffusion_studio.eval.generation import PipelineGenerator
from diffusion_studio.eval.prompts import ATTRIBUTES, OPTIONAL
from diffusion_studio.inference.bundle_loader import load_bundle
from diffusion_studio.inference.pipeline import GenerationRequest, Pipeline


@pytest.fixture(autouse=True)
def _one_thread():
    import torch  # the tiny bundle fixture exports with torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pipeline(tiny_bundle) -> Pipeline:
    return Pipeline(load_bundle(tiny_bundle, device="cpu"))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp-2m"])
def test_batched_prompts_equal_the_pipeline_one_image_at_a_time(pipeline, sampler):
    gen = PipelineGenerator(pipeline, sampler=sampler, steps=5, guidance=2.5)
    prompts = ["a red circle", "a small blue square in the top left", "a green triangle on black"]
    batched = gen(prompts, [40, 41, 42])
    assert batched.dtype == np.uint8 and batched.shape == (3, 8, 8, 3)
    for i, prompt in enumerate(prompts):
        alone = pipeline.generate(GenerationRequest(prompt, sampler=sampler, steps=5, guidance=2.5, seed=40 + i))
        diff = np.abs(batched[i].astype(int) - alone.images[0].astype(int))
        assert diff.max() <= 1, (prompt, diff.max())  # float rounding of a different batch size at most
    assert len({batched[i].tobytes() for i in range(3)}) == 3
    # non-consecutive seeds go one by one through Pipeline.generate
    single = gen([prompts[2], prompts[0]], [42, 40])
    np.testing.assert_array_equal(single[1], pipeline.generate(
        GenerationRequest(prompts[0], sampler=sampler, steps=5, guidance=2.5, seed=40)).images[0])


def test_generator_uses_the_bundle_defaults(pipeline):
    assert PipelineGenerator(pipeline).settings == {"sampler": "ddim", "steps": 4, "guidance": 2.0}


def test_evaluate_bundle_report_has_every_field(tiny_bundle):
    report = evaluate_bundle(tiny_bundle, n=6, sampler="dpmpp-2m", steps=3, guidance=1.5, seed=9,
                             device="cpu", batch_size=4, latency_images=2)
    assert report["report_version"] == 1 and report["model"] == "tiny"
    assert report["provider"] == "CPUExecutionProvider" and len(report["model_hash"]) == 10
    assert report["settings"] == {"sampler": "dpmpp-2m", "steps": 3, "guidance": 1.5, "seed": 9,
                                  "device": "cpu", "n": 6}
    assert report["n"] == 6 and 0.0 <= report["valid_share"] <= 1.0
    assert set(report["attributes"]) == set(ATTRIBUTES)
    for row in report["attributes"].values():
        assert {"scored", "correct", "accuracy", "bar", "pass", "confusion"} <= set(row)
        assert 0 <= row["correct"] <= row["scored"] <= 6
    assert report["attributes"]["color"]["scored"] == 6
    assert set(report["variety"]) == set(OPTIONAL)
    for row in report["variety"].values():
        assert {"omitted", "counts", "normalized_entropy", "top_share", "pass"} <= set(row)
    timing = report["timing"]
    assert timing["batch_size"] == 4 and timing["latency_images"] == 2
    assert timing["seconds_per_image"] > 0 and timing["seconds_per_image_batch1"] > 0
    assert [s["seed"] for s in report["samples"]] == list(range(9, 15))
    assert any("8 tokens" in note for note in report["notes"])  # the tiny bundle's L = 8 truncates
    json.dumps(report)  # JSON-ready


def test_cli_writes_json_and_images_and_exits_0(tiny_bundle, tmp_path, capsys):
    out, images = tmp_path / "report.json", tmp_path / "imgs"
    code = main(["eval", str(tiny_bundle), "--n", "5", "--steps", "2", "--device", "cpu",
                 "--json", str(out), "--save-images", str(images), "--latency-images", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(out.read_text())
    assert report["settings"]["steps"] == 2 and report["timing"]["seconds_per_image_batch1"] is None
    for attr in ATTRIBUTES:
        assert attr in captured.out
    assert "quality bar: FAIL" in captured.out  # an untrained net does not draw shapes
    assert not list(tmp_path.glob("*.tmp-*"))
    files = sorted(p.name for p in images.iterdir())
    assert files == [f"{i:04d}.png" for i in range(5)]
    with Image.open(images / "0003.png") as png:
        assert png.size == (8, 8) and png.mode == "RGB"
        assert png.text["prompt"] == report["samples"][3]["prompt"]
    # --summarize turns reports into a Markdown table for the model card
    assert main(["eval", "--summarize", str(out), str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    rows = [line for line in table if line.startswith("| ddim | 2 | 2 | 5 |")]
    assert len(rows) == 2 and rows[0].count("|") == 16
    color = report["attributes"]["color"]
    assert f"{100 * color['accuracy']:.1f}% ✗" in rows[0]


def test_cli_summarize_bad_input_exits_2(tmp_path, tiny_bundle, capsys):
    (tmp_path / "other.json").write_text('{"a": 1}')
    (tmp_path / "bad.json").write_text("{")
    for argv in (["--summarize", str(tmp_path / "none.json")], ["--summarize", str(tmp_path / "other.json")],
                 ["--summarize", str(tmp_path / "bad.json")], [str(tiny_bundle), "--summarize", str(tmp_path / "x")]):
        assert main(["eval", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("argv,match", [
    (["--n", "0"], "--n must be at least 1"),
    (["--steps", "0"], "Steps must be an integer between 1 and 50 (the model's T), got 0."),
    (["--steps", "51"], "Steps must be an integer between 1 and 50"),
    (["--guidance", "-1"], f"Guidance must be a number between 0 and {GUIDANCE_MAX:g}, got -1.0."),
    (["--guidance", "nan"], "Guidance must be a number between 0 and"),
    (["--guidance", "inf"], "Guidance must be a number between 0 and"),
    (["--guidance", "1e308"], f"Guidance must be a number between 0 and {GUIDANCE_MAX:g}, got 1e+308."),
    (["--json", "{tmp}/" + "r" * 300 + ".json"], f"The report file name {'r' * 20}… is 305 bytes long; use at most"),
    (["--save-images", "{tmp}/" + "s" * 300], "(a name in it is too long)."),
    (["--seed", "-3"], f"The seed must be an integer between 0 and {SEED_MAX}, got -3."),
    (["--batch-size", "0"], "Batch must be an integer between 1 and 64, got 0."),
    (["--batch-size", "65"], "Batch must be an integer between 1 and 64, got 65."),
    (["--sampler", "euler"], "invalid choice"),
    (["--json", "{tmp}/missing/r.json"], "does not exist"),
    (["--save-images", "{tmp}/file.txt"], "is not a folder"),
])
def test_cli_bad_input_exits_2_with_one_line(tiny_bundle, tmp_path, capsys, argv, match):
    (tmp_path / "file.txt").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = main(["eval", str(tiny_bundle), "--json", str(tmp_path / "r.json"), *argv]
                if "--json" not in argv else ["eval", str(tiny_bundle), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and match in err, err
    assert not (tmp_path / "r.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # no probe left, no folder made


def test_cli_missing_or_broken_bundle_exits_2(tmp_path, bundle_copy, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no --json: the default report path is in the current folder
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    broken = bundle_copy()
    (broken / "model.json").write_text("{not json")
    assert main(["eval", str(broken), "--n", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_cli_writes_json_by_default_into_the_current_folder(tiny_bundle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["eval", str(tiny_bundle), "--n", "3", "--sampler", "dpmpp-2m", "--steps", "2", "--device", "cpu",
                 "--latency-images", "0"])
    out = capsys.readouterr().out
    assert code == 0
    expected = tmp_path / "eval-tiny-dpmpp-2m-2.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == [expected.name]  # no probe or temp file left
    report = json.loads(expected.read_text())
    assert report["model"] == "tiny" and report["n"] == 3
    assert report["settings"]["sampler"] == "dpmpp-2m" and report["settings"]["steps"] == 2
    assert out.splitlines()[-1] == f"report written to {expected}"
    # without --sampler/--steps the name carries the bundle defaults the run used (ddim, 4)
    assert main(["eval", str(tiny_bundle), "--n", "1", "--device", "cpu", "--latency-images", "0"]) == 0
    assert (tmp_path / "eval-tiny-ddim-4.json").is_file()
    assert capsys.readouterr().out.splitlines()[-1] == f"report written to {tmp_path / 'eval-tiny-ddim-4.json'}"


def test_default_json_name_is_file_safe():
    from diffusion_studio.cli.eval import default_json_path

    report = {"model": "my model/v1 ü", "settings": {"sampler": "ddim", "steps": 20}}
    assert default_json_path(report) == Path("eval-my_model_v1_ü-ddim-20.json")
    assert default_json_path({"model": "../..", "settings": {"sampler": "ddpm", "steps": 5}}) == Path(
        "eval-model-ddpm-5.json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_cli_unwritable_current_folder_exits_2_before_generating(tiny_bundle, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    monkeypatch.chdir(locked)
    assert main(["eval", str(tiny_bundle), "--n", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Cannot write the report into the current folder" in err and "--json" in err


def test_cli_default_report_path_taken_by_a_folder_exits_2(tiny_bundle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "eval-tiny-ddim-1.json").mkdir()
    assert main(["eval", str(tiny_bundle), "--n", "1", "--steps", "1", "--device", "cpu",
                 "--latency-images", "0"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: Cannot write the report to eval-tiny-ddim-1.json: it is a folder; "
                                "pass --json OUT.json."]


def test_cli_without_bundle_evaluates_the_shipped_model(tmp_path, capsys):
    from diffusion_studio.paths import default_model_dir

    out = tmp_path / "r.json"
    code = main(["eval", "--n", "1", "--steps", "1", "--device", "cpu", "--latency-images", "0", "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(out.read_text())
    assert report["bundle"] == str(default_model_dir().resolve())
    assert report["model"] == "shapes" and report["n"] == 1 and report["settings"]["steps"] == 1
    assert captured.out.splitlines()[0].startswith("shapes: ")


def test_cli_without_bundle_and_no_default_model_exits_2(tmp_path, capsys, monkeypatch):
    import diffusion_studio.paths

    default = tmp_path / "not-installed" / "shapes"
    monkeypatch.setattr(diffusion_studio.paths, "default_model_dir", lambda: default)
    assert main(["eval", "--n", "1", "--json", str(tmp_path / "r.json")]) == 2
    assert capsys.readouterr().err == (f"error: The default model is not installed at {default}; "
                                       "pass --model BUNDLE (or reinstall Diffusion Studio).\n")
    assert not (tmp_path / "r.json").exists()


def _valid_report() -> dict:
    """The fields `--summarize` reads, with the types `eval --json` writes."""
    attrs = ("color", "shape", "size", "position", "background")
    return {
        "n": 4, "settings": {"sampler": "ddim", "steps": 2, "guidance": 3.0},
        "timing": {"seconds_per_image": 0.25, "batch_size": 16, "seconds_per_image_batch1": None},
        "attributes": {a: {"accuracy": 0.5, "pass": False, "bar": 0.9} for a in attrs},
        "variety": {a: {"found": 2, "normalized_entropy": 0.75} for a in ("size", "position", "background")},
    }


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("n", "4", "'n' must be an integer, got text"),
    ("n", True, "'n' must be an integer, got true or false"),
    ("settings", [], "'settings' must be an object, got a list"),
    ("settings.guidance", "3", "'settings.guidance' must be a number, got text"),
    ("timing", 1.5, "'timing' must be an object, got a number"),
    ("timing.seconds_per_image", None, "'timing.seconds_per_image' must be a number, got null"),
    ("timing.seconds_per_image_batch1", "fast", "'timing.seconds_per_image_batch1' must be a number or null, got text"),
    ("attributes", [1, 2], "'attributes' must be an object, got a list"),
    ("attributes.color", 0.9, "'attributes.color' must be an object, got a number"),
    ("attributes.shape.accuracy", "90%", "'attributes.shape.accuracy' must be a number or null, got text"),
    ("attributes.size.pass", "yes", "'attributes.size.pass' must be true or false, got text"),
    ("attributes.background.bar", None, "'attributes.background.bar' must be a number, got null"),
    ("variety.size", None, "'variety.size' must be an object, got null"),
    ("variety.position.found", 2.5, "'variety.position.found' must be an integer, got a number"),
    ("variety.background.normalized_entropy", {}, "'variety.background.normalized_entropy' must be a number, "
                                                  "got an object"),
])
def test_cli_summarize_report_with_wrong_types_exits_2_one_sentence(tmp_path, capsys, field, value, problem):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(_valid_report()))
    report = _valid_report()
    *parents, last = field.split(".")
    target = report
    for key in parents:
        target = target[key]
    target[last] = value
    bad.write_text(json.dumps(report))
    assert main(["eval", "--summarize", str(good)]) == 0  # the unbroken report summarizes
    assert "| ddim | 2 | 3 | 4 |" in capsys.readouterr().out
    assert main(["eval", "--summarize", str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [f"error: {bad} is not a valid evaluation report: the field {problem}."]


def test_cli_summarize_report_missing_a_field_exits_2(tmp_path, capsys):
    report = _valid_report()
    del report["attributes"]["position"]
    (tmp_path / "r.json").write_text(json.dumps(report))
    assert main(["eval", "--summarize", str(tmp_path / "r.json")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'r.json'} is not a complete evaluation report: "
                                       "the field 'attributes.position.accuracy' is missing.\n")


def test_cli_summarize_deeply_nested_json_exits_2(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["eval", "--summarize", str(deep)]) == 2
    assert capsys.readouterr().err == f"error: {deep} is not a JSON evaluation report.\n"


def test_two_objects_and_background_fidelity_with_an_oracle():
    """An oracle that renders each prompt's own facts binds every pair and keeps every background."""
    from diffusion_studio.core.shape_pairs import render_pair
    from diffusion_studio.core.shapes import render
    from diffusion_studio.eval.evaluate import evaluate, evaluate_pairs
    from diffusion_studio.eval.pairs import draw_pair_prompts
    from diffusion_studio.eval.prompts import draw_prompts

    singles = draw_prompts(40, seed=2)
    by_prompt = {p.prompt: render(p.spec) for p in singles}
    report = evaluate(lambda prompts, seeds: np.stack([by_prompt[t] for t in prompts]), singles)
    fid = report["background_fidelity"]
    assert fid["n"] == 40 and fid["within_tolerance"] == 1.0 and fid["error_p95"] <= 12
    pairs = draw_pair_prompts(24, seed=2)
    by_pair = {p.prompt: render_pair(p.pair) for p in pairs}
    swapped = {p.prompt: render_pair(type(p.pair)(p.pair.second, p.pair.first)) for p in pairs}
    assert evaluate_pairs(lambda t, s: np.stack([by_pair[x] for x in t]), pairs)["bound_rate"] == 1.0
    # the same two nouns in the other corners are still bound (binding is about words, not places)
    assert evaluate_pairs(lambda t, s: np.stack([swapped[x] for x in t]), pairs)["bound_rate"] == 1.0


def test_cli_two_objects_report_and_table(tiny_bundle, tmp_path, capsys):
    out, images = tmp_path / "report.json", tmp_path / "imgs"
    code = main(["eval", str(tiny_bundle), "--n", "2", "--two-objects", "3", "--steps", "2", "--device", "cpu",
                 "--json", str(out), "--save-images", str(images), "--latency-images", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(out.read_text())
    pairs = report["two_objects"]
    assert pairs["n"] == 3 and len(pairs["samples"]) == 3 and pairs["bound_rate"] == 0.0  # untrained
    assert sorted(p.name for p in images.glob("pair-*.png")) == [f"pair-{i:04d}.png" for i in range(3)]
    assert "two objects (3 prompts" in captured.out and "background fidelity (two objects)" in captured.out
    assert main(["eval", str(tiny_bundle), "--two-objects", "-1"]) == 2
    assert "--two-objects must be between 0 and 100000" in capsys.readouterr().err
