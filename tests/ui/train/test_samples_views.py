"""The Train tab's EMA and raw sample grids side by side, their prompts, and the checkpoint list.

One real tiny run (`python -m diffusion_studio train` in a child process, cpu-quick at 16×16,
8 steps, a grid pair every 4 steps, a checkpoint every 4), plus run folders written by hand for opening
a folder, the export command of a chosen checkpoint and the layout at small and large sizes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPoint, Qt

from diffusion_studio.ui.train.run import latest_sample_grid, prompt_rows, run_checkpoints
from diffusion_studio.ui.train.settings import TrainForm
from diffusion_studio.ui.train.state import export_source_arguments
from diffusion_studio.ui.train.workspace import TrainWorkspace
from exporter.cli import _export_parser

RUN_TIMEOUT_MS = 120_000
PROMPTS = ["a red circle", "a blue square", "a green triangle"]


def _png(path: Path | str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _painted_pixel(view, x: int, y: int, size: int) -> tuple[int, int, int]:
    """The colour the view painted where image pixel (x, y) of a size × size image lands."""
    rect = view.image_rect()
    point = QPoint(int(rect.left() + (x + 0.5) * rect.width() / size),
                   int(rect.top() + (y + 0.5) * rect.height() / size))
    color = view.grab().toImage().pixelColor(point)
    return color.red(), color.green(), color.blue()


@pytest.fixture
def workspace(qtbot, tmp_path: Path):
    made: list[TrainWorkspace] = []

    def make(size: tuple[int, int] = (1400, 900)) -> TrainWorkspace:
        ws = TrainWorkspace(tmp_path / "runs")
        qtbot.addWidget(ws)
        ws.resize(*size)
        ws.show()
        made.append(ws)
        return ws

    yield make
    for ws in made:
        running = [p.objectName() for p in (ws.trainProcess, ws.exportProcess) if p.is_running()]
        ws.shutdown(5000)
        assert not running, f"test left processes running: {running}"


def _hand_made_run(run: Path, steps: tuple[int, ...] = (4, 8, 12)) -> None:
    """A run folder as the trainer leaves it: config.json, checkpoints with sidecars, EMA and raw grids."""
    (run / "checkpoints").mkdir(parents=True)
    (run / "samples").mkdir()
    (run / "config.json").write_text(json.dumps({"sample_prompts": PROMPTS}))
    for i, step in enumerate(steps):
        base = run / "checkpoints" / f"step-{step:08d}"
        base.with_suffix(".safetensors").write_bytes(b"")
        metrics = {"loss": 0.5 / (i + 1)} if i else {}  # the first was written before any loss was logged
        base.with_suffix(".json").write_text(json.dumps({"step": step, "metrics": metrics}))
        os.utime(base.with_suffix(".safetensors"), (1_700_000_000 + i, 1_700_000_000 + i))
        ema = np.full((132, 132, 3), 40 * i, np.uint8)  # 2 x 2 tiles of 32 px, upscaled 2x (cpu-quick)
        Image.fromarray(ema).save(run / "samples" / f"step-{step:08d}.png")
        Image.fromarray(255 - ema).save(run / "samples" / f"step-{step:08d}-raw.png")
    (run / "checkpoints" / "step-00000016.safetensors").write_bytes(b"")  # no sidecar yet: not listed


def test_prompt_rows_follow_the_grid_layout() -> None:
    assert prompt_rows(PROMPTS) == ["Row 1: 1. a red circle · 2. a blue square", "Row 2: 3. a green triangle"]
    assert prompt_rows(PROMPTS, columns=3) == ["Row 1: 1. a red circle · 2. a blue square · 3. a green triangle"]
    assert len(prompt_rows([f"p{i}" for i in range(8)])) == 3  # ⌈√8⌉ = 3 columns
    assert prompt_rows([""]) == ["Row 1: 1. (empty prompt)"]


def test_run_folder_helpers(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _hand_made_run(run)
    assert latest_sample_grid(run) == run / "samples" / "step-00000012.png"
    assert latest_sample_grid(run, raw=True) == run / "samples" / "step-00000012-raw.png"
    found = run_checkpoints(run)
    assert [(c.step, c.loss) for c in found] == [(4, None), (8, 0.25), (12, 0.5 / 3)]
    assert found[0].path == run / "checkpoints" / "step-00000004.safetensors"
    assert run_checkpoints(tmp_path / "missing") == []


def test_export_arguments_of_a_chosen_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _hand_made_run(run)
    chosen = run / "checkpoints" / "step-00000008.safetensors"
    bundle = str(tmp_path / "b")
    assert export_source_arguments(run, bundle) == ["-m", "exporter", str(run), "--out", bundle]
    args = export_source_arguments(run, bundle, force=True, checkpoint=chosen, weights="raw")
    assert args == ["-m", "exporter", str(chosen), "--out", bundle, "--force", "--weights", "raw"]
    parsed = _export_parser().parse_args(args[2:])  # the exporter accepts exactly this
    assert (parsed.source, parsed.weights, parsed.force) == (chosen, "raw", True)
    with pytest.raises(Exception, match="is gone"):
        export_source_arguments(run, bundle, checkpoint=run / "checkpoints" / "step-00000002.safetensors")


def test_opening_a_run_folder_lists_its_checkpoints_and_grids(workspace, tmp_path: Path) -> None:
    ws = workspace()
    view = ws.view
    assert view.checkpoints() == [] and view.emaSamplesView.image_array() is None
    run = tmp_path / "runs" / "old"
    _hand_made_run(run)
    ws.panel.outEdit.setText(str(run))
    assert [c.step for c in view.checkpoints()] == [12, 8, 4]  # newest first
    rows = [[view.checkpointList.topLevelItem(i).text(c) for c in range(3)] for i in range(3)]
    assert [r[:2] for r in rows] == [["12", "0.1667"], ["8", "0.2500"], ["4", "–"]]
    assert all(len(r[2]) >= 8 for r in rows)  # a time
    np.testing.assert_array_equal(view.emaSamplesView.image_array(), _png(run / "samples" / "step-00000012.png"))
    np.testing.assert_array_equal(view.rawSamplesView.image_array(), _png(run / "samples" / "step-00000012-raw.png"))
    assert view.sampleBox.title() == "Samples at step 12"
    assert view.promptsLabel.text() == "Row 1: 1. a red circle · 2. a blue square\nRow 2: 3. a green triangle"
    assert view.exportCheckpointButton.isEnabled()
    assert view.exportSourceLabel.text() == "Export writes the newest (step 12), EMA weights."
    # a new checkpoint appears: the list follows, the selection stays
    view.select_checkpoint(8)
    _hand_made_run(tmp_path / "runs" / "more", (4, 8, 12, 16))
    ws.panel.outEdit.setText(str(tmp_path / "runs" / "more"))
    assert [c.step for c in view.checkpoints()] == [16, 12, 8, 4] and view.selected_checkpoint() is None
    view.select_checkpoint(8)
    (tmp_path / "runs" / "more" / "checkpoints" / "step-00000004.json").unlink()  # pruned
    ws.refresh_checkpoints()
    assert [c.step for c in view.checkpoints()] == [16, 12, 8] and view.selected_checkpoint().step == 8
    # a folder without a run: nothing listed or shown
    ws.panel.outEdit.setText(str(tmp_path / "runs" / "new"))
    assert view.checkpoints() == [] and view.emaSamplesView.image_array() is None
    assert not view.exportCheckpointButton.isEnabled() and not view.promptsScroll.isVisibleTo(view)


def test_exporting_a_selected_checkpoint_passes_it_to_the_exporter(qtbot, workspace, tmp_path, monkeypatch) -> None:
    ws = workspace()
    run = tmp_path / "runs" / "old"
    _hand_made_run(run)
    ws.panel.outEdit.setText(str(run))
    started: list[list[str]] = []
    monkeypatch.setattr(ws.exportProcess, "start", lambda arguments: started.append(arguments))
    ws.view.select_checkpoint(8)
    ws.view.exportWeightsCombo.setCurrentIndex(ws.view.exportWeightsCombo.findData("raw"))
    assert ws.view.exportSourceLabel.text() == "Export writes step 8, raw weights."
    qtbot.mouseClick(ws.view.exportCheckpointButton, Qt.MouseButton.LeftButton)
    chosen = run / "checkpoints" / "step-00000008.safetensors"
    assert started == [["-m", "exporter", str(chosen), "--out", ws.panel.bundle_dir(), "--weights", "raw"]]
    assert f"Exporting {chosen} (raw weights)" in ws.view.message()
    # the form's Export button does the same; with nothing selected, the run folder (its newest)
    ws.view.select_checkpoint(None)
    ws.view.exportWeightsCombo.setCurrentIndex(0)
    qtbot.mouseClick(ws.panel.exportButton, Qt.MouseButton.LeftButton)
    assert started[-1] == ["-m", "exporter", str(run), "--out", ws.panel.bundle_dir()]


@pytest.mark.parametrize(("size", "grid_px"), [((940, 540), 90), ((1920, 1080), 264)])
def test_grids_titles_and_list_are_readable(workspace, tmp_path: Path, size: tuple[int, int], grid_px: int) -> None:
    """At the smallest window (960 × 620 less tabs and status bar) and at full HD."""
    ws = workspace(size)
    run = tmp_path / "runs" / "old"
    _hand_made_run(run)
    ws.panel.outEdit.setText(str(run))
    view = ws.view
    for title, grid in ((view.emaSamplesTitle, view.emaSamplesView), (view.rawSamplesTitle, view.rawSamplesView)):
        rect = grid.image_rect()
        assert min(rect.width(), rect.height()) >= grid_px, (size, rect)
        assert title.isVisible() and title.height() >= title.heightForWidth(title.width())  # not cut
    assert view.emaSamplesTitle.text() == "EMA weights (exported by default)"
    assert view.rawSamplesTitle.text() == "Raw weights"
    left, right = view.emaSamplesView.mapTo(view, view.emaSamplesView.rect().center()), \
        view.rawSamplesView.mapTo(view, view.rawSamplesView.rect().center())
    assert abs(left.y() - right.y()) <= 1 and left.x() < right.x()  # side by side
    tree = view.checkpointList
    row = tree.visualItemRect(tree.topLevelItem(0)).height()
    assert tree.viewport().height() >= 3 * row  # the three checkpoints fit
    assert view.promptsScroll.height() >= view.promptsLabel.fontMetrics().lineSpacing() * 2


def test_a_real_run_shows_differing_ema_and_raw_grids_and_its_checkpoints(qtbot, workspace, tmp_path) -> None:
    ws = workspace()
    run_dir = tmp_path / "runs" / "tiny"
    ws.set_form(TrainForm(preset="cpu-quick", steps=8, batch_size=4, image_size=16, out=str(run_dir),
                          sample_every=4, checkpoint_every=4, threads=1, device="cpu"))
    seen: list[dict] = []

    def on_event(kind: str) -> None:
        if kind == "sample":  # what the tab shows at that moment, while the run goes on
            run = ws.run
            seen.append({"step": run.sample_step, "training": ws.is_training(), "ema_file": run.sample_grid,
                         "raw_file": run.raw_sample_grid, "ema": ws.view.emaSamplesView.image_array(),
                         "raw": ws.view.rawSamplesView.image_array(), "prompts": ws.view.promptsLabel.text()})

    ws.state.eventApplied.connect(on_event, Qt.ConnectionType.QueuedConnection)  # after the workspace's slot
    with qtbot.waitSignal(ws.trainingFinished, timeout=RUN_TIMEOUT_MS) as finished:
        assert ws.start_training()
    assert finished.args[0] == "done", finished.args[1]
    qtbot.waitUntil(lambda: len(seen) == 3)
    assert [s["step"] for s in seen] == [0, 4, 8]
    for s in seen:
        ema_png, raw_png = _png(s["ema_file"]), _png(s["raw_file"])
        assert s["raw_file"] == str(run_dir / "samples" / f"step-{s['step']:08d}-raw.png")
        np.testing.assert_array_equal(s["ema"], ema_png)
        np.testing.assert_array_equal(s["raw"], raw_png)
        differs = np.abs(ema_png.astype(int) - raw_png.astype(int)).mean()
        assert (differs == 0) if s["step"] == 0 else (differs > 0), (s["step"], differs)  # the EMA lags
        rows = s["prompts"].splitlines()
        assert len(rows) == 2 and "a large red circle in the top left on a black background" in rows[0]
    assert seen[1]["training"]  # the grids of step 4 were shown while the run went on
    for grid in (ws.view.emaSamplesView, ws.view.rawSamplesView):
        pixmap = grid.pixmap()
        assert pixmap is not None and not pixmap.isNull() and (pixmap.width(), pixmap.height()) == (68, 68)
        shown = grid.image_array()
        for x, y in ((8, 8), (50, 20), (20, 50)):  # painted on screen: pixels inside three tiles
            assert _painted_pixel(grid, x, y, shown.shape[1]) == tuple(int(v) for v in shown[y, x])
    checkpoints = ws.view.checkpoints()
    assert [c.step for c in checkpoints] == [8, 4]
    assert [c.path for c in checkpoints] == [run_dir / "checkpoints" / f"step-{s:08d}.safetensors" for s in (8, 4)]
    assert checkpoints[0].loss is not None and ws.view.checkpointList.topLevelItem(0).text(1) != "–"
