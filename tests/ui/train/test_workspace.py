"""The Train tab with real child processes: a tiny training run, Stop and Resume, bad input, export.

Every run is `python -m diffusion_studio train … --json` with the cpu-quick preset at 16×16,
batch 2-4 and one thread, so each takes a few seconds (mostly importing torch). A fixture
stops any process a test leaves behind and fails the test if one was still running.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from diffusion_studio.ui.train.settings import TrainForm, checkpoints_in
from diffusion_studio.ui.train.workspace import TrainWorkspace

RUN_TIMEOUT_MS = 120_000


def _tiny_form(out: Path, **changes: object) -> TrainForm:
    values: dict[str, object] = dict(preset="cpu-quick", steps=12, batch_size=4, image_size=16, out=str(out),
                                     sample_every=6, checkpoint_every=6, threads=1, device="cpu")
    values.update(changes)
    return TrainForm(**values)  # type: ignore[arg-type]


def _no_process_left(ws: TrainWorkspace) -> None:
    running = [p.objectName() for p in (ws.trainProcess, ws.exportProcess) if p.is_running()]
    ws.shutdown(5000)
    assert not running, f"test left processes running: {running}"


@pytest.fixture
def workspace(qtbot, tmp_path: Path):
    made: list[TrainWorkspace] = []

    def make() -> TrainWorkspace:
        ws = TrainWorkspace(tmp_path / "runs")
        qtbot.addWidget(ws)
        ws.resize(1200, 760)
        ws.show()
        made.append(ws)
        return ws

    yield make
    for ws in made:
        _no_process_left(ws)


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _buttons(ws: TrainWorkspace) -> tuple[bool, bool, bool]:
    p = ws.panel
    return p.trainStartButton.isEnabled(), p.trainStopButton.isEnabled(), p.exportButton.isEnabled()


def test_tiny_training_run_fills_plot_progress_samples_and_checkpoint(qtbot, workspace, tmp_path) -> None:
    ws = workspace()
    run_dir = tmp_path / "runs" / "tiny"
    ws.set_form(_tiny_form(run_dir))
    assert _buttons(ws) == (True, False, False)  # nothing to stop or export yet
    with qtbot.waitSignal(ws.trainProcess.started, timeout=10_000):
        qtbot.mouseClick(ws.panel.trainStartButton, Qt.MouseButton.LeftButton)
    assert ws.is_training() and _buttons(ws) == (False, True, False)
    assert not ws.panel.presetCombo.isEnabled()  # the form is locked while it runs
    with qtbot.waitSignal(ws.trainingFinished, timeout=RUN_TIMEOUT_MS) as finished:
        pass
    kind, message = finished.args
    assert kind == "done", message
    assert not ws.is_training() and _buttons(ws) == (True, False, True)

    events = _events(run_dir)
    logged = [(e["step"], e["loss"]) for e in events if e["event"] == "progress"]
    assert [s for s, _ in logged] == [10, 12]  # log_every = 10, and the last step
    np.testing.assert_allclose(np.array(ws.lossPlot.points(), dtype=float), np.array(logged, dtype=float), rtol=1e-6)
    assert ws.lossPlot.bucket_loss() == [e for e in events if e["event"] == "progress"][-1]["bucket_loss"]
    checkpoint = run_dir / "checkpoints" / "step-00000012.safetensors"
    assert checkpoint.is_file()
    assert str(checkpoint) in ws.view.checkpointLabel.text() and str(checkpoint) in message
    bar = ws.view.progressBar
    assert (bar.value(), bar.maximum()) == (12, 12) and "Done" in bar.format()
    sampled = [e["step"] for e in events if e["event"] == "sample"]
    assert sampled == [0, 6, 12]  # a first grid at once (the untrained net: noise), then at the interval
    with Image.open(run_dir / "samples" / "step-00000012.png") as im:
        grid = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(ws.view.sampleView.image_array(), grid)  # the latest sample grid
    assert ws.view.sampleBox.title() == "Samples at step 12"
    assert ws.view.promptsLabel.text().count("Row ") == 2  # 4 prompts: a 2 x 2 grid
    assert "a large red circle in the top left on a black background" in ws.view.sampleView.toolTip()
    assert "images/s" in ws.view.statsLabel.text() and "parameters" in ws.view.statsLabel.text()


def test_stop_mid_run_checkpoints_and_resume_continues(qtbot, workspace, tmp_path) -> None:
    ws = workspace()
    run_dir = tmp_path / "runs" / "long"
    ws.set_form(_tiny_form(run_dir, steps=3000, batch_size=2, sample_every=0, checkpoint_every=1000))
    assert ws.start_training()
    qtbot.waitUntil(lambda: len(ws.lossPlot.points()) >= 1, timeout=RUN_TIMEOUT_MS)  # past step 10
    with qtbot.waitSignal(ws.trainingFinished, timeout=RUN_TIMEOUT_MS) as finished:
        qtbot.mouseClick(ws.panel.trainStopButton, Qt.MouseButton.LeftButton)
        assert not ws.panel.trainStopButton.isEnabled()  # stopping
    kind, message = finished.args
    assert kind == "stopped", message
    assert not ws.is_training() and not ws.trainProcess.forceKillTimer.isActive()
    stopped_at = ws.run.step
    assert 10 <= stopped_at < 3000
    assert checkpoints_in(run_dir)[-1].name == f"step-{stopped_at:08d}.safetensors"
    assert _events(run_dir)[-1]["event"] == "stopped"
    history = list(ws.lossPlot.points())

    ws.panel.resumeCheck.setChecked(True)
    ws.panel.stepsSpin.setValue(stopped_at + 2)
    with qtbot.waitSignal(ws.trainingFinished, timeout=RUN_TIMEOUT_MS) as finished:
        assert ws.start_training()
    assert finished.args[0] == "done", finished.args[1]
    assert ws.run.start_step == stopped_at and ws.run.step == stopped_at + 2
    points = ws.lossPlot.points()
    assert points[: len(history)] == history and points[-1][0] == stopped_at + 2  # the curve goes on


def test_bad_input_shows_the_one_line_error(qtbot, workspace, tmp_path) -> None:
    ws = workspace()
    empty = tmp_path / "no-images"
    empty.mkdir()
    ws.set_form(_tiny_form(tmp_path / "runs" / "bad", dataset="folder", folder=str(empty)))
    with qtbot.waitSignal(ws.errorOccurred, timeout=RUN_TIMEOUT_MS) as error:
        assert ws.start_training()  # the form is fine; the trainer refuses the dataset
    title, message = error.args
    stderr = [line for line in ws.state.stderr_lines if line.strip()]
    assert stderr and stderr[-1] == f"error: {message}"  # exactly the CLI's line (exit code 2)
    assert "\n" not in message and "Traceback" not in message and "folder" in message.lower()
    assert ws.view.message() == message and "font-weight: bold" in ws.view.messageLabel.styleSheet()
    assert not ws.is_training() and _buttons(ws) == (True, False, False)
    assert not checkpoints_in(tmp_path / "runs" / "bad")

    ws.panel.outEdit.setText("")  # refused by the form itself: no process at all
    with qtbot.waitSignal(ws.errorOccurred) as error:
        assert not ws.start_training()
    assert error.args[1] == "Choose an output run folder." and not ws.is_training()


@pytest.mark.slow
def test_export_of_a_tiny_run_opens_in_generate(qtbot, make_window, tmp_path, monkeypatch) -> None:
    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "critical", staticmethod(lambda _p, title, text, *a, **k: shown.append(text)))
    window = make_window()
    ws = window.trainWorkspace
    assert window.workspace("Train") is ws
    run_dir = tmp_path / "runs" / "tiny"
    ws.set_form(_tiny_form(run_dir, steps=4, sample_every=0, checkpoint_every=4))
    bundle = tmp_path / "runs" / "tiny-bundle"
    assert ws.panel.bundle_dir() == str(bundle)  # follows the run folder
    try:
        with qtbot.waitSignal(ws.trainingFinished, timeout=RUN_TIMEOUT_MS) as finished:
            assert ws.start_training()
        assert finished.args[0] == "done", finished.args[1]
        assert ws.panel.exportButton.isEnabled() and not ws.panel.openBundleButton.isEnabled()
        with qtbot.waitSignal(ws.exportFinished, timeout=RUN_TIMEOUT_MS) as exported:
            qtbot.mouseClick(ws.panel.exportButton, Qt.MouseButton.LeftButton)
            assert ws.is_exporting() and not ws.panel.trainStartButton.isEnabled()
        ok, message = exported.args
        assert ok, message
        assert (bundle / "model.json").is_file() and (bundle / "unet.onnx").is_file()
        spec = json.loads((bundle / "model.json").read_text())
        assert spec["image"]["size"] == 16 and spec["provenance"]["step"] == 4
        summary = ws.view.exportSummaryLabel.text()
        assert "PASSED" in summary and f"wrote {bundle}" in summary
        assert ws.panel.openBundleButton.isEnabled()
        qtbot.mouseClick(ws.panel.openBundleButton, Qt.MouseButton.LeftButton)
        assert window.model() is not None and window.model().folder == bundle.resolve()
        assert window.tabs.currentWidget() is window.generateWorkspace
        assert shown == []
    finally:
        _no_process_left(ws)


def test_closing_the_window_asks_then_stops_training(qtbot, make_window, tmp_path, monkeypatch) -> None:
    answers: list[QMessageBox.StandardButton] = [QMessageBox.StandardButton.No]
    asked: list[str] = []

    def question(_parent, _title, text, *args, **kwargs):
        asked.append(text)
        return answers[0]

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    window = make_window()
    window.show()
    ws = window.trainWorkspace
    run_dir = tmp_path / "runs" / "closing"
    ws.set_form(_tiny_form(run_dir, steps=3000, batch_size=2, sample_every=0, checkpoint_every=1000))
    try:
        assert ws.start_training()
        qtbot.waitUntil(lambda: ws.run.steps == 3000, timeout=RUN_TIMEOUT_MS)  # the trainer has started
        window.close()
        assert len(asked) == 1 and "Training is running" in asked[0]
        assert window.isVisible() and ws.is_training()  # "No": nothing happened
        answers[0] = QMessageBox.StandardButton.Yes
        window.close()
        assert not window.isVisible() and not ws.is_training()
        assert ws.run.outcome == "stopped" and checkpoints_in(run_dir)  # stopped cleanly, with a checkpoint
    finally:
        _no_process_left(ws)
