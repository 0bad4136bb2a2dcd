"""UI test set-up: isolated QSettings and data folder, and a guard against leaked threads/timers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QSettings, QStandardPaths, QThread, QTimer  # noqa: E402
from shiboken6 import isValid  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own QSettings file and history folder under tmp_path."""
    QStandardPaths.setTestModeEnabled(True)
    settings_dir = tmp_path / "settings"
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(settings_dir))
    monkeypatch.setenv("DIFFUSION_STUDIO_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


@pytest.fixture(autouse=True)
def no_leaked_threads_or_timers(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """Fail a test that leaves a QThread running or a QTimer active once it has finished.

    Set up before pytest-qt's qtbot, so this teardown runs after qtbot closed its widgets.
    """
    threads: list[QThread] = []
    timers: list[QTimer] = []
    thread_start, timer_start = QThread.start, QTimer.start

    def start_thread(self: QThread, *args: object) -> None:
        threads.append(self)
        thread_start(self, *args)

    def start_timer(self: QTimer, *args: object) -> None:
        timers.append(self)
        timer_start(self, *args)

    monkeypatch.setattr(QThread, "start", start_thread)
    monkeypatch.setattr(QTimer, "start", start_timer)
    yield
    if "qapp" in request.fixturenames or "qtbot" in request.fixturenames:
        from PySide6.QtWidgets import QApplication

        deadline = time.monotonic() + 2.0  # let deleteLater / queued finished signals run
        while time.monotonic() < deadline and any(isValid(t) and t.isRunning() for t in threads):
            QApplication.processEvents()
            time.sleep(0.01)
        QApplication.processEvents()
    running = [t.objectName() or repr(t) for t in threads if isValid(t) and t.isRunning()]
    active = [t.objectName() or repr(t) for t in timers if isValid(t) and t.isActive()]
    assert not running, f"test left QThreads running: {running}"
    assert not active, f"test left QTimers active: {active}"


# --- bundles and windows ---------------------------------------------------------------------
def _rewrite_model_json(folder: Path, **changes: dict) -> None:
    """Merge `changes` into sections of model.json and refresh the file hashes."""
    import hashlib
    import json

    spec = json.loads((folder / "model.json").read_text())
    for section, values in changes.items():
        spec[section] = {**spec.get(section, {}), **values}
    for path in folder.glob("*.onnx"):
        spec["files"][path.name] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                    "bytes": path.stat().st_size}
    (folder / "model.json").write_text(json.dumps(spec, indent=2))


@pytest.fixture(scope="session")
def long_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny U-Net with T = 1000, so a 1000-step DDPM run lasts long enough to cancel."""
    import shutil

    folder = tmp_path_factory.mktemp("long") / "tiny-long"
    shutil.copytree(tiny_bundle, folder)
    _rewrite_model_json(folder, diffusion={"T": 1000}, sampler_defaults={"sampler": "ddpm", "steps": 1000})
    return folder


@pytest.fixture(scope="session")
def busy_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32×32 bundle whose U-Net stand-in keeps ONNX Runtime busy (~1 ms per call, the real
    model takes a few), T = 1000: for wall-clock responsiveness tests, where the worker
    thread spends most of its time in ONNX Runtime's thread pool rather than in Python.
    The tiny bundle's model.json and text encoder are reused."""
    import io
    import json
    import shutil
    import warnings

    import torch

    spec = json.loads((tiny_bundle / "model.json").read_text())
    channels, size = spec["image"]["channels"], 32
    tokens, dim = spec["conditioning"]["max_tokens"], spec["conditioning"]["embedding_dim"]

    class BusyUNet(torch.nn.Module):
        def __init__(self, hidden: int = 32, depth: int = 4) -> None:
            super().__init__()
            self.conv_in = torch.nn.Conv2d(channels, hidden, 3, padding=1)
            self.text_proj = torch.nn.Linear(dim, hidden)
            self.time_proj = torch.nn.Linear(1, hidden)
            self.blocks = torch.nn.ModuleList(torch.nn.Conv2d(hidden, hidden, 3, padding=1) for _ in range(depth))
            self.conv_out = torch.nn.Conv2d(hidden, channels, 3, padding=1)

        def forward(self, x, t, context, context_mask):
            mask = context_mask[:, :, None]
            pooled = (context * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            cond = self.text_proj(pooled) + self.time_proj(t.to(torch.float32)[:, None] / 1000.0)
            h = self.conv_in(x) + cond[:, :, None, None]
            for block in self.blocks:
                h = h + block(torch.nn.functional.silu(h))
            return 0.1 * self.conv_out(torch.nn.functional.silu(h))

    torch.set_num_threads(1)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("busy") / "busy"
    shutil.copytree(tiny_bundle, folder)
    names = ["x", "t", "context", "context_mask"]
    example = (torch.zeros(2, channels, size, size), torch.tensor([1, 2]), torch.zeros(2, tokens, dim),
               torch.ones(2, tokens))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(BusyUNet().eval(), example, buffer, input_names=names, output_names=["eps"],
                          opset_version=17, dynamo=False, dynamic_axes={n: {0: "N"} for n in [*names, "eps"]})
    (folder / "unet.onnx").write_bytes(buffer.getvalue())
    _rewrite_model_json(folder, image={"size": size}, diffusion={"T": 1000},
                        sampler_defaults={"sampler": "ddpm", "steps": 100})
    text = (folder / "model.json").read_text().replace('"name": "tiny"', '"name": "busy"')
    (folder / "model.json").write_text(text)
    return folder


@pytest.fixture
def make_window(qtbot, tiny_bundle: Path):
    """Build a MainWindow on a bundle (tiny by default), registered with qtbot for closing."""
    from diffusion_studio.ui import MainWindow

    def make(model_path: Path | None = tiny_bundle, **kwargs: object) -> MainWindow:
        window = MainWindow(model_path=None if model_path is None else str(model_path), **kwargs)
        qtbot.addWidget(window)
        window.generateWorkspace.preview_hz = 1000.0  # every step the GUI can take (tests count them)
        return window

    return make
