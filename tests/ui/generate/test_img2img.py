"""img2img in the Generate workspace with the real shipped model: the init image box (open, drop,
paste, clear, bad files), strength → round(strength·steps) steps, the PNG metadata and Reuse."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication, QImage

from diffusion_studio.core import png_meta
from diffusion_studio.errors import UsageError
from diffusion_studio.paths import default_model_dir
from diffusion_studio.ui.generate.history import HistoryStore
from diffusion_studio.ui.generate.history_panel import format_details
from diffusion_studio.ui.generate.workspace import GenerateWorkspace
from diffusion_studio.ui.models import LoadedModel, load_model

RED = np.zeros((32, 32, 3), dtype=np.uint8)
RED[..., 0] = 255
STEPS = 20


@pytest.fixture(scope="module")
def shipped() -> LoadedModel:
    return load_model(default_model_dir(), "cpu")


@pytest.fixture
def workspace(qtbot, tmp_path: Path, shipped: LoadedModel) -> GenerateWorkspace:
    ws = GenerateWorkspace(HistoryStore(tmp_path / "history"))
    qtbot.addWidget(ws)
    ws.set_model(shipped)
    ws.state.update(prompt="a blue circle", sampler="ddim", steps=STEPS, seed=5, seed_locked=True)
    return ws


@pytest.fixture
def red_png(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    Image.fromarray(RED).save(path)
    return path


def load(qtbot, box, path: Path, ok: bool = True) -> None:
    """Open a file in the init image box and wait for its loader thread."""
    with qtbot.waitSignal(box.loadFinished, timeout=10_000) as blocker:
        box.load_file(path)
    assert blocker.args == [ok]


def drop(target, path: Path) -> None:
    """Drag a file over `target` (it must accept it) and drop it there."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    with warnings.catch_warnings():  # Qt 6 only offers the QPoint constructor, marked deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        enter = QDragEnterEvent(QPoint(10, 10), *args)
    QGuiApplication.sendEvent(target, enter)
    assert enter.isAccepted()
    QGuiApplication.sendEvent(target, QDropEvent(QPointF(10, 10), *args))


def run(qtbot, ws: GenerateWorkspace) -> tuple[np.ndarray, dict, list]:
    """Click Generate; the saved image, its metadata and the progress reports."""
    progress: list = []
    ws.state.progress.connect(progress.append)
    with qtbot.waitSignal(ws.runEnded, timeout=30_000):
        qtbot.mouseClick(ws.settingsPanel.generateButton, Qt.MouseButton.LeftButton)
    ws.state.progress.disconnect(progress.append)
    entry = ws.state.store.entries()[0]  # newest first
    with Image.open(entry.path) as im:
        return np.asarray(im.convert("RGB")).astype(int), entry.metadata, progress


def test_strength_keeps_the_init_image_and_strength_1_is_text_to_image(qtbot, workspace, red_png) -> None:
    ws, box = workspace, workspace.settingsPanel.initImageBox
    text_to_image, meta, progress = run(qtbot, ws)
    assert progress[-1].count == STEPS and "strength" not in meta and "init_image_sha256" not in meta

    load(qtbot, box, red_png)
    assert np.array_equal(box.initImageView.image_array(), RED) and "red.png · 32×32" in box.initImageLabel.text()
    ws.settingsPanel.strengthSpin.setValue(0.3)
    assert ws.settingsPanel.strengthSlider.value() == 30 and ws.state.settings.strength == 0.3
    image, meta, progress = run(qtbot, ws)
    assert [p.count for p in progress][-1] == round(0.3 * STEPS) == progress[-1].done  # 6 steps, from t = 300
    near, far = np.abs(image - RED).mean(), np.abs(text_to_image - RED).mean()
    assert near < 70 < 120 < far  # SDEdit at 0.3 keeps the red start; from noise it draws a blue circle
    r, g, b = image.reshape(-1, 3).mean(0)
    assert r > max(g, b) + 100  # still a red image
    r, g, b = text_to_image.reshape(-1, 3).mean(0)
    assert b > r + 30  # the prompt's blue (the red start has r − b = 255)
    assert meta["strength"] == 0.3 and meta["init_image"] == str(red_png)
    assert meta["init_image_sha256"] == hashlib.sha256(red_png.read_bytes()).hexdigest()

    ws.set_init_image(RED, 1.0, "red")  # strength 1 starts from pure noise: text-to-image exactly
    image, meta, progress = run(qtbot, ws)
    assert progress[-1].count == STEPS and meta["strength"] == 1.0 and meta["init_image_source"] == "red"
    assert np.array_equal(image, text_to_image)

    qtbot.mouseClick(box.clearInitButton, Qt.MouseButton.LeftButton)  # back to text-to-image
    assert ws.state.init_image is None and box.initImageView.image_array() is None
    assert not ws.settingsPanel.strengthSlider.isEnabled()
    image, meta, progress = run(qtbot, ws)
    assert np.array_equal(image, text_to_image) and "strength" not in meta and progress[-1].count == STEPS


def test_reuse_restores_strength_and_the_init_image_or_says_it_is_gone(
    qtbot, workspace, red_png, tmp_path, shipped
) -> None:
    ws = workspace
    load(qtbot, ws.settingsPanel.initImageBox, red_png)
    ws.settingsPanel.strengthSpin.setValue(0.3)
    first, _, _ = run(qtbot, ws)
    entry = ws.state.store.entries()[0]
    assert png_meta.read_metadata(entry.path)["strength"] == 0.3
    assert entry.subtitle == "seed 5 · 20 steps · DDIM · img2img 0.3"
    details = format_details(entry)
    assert "Strength (img2img): 0.3\nInit image: " + str(red_png) + "\nInit image SHA-256: " in details

    ws.clear_init_image()
    ws.settingsPanel.strengthSpin.setValue(0.8)
    messages: list[str] = []
    ws.statusMessage.connect(messages.append)
    ws.reuse_entry(entry)  # in this session: the image is kept in memory by its SHA-256
    assert ws.state.settings.strength == 0.3 and ws.settingsPanel.strengthSpin.value() == 0.3
    assert ws.state.init_image is not None and ws.state.init_image.path == red_png
    assert "init image red.png" in messages[-1]
    again, _, _ = run(qtbot, ws)
    assert np.array_equal(again, first)  # Reuse makes the image again

    fresh = GenerateWorkspace(HistoryStore(tmp_path / "other"))  # a later session: read from its path
    qtbot.addWidget(fresh)
    fresh.set_model(shipped)
    with qtbot.waitSignal(fresh.settingsPanel.initImageBox.loadFinished, timeout=10_000) as blocker:
        assert fresh.apply_metadata(entry.metadata, entry.path.name)
    assert blocker.args == [True] and fresh.state.init_image.sha256 == entry.metadata["init_image_sha256"]
    later = GenerateWorkspace(HistoryStore(tmp_path / "later"))  # another session, the file changed since
    qtbot.addWidget(later)
    Image.fromarray(RED[::-1, ::-1].copy() // 2).save(red_png)
    errors: list[str] = []
    later.errorOccurred.connect(lambda _title, message: errors.append(message))
    with qtbot.waitSignal(later.settingsPanel.initImageBox.loadFinished, timeout=10_000) as blocker:
        later.apply_metadata(entry.metadata, entry.path.name)
    assert blocker.args == [False] and later.state.init_image is None
    assert errors == ["The init image red.png has changed since (its SHA-256 differs): open the original "
                      "again to make this image."]
    assert later.settingsPanel.initImageBox.initImageLabel.text() == errors[0]
    red_png.unlink()  # and then deleted
    later.statusMessage.connect(messages.append)
    assert later.apply_metadata(entry.metadata, entry.path.name)
    assert later.state.settings.strength == 0.3 and later.state.init_image is None
    box = later.settingsPanel.initImageBox
    gone = "The init image red.png is no longer available: open it again to make this image."
    assert box.initImageLabel.text() == gone
    assert "init image red.png is no longer available" in messages[-1]

    # a text-to-image PNG clears the init image (so Generate makes that image); without one set,
    # an old PNG restores exactly as before: no note
    old = {"prompt": "a cat", "steps": 12, "sampler": "ddim", "guidance": 3.0, "seed": 7}
    assert ws.state.restore(old) == ["init image cleared (the image was made from text alone)"]
    assert ws.state.init_image is None and ws.state.restore(old) == []


def test_open_drop_paste_and_bad_files(qtbot, workspace, red_png, tmp_path) -> None:
    ws, box = workspace, workspace.settingsPanel.initImageBox
    errors: list[tuple[str, str]] = []
    ws.errorOccurred.connect(lambda title, message: errors.append((title, message)))
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    load(qtbot, box, bad, ok=False)
    assert errors == [("Cannot use the init image",
                       f"The init image {bad} cannot be read (not a readable image file).")]
    assert box.initImageLabel.text() == errors[0][1] and ws.state.init_image is None

    # a PNG with our metadata dropped on the box is the init image, not "restore its settings"
    tagged = tmp_path / "tagged.png"
    png_meta.write_png(tagged, np.full((48, 64, 3), 200, np.uint8), {"prompt": "a dropped prompt", "steps": 5})
    with qtbot.waitSignal(box.loadFinished, timeout=10_000):
        drop(box, tagged)
    assert ws.state.init_image is not None and ws.state.init_image.size == (64, 48)
    assert ws.state.settings.prompt == "a blue circle" and ws.state.settings.steps == STEPS

    QGuiApplication.clipboard().setImage(QImage(str(red_png)))  # Ctrl+V while the box has focus
    box.setFocus()
    qtbot.keyClick(box, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    assert ws.state.init_image.source == "clipboard" and np.array_equal(ws.state.init_image.thumbnail()[..., :3], RED)
    QGuiApplication.clipboard().setText("just text")
    qtbot.mouseClick(box.pasteInitButton, Qt.MouseButton.LeftButton)
    assert errors[-1][1] == "The clipboard holds no image to paste." and ws.state.init_image.source == "clipboard"


def test_a_png_dropped_on_the_window_still_restores_settings(qtbot, make_window, tmp_path) -> None:
    window = make_window()  # the tiny bundle
    ws = window.generateWorkspace
    tagged = tmp_path / "tagged.png"
    png_meta.write_png(tagged, np.full((8, 8, 3), 60, np.uint8),
                       {"prompt": "a dropped prompt", "steps": 5, "strength": 0.4, "init_image_source": "clipboard"})
    drop(ws.settingsPanel.promptEdit, tagged)  # elsewhere on the window: the PNG's settings
    assert (ws.state.settings.prompt, ws.state.settings.strength) == ("a dropped prompt", 0.4)
    assert ws.state.init_image is None
    assert "init image clipboard is no longer available" in ws.settingsPanel.initImageBox.initImageLabel.text()
    with qtbot.waitSignal(ws.settingsPanel.initImageBox.loadFinished, timeout=10_000):
        drop(ws.settingsPanel.initImageBox.initImageView, tagged)  # on the init image box: its pixels
    assert ws.state.init_image is not None and ws.state.init_image.path == tagged
    assert ws.state.settings.prompt == "a dropped prompt"
    QGuiApplication.clipboard().setImage(QImage(str(tagged)))  # Ctrl+V in the window, the box focused
    ws.settingsPanel.initImageBox.setFocus()
    qtbot.keyClick(ws.settingsPanel.initImageBox, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    assert ws.state.init_image.source == "clipboard" and ws.state.init_image.size == (8, 8)


def test_set_init_image_takes_x0_arrays_and_pil_images(workspace) -> None:
    ws = workspace
    x0 = np.linspace(-1, 1, 16 * 16 * 3, dtype=np.float32).reshape(16, 16, 3)  # the forward process's x₀
    ws.set_init_image(x0, 0.45, "forward process")
    init = ws.state.init_image
    assert init.source == "forward process" and ws.state.settings.strength == 0.45
    assert np.array_equal(init.thumbnail(), np.rint((x0 + 1) * 127.5).astype(np.uint8))
    assert ws.settingsPanel.initImageBox.strengthNote.text() == "Noised to t = 0.45·T, then 9 of 20 steps."
    ws.set_init_image(Image.new("L", (40, 20), 128), 1.0)
    assert ws.state.init_image.size == (40, 20) and ws.state.init_image.model_array(32, 3).shape == (1, 3, 32, 32)
    with pytest.raises(UsageError, match="must lie in"):
        ws.set_init_image(x0 * 3, 0.5)
    with pytest.raises(UsageError, match="Strength must lie in"):
        ws.set_init_image(x0, 0.0)


def test_a_large_file_is_read_off_the_gui_thread_and_the_latest_request_wins(qtbot, workspace, red_png, tmp_path):
    ws, box = workspace, workspace.settingsPanel.initImageBox
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1500, 2000, 3), np.uint8)).save(big)
    box.load_file(big)
    assert box.initImageLabel.text() == "Reading big.png…" and ws.state.init_image is None  # not read yet
    load(qtbot, box, red_png)  # asked for later: it wins whenever the big file arrives
    assert ws.state.init_image.path == red_png
    load(qtbot, box, big)
    init = ws.state.init_image
    assert init.size == (2000, 1500) and box.initImageView.image_array().shape == (108, 144, 3)
    assert ("fitted", 32, 3) in init._cache  # fitted to the model in the loader thread
    box.load_file(red_png)
    box.clear()  # Clear drops the file still being read
    qtbot.wait(300)
    assert ws.state.init_image is None
