"""The Train workspace's headless side: command lines, events, outcomes, export summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffusion_studio.errors import UsageError
from diffusion_studio.ui.train import run as ts
from diffusion_studio.ui.train.run import ExportSummary, TrainForm, TrainRun

START = {"event": "start", "time": 1.0, "step": 0, "steps": 12, "run_dir": "/r", "parameters": 343683,
         "flops_per_forward": 43079680, "device": "cpu", "bf16": False, "resumed": False}


def _progress(step: int, loss: float, steps: int = 12) -> dict:
    return {"event": "progress", "time": 2.0, "step": step, "steps": steps, "eta_s": 1.5, "loss": loss,
            "bucket_loss": [None, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1], "lr": 1e-3,
            "images_per_s": 80.0, "steps_per_min": 600.0}


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
    assert ts.checkpoints_in(run) == [run / "checkpoints" / "step-00000010.safetensors"]


def test_form_round_trips_and_survives_stale_settings(tmp_path: Path) -> None:
    form = TrainForm(dataset="folder", folder="/x", preset="gpu", steps=10, out="/o", resume=True, threads=2)
    assert TrainForm.from_dict(json.loads(json.dumps(form.to_dict()))) == form
    stale = {"preset": "gpu", "steps": "many", "resume": "yes", "unknown": 1, "device": "cpu"}
    assert TrainForm.from_dict(stale) == TrainForm(preset="gpu", device="cpu")
    assert TrainForm.from_dict({"preset": "nope"}) == TrainForm()


def test_events_fold_into_the_run() -> None:
    run = TrainRun()
    lines = [json.dumps(START), "some warning text", json.dumps(_progress(10, 0.9)), "{not json",
             json.dumps({"event": "sample", "step": 12, "sample_grid": "/r/samples/step-00000012.png",
                         "prompts": ["a red circle", "a blue square"]}),
             json.dumps(_progress(12, 0.5)),
             json.dumps({"event": "checkpoint", "step": 12, "checkpoint": "/r/checkpoints/step-00000012.safetensors"}),
             json.dumps({"event": "done", "step": 12, "done": True,
                         "checkpoint": "/r/checkpoints/step-00000012.safetensors"})]
    kinds = []
    for line in lines:
        event = ts.parse_event(line)
        if event is not None:
            kinds.append(run.apply(event))
    assert kinds == ["start", "progress", "sample", "progress", "checkpoint", "done"]
    assert run.losses == [(10, 0.9), (12, 0.5)] and run.steps == 12 and run.step == 12
    assert run.bucket_loss[0] is None and run.bucket_loss[-1] == 0.1
    assert (run.sample_grid, run.sample_step) == ("/r/samples/step-00000012.png", 12)
    assert run.sample_prompts == ["a red circle", "a blue square"]
    assert run.checkpoint.endswith("step-00000012.safetensors") and run.outcome == "done"
    assert (run.parameters, run.device, run.lr, run.images_per_s) == (343683, "cpu", 1e-3, 80.0)
    assert ts.parse_event('{"event": "unknown"}') is None and ts.parse_event("[1]") is None


def test_outcomes_are_one_sentence(tmp_path: Path) -> None:
    done = TrainRun(step=12, steps=12, outcome="done", checkpoint="/r/c.safetensors")
    assert ts.train_outcome(done, 0, False, [], False) == (
        "done", "Training finished after 12 steps. Last checkpoint: /r/c.safetensors.")
    stopped = TrainRun(step=40, steps=300, outcome="stopped", checkpoint="/r/s.safetensors")
    kind, text = ts.train_outcome(stopped, 0, False, ["stopped at step 40; continue with --resume"], True)
    assert kind == "stopped" and "step 40" in text and "Resume" in text
    bad = ["error: The folder dataset is not implemented yet; use --dataset shapes."]
    assert ts.train_outcome(TrainRun(), 2, False, bad, False) == (
        "error", "The folder dataset is not implemented yet; use --dataset shapes.")
    traceback = ["Traceback (most recent call last):", '  File "x.py", line 1', "RuntimeError: boom"]
    assert ts.train_outcome(TrainRun(), 1, False, traceback, False) == ("error", "Training failed: RuntimeError: boom")
    failed = TrainRun(outcome="error", error="The loss became nan at step 7; lower --lr and start again.")
    assert ts.train_outcome(failed, 2, False, ["error: The loss became nan at step 7; lower --lr and start "
                                               "again."], False)[1].startswith("The loss became nan")
    assert ts.train_outcome(TrainRun(step=3), 9, True, [], True)[0] == "stopped"  # killed after Stop
    assert ts.train_outcome(TrainRun(), 9, True, [], False)[0] == "error"  # killed by someone else


def test_export_arguments_summary_and_outcome(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(UsageError, match="no checkpoint"):
        ts.export_arguments(run, tmp_path / "bundle")
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step-00000006.safetensors").write_bytes(b"")
    assert ts.export_arguments(run, tmp_path / "b", force=True) == [
        "-m", "exporter", str(run), "--out", str(tmp_path / "b"), "--force"]
    assert ts.default_bundle_dir(run) == tmp_path / "run-bundle"
    summary = ExportSummary()
    for line in ["loading /r (ema weights)", "parity vs PyTorch (fp32 bound 0.0001 max |Δε|): PASSED",
                 "  unet.onnx  CPUExecutionProvider  max 8.38e-09", "wrote /b (unet.onnx, validation.json; …)"]:
        summary.add(line)
    assert summary.text() == "parity vs PyTorch (fp32 bound 0.0001 max |Δε|): PASSED\nwrote /b (unet.onnx, " \
                             "validation.json; …)"
    assert ts.export_outcome(0, False, [], tmp_path / "b") == (True, f"Exported the model bundle to {tmp_path / 'b'}.")
    assert ts.export_outcome(2, False, ["error: The bundle folder /b already exists."], tmp_path) == (
        False, "The bundle folder /b already exists.")


def test_loss_history_of_a_run_folder(tmp_path: Path) -> None:
    lines = [START, _progress(10, 0.8), {"event": "checkpoint", "step": 10, "checkpoint": "c"}, _progress(20, 0.6)]
    (tmp_path / "events.jsonl").write_text("\n".join(json.dumps(e) for e in lines) + '\n{"event": "prog')
    assert ts.loss_history(tmp_path) == [(10, 0.8), (20, 0.6)]
    assert ts.loss_history(tmp_path / "missing") == []


def test_child_environment_finds_our_packages_anywhere(tmp_path: Path) -> None:
    env = ts.child_environment({"PATH": os.environ.get("PATH", ""), "PYTHONPATH": "/elsewhere"})
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ts.project_root()), "/elsewhere"]
    code = "import diffusion_studio, exporter, sys; print(diffusion_studio.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve().parent.parent == ts.project_root()


def test_the_gui_never_imports_torch(tmp_path: Path) -> None:
    code = ("import sys; import diffusion_studio.ui.main_window, diffusion_studio.ui.train.workspace; "
            "print('torch' in sys.modules)")
    env = ts.child_environment({"PATH": os.environ.get("PATH", ""), "QT_QPA_PLATFORM": "offscreen"})
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
