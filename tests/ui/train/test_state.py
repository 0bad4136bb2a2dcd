"""TrainState headless: the trainer's lines (emitted on its process's signals, no child process
needed) become events, sentences and outcomes on the state's signals."""

from __future__ import annotations

import json
from pathlib import Path

from diffusion_studio.ui.train.settings import TrainForm
from diffusion_studio.ui.train.state import TrainState


def _record(state: TrainState) -> dict[str, list]:
    seen: dict[str, list] = {"events": [], "messages": [], "log": [], "finished": [], "errors": []}
    state.eventApplied.connect(seen["events"].append)
    state.message.connect(lambda text, error: seen["messages"].append((text, error)))
    state.logLine.connect(seen["log"].append)
    state.trainingFinished.connect(lambda kind, text: seen["finished"].append((kind, text)))
    state.errorOccurred.connect(lambda title, text: seen["errors"].append((title, text)))
    return seen


def test_a_refused_form_starts_nothing_and_says_why(tmp_path: Path) -> None:
    state = TrainState()
    seen = _record(state)
    assert not state.start_training(TrainForm(out=""))
    assert seen["errors"] == [("Cannot start training", "Choose an output run folder.")]
    assert seen["messages"] == [("Choose an output run folder.", True)]
    assert not state.is_busy() and state.busy_description() == ""
    assert not state.start_export(tmp_path / "run", str(tmp_path / "bundle"))
    assert seen["errors"][-1][0] == "Cannot export" and "no checkpoint" in seen["errors"][-1][1]


def test_trainer_lines_become_events_and_one_outcome(tmp_path: Path) -> None:
    state = TrainState()
    seen = _record(state)
    lines = ["Loading the text encoder…",
             json.dumps({"event": "start", "step": 0, "steps": 20, "parameters": 1000, "device": "cpu"}),
             json.dumps({"event": "progress", "step": 10, "steps": 20, "loss": 0.5, "bucket_loss": [0.9, None]}),
             json.dumps({"event": "checkpoint", "step": 10, "checkpoint": "/r/checkpoints/step-00000010.safetensors"}),
             json.dumps({"event": "done", "step": 20, "checkpoint": "/r/checkpoints/step-00000020.safetensors"})]
    for line in lines:
        state.trainProcess.stdoutLine.emit(line)
    state.trainProcess.stderrLine.emit("a warning")
    state.trainProcess.finished.emit(0, False)
    assert seen["events"] == ["start", "progress", "checkpoint", "done"]
    assert state.run.losses == [(10, 0.5)] and state.run.bucket_loss == [0.9, None] and state.run.step == 20
    assert seen["log"][:1] == ["Loading the text encoder…"] and "a warning" in seen["log"]
    (kind, text), = seen["finished"]
    assert kind == "done" and text.startswith("Training finished after 20 steps.")
    assert seen["messages"][-1] == (text, False) and seen["errors"] == []

    state.trainProcess.stderrLine.emit("error: The dataset folder holds no images.")
    state.trainProcess.finished.emit(2, False)  # the CLI refused its input: exit 2 and one line
    assert seen["finished"][-1] == ("error", "The dataset folder holds no images.")
    assert seen["errors"] == [("Training failed", "The dataset folder holds no images.")]


def test_the_desktop_build_says_training_needs_the_pip_install(tmp_path: Path, monkeypatch) -> None:
    import sys

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    state = TrainState()
    seen = _record(state)
    assert not state.start_training(TrainForm(out=str(tmp_path / "run")))
    assert not state.start_export(tmp_path / "run", str(tmp_path / "bundle"))
    assert [title for title, _ in seen["errors"]] == ["Cannot start training", "Cannot export"]
    assert all("pip install" in text and "\n" not in text for _, text in seen["errors"])
    assert not state.is_busy()
