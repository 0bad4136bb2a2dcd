"""A run as the Train tab sees it: the trainer's events folded into TrainRun, outcomes, export summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from diffusion_studio.ui.train import run as ts
from diffusion_studio.ui.train.run import ExportSummary, TrainRun

START = {"event": "start", "time": 1.0, "step": 0, "steps": 12, "run_dir": "/r", "parameters": 343683,
         "flops_per_forward": 43079680, "device": "cpu", "bf16": False, "resumed": False}


def _progress(step: int, loss: float, steps: int = 12) -> dict:
    return {"event": "progress", "time": 2.0, "step": step, "steps": steps, "eta_s": 1.5, "loss": loss,
            "bucket_loss": [None, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1], "lr": 1e-3,
            "images_per_s": 80.0, "steps_per_min": 600.0}


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


def test_export_summary_and_outcome(tmp_path: Path) -> None:
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


def test_eta_follows_the_wall_clock_from_the_start_event() -> None:
    # The trainer's eta_s counts only its updates; sample grids and checkpoints take time too.
    run = TrainRun()
    run.apply(START, now=100.0)
    run.apply(_progress(3, 0.9), now=106.0)  # 2 s per step on the wall clock, the trainer says 1.5 s left
    assert run.eta_s == 18.0  # 9 steps left at 2 s
    run.apply(_progress(6, 0.8), now=109.0)  # faster now: 1.5 s per step since the start
    assert run.eta_s == 9.0
    early = TrainRun()
    early.apply(_progress(3, 0.9), now=1.0)  # no start event seen: the trainer's estimate
    assert early.eta_s == 1.5


def test_noise_grids_are_told_from_learned_images(tmp_path: Path) -> None:
    from diffusion_studio.core.images import make_grid, to_uint8
    from diffusion_studio.core.shapes import sample_example

    rng = np.random.default_rng(0)

    def grid(images: np.ndarray) -> np.ndarray:
        return make_grid(images, padding=2, fill=255).repeat(2, axis=0).repeat(2, axis=1)  # as samples.write_grid

    noise = to_uint8(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    shapes = np.stack([sample_example(rng)[0] for _ in range(4)])
    assert ts.looks_like_noise(grid(noise)) and not ts.looks_like_noise(grid(shapes))
    assert not ts.looks_like_noise(np.zeros((1, 1, 3), np.uint8))
    assert ts.latest_sample_grid(tmp_path) is None
    (tmp_path / "samples").mkdir()
    for step in (0, 150, 300):
        (tmp_path / "samples" / f"step-{step:08d}.png").write_bytes(b"")
    latest = ts.latest_sample_grid(tmp_path)
    assert latest is not None and latest.name == "step-00000300.png" and ts.grid_step(latest) == 300
