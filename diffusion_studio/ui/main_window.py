"""`MainWindow`: the workspaces in tabs, menus and shortcuts, the status bar, dialogs, settings.

`MainWindow(model_path=None)` opens the default model. Which bundle is loaded when (start-up,
the model picker, recent bundles, failures, the CUDA fallback) is `models.ModelLibrary`'s
policy; the window shows what it says. Settings (form, view options, window geometry,
recent bundles) persist in QSettings (`persistence.AppSettings`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnxruntime
from PySide6 import __version__ as pyside_version
from PySide6.QtCore import Qt, qVersion
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import QFileDialog, QLabel, QMainWindow, QMessageBox, QTabWidget, QWidget

from diffusion_studio import __version__
from diffusion_studio.core import png_meta
from diffusion_studio.errors import UsageError
from diffusion_studio.ui.drop import PngDropFilter, png_paths
from diffusion_studio.ui.formatting import format_seconds
from diffusion_studio.ui.forward.workspace import ForwardWorkspace
from diffusion_studio.ui.generate.history import HistoryStore
from diffusion_studio.ui.generate.previews import PreviewMode
from diffusion_studio.ui.generate.vocabulary_dialog import VocabularyDialog
from diffusion_studio.ui.generate.worker import RunResult
from diffusion_studio.ui.generate.workspace import GenerateWorkspace
from diffusion_studio.ui.models import LoadedModel, ModelEntry, ModelLibrary, device_text
from diffusion_studio.ui.persistence import AppSettings, data_dir, ensure_identity, history_dir
from diffusion_studio.ui.toy.workspace import ToyLabWorkspace
from diffusion_studio.ui.train.workspace import TrainWorkspace
from diffusion_studio.ui.widgets.hats import hat_font

log = logging.getLogger(__name__)

APP_TITLE = "Diffusion Studio"


def latent_cpu_note(model: LoadedModel) -> str:
    """" · about N s per image on the CPU …" for a latent model that runs on the CPU (its U-Net FLOPs over the
    measured rate, at the model's default settings); "" otherwise or when under 2 s."""
    if not model.is_latent or model.provider_info.on_cuda:
        return ""
    from diffusion_studio.inference.pipeline import GenerationRequest

    try:
        latent_pipeline: Any = model.pipeline  # a LatentPipeline (is_latent)
        seconds = float(latent_pipeline.estimate_seconds(GenerationRequest()))
    except Exception:  # noqa: BLE001 - an estimate must never stop a model from loading
        log.exception("The time estimate failed")
        return ""
    return f" · about {seconds:.0f} s per image on the CPU at its default settings" if seconds > 2.0 else ""


class MainWindow(QMainWindow):
    """The Diffusion Studio window."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        settings: AppSettings | None = None,
        history_folder: str | Path | None = None,
    ) -> None:
        super().__init__()
        ensure_identity()
        self.setObjectName("mainWindow")
        self.app_settings = settings or AppSettings()
        self.models = ModelLibrary(self.app_settings, self)
        self._closing = False

        self.store = HistoryStore(history_folder or history_dir())
        self.generateWorkspace = GenerateWorkspace(self.store)
        self.tabs = QTabWidget(objectName="workspaceTabs")
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.generateWorkspace, "Generate")
        self.forwardWorkspace = ForwardWorkspace(image_source=self.generateWorkspace.selected_image)
        self.add_workspace(self.forwardWorkspace, "Forward process")
        self.trainWorkspace = TrainWorkspace(data_dir() / "runs")
        self.add_workspace(self.trainWorkspace, "Train")
        self.toyLab = ToyLabWorkspace()  # the 2D lab: train and sample an MLP ε_θ on point clouds
        self.add_workspace(self.toyLab, "2D lab")
        self.toyLab.statusMessage.connect(lambda text: self.show_status(text, 8000))
        self.setCentralWidget(self.tabs)

        self._build_status_bar()
        self._build_actions()
        self._build_menus()
        self._connect()
        self.setAcceptDrops(True)
        drop_filter = PngDropFilter(self.dropEvent, self)
        panel = self.generateWorkspace.settingsPanel
        for edit in (panel.promptEdit, panel.negativePromptEdit):
            edit.viewport().installEventFilter(drop_filter)
        self.setMinimumSize(960, 620)
        self.resize(1280, 800)

        self._restore_settings()
        self.open_model(self.models.startup_folder(model_path), startup=True)

    # --- construction ----------------------------------------------------------------------
    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.deviceLabel = QLabel("No model", objectName="deviceLabel")
        self.modelLabel = QLabel("", objectName="modelLabel")
        self.lastRunLabel = QLabel("", objectName="lastRunLabel")
        for label in (self.lastRunLabel, self.modelLabel, self.deviceLabel):
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            bar.addPermanentWidget(label)

    def _action(self, text: str, slot: object, shortcut: object = None, name: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            if isinstance(shortcut, list):
                action.setShortcuts(shortcut)
            else:
                action.setShortcut(shortcut)
        if name:
            action.setObjectName(name)
        action.triggered.connect(slot)
        self.addAction(action)  # shortcuts work even when the menu bar is hidden
        return action

    def _build_actions(self) -> None:
        ws = self.generateWorkspace
        self.generateAction = self._action(
            "&Generate",
            ws.generate,
            [QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")],
            "generateAction",
        )
        self.cancelAction = self._action("&Cancel", ws.cancel, QKeySequence(Qt.Key.Key_Escape), "cancelAction")
        self.openAction = self._action(
            "&Open model bundle…", self.open_model_dialog, QKeySequence.StandardKey.Open, "openModelAction"
        )
        self.loadSettingsAction = self._action("Load settings from &image…", self.load_settings_dialog)
        self.modelDefaultsAction = self._action("Use the &model's defaults", self.use_model_defaults)
        self.saveAsAction = self._action(
            "&Save image as…", ws.historyPanel.save_selected_as, QKeySequence.StandardKey.Save
        )
        self.copyAction = self._action("&Copy image", ws.historyPanel.copy_selected, QKeySequence("Ctrl+Shift+C"))
        self.exportTrajectoryAction = self._action("&Export trajectory…", ws.export_trajectory_dialog)
        self.quitAction = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.aboutAction = self._action("&About Diffusion Studio", self.show_about)
        self.vocabularyAction = self._action(
            "&What this model knows", self.show_vocabulary, QKeySequence("F1"), "vocabularyAction"
        )
        self.vocabularyDialog: VocabularyDialog | None = None
        self.smoothAction = self._action("&Smooth zoom", ws.previewArea.set_smooth)
        self.smoothAction.setCheckable(True)
        self.modeActions = QActionGroup(self)
        for mode in PreviewMode:
            action = QAction(mode.label, self, checkable=True)
            action.setData(mode.value)
            action.setFont(hat_font(self.font()))  # x̂₀ and ε̂ keep their hats in the View menu
            action.triggered.connect(lambda _checked=False, m=mode: ws.previewArea.set_mode(m))
            self.modeActions.addAction(action)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addAction(self.openAction)
        self.recentMenu = file_menu.addMenu("Open &recent bundle")
        file_menu.addAction(self.loadSettingsAction)
        file_menu.addSeparator()
        file_menu.addAction(self.saveAsAction)
        file_menu.addAction(self.exportTrajectoryAction)
        file_menu.addSeparator()
        file_menu.addAction(self.quitAction)
        edit_menu = bar.addMenu("&Edit")
        edit_menu.addAction(self.copyAction)
        view_menu = bar.addMenu("&View")
        for action in self.modeActions.actions():
            view_menu.addAction(action)
        view_menu.addSeparator()
        view_menu.addAction(self.smoothAction)
        run_menu = bar.addMenu("&Generate")
        run_menu.addAction(self.generateAction)
        run_menu.addAction(self.cancelAction)
        run_menu.addSeparator()
        run_menu.addAction(self.modelDefaultsAction)
        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self.vocabularyAction)
        help_menu.addSeparator()
        help_menu.addAction(self.aboutAction)

    def _connect(self) -> None:
        ws = self.generateWorkspace
        panel = ws.settingsPanel
        panel.openModelRequested.connect(self.open_model_dialog)
        panel.modelChosen.connect(lambda folder: self.open_model(Path(folder)))
        panel.deviceChanged.connect(self._on_device_changed)
        ws.errorOccurred.connect(self.show_error)
        ws.statusMessage.connect(lambda text: self.show_status(text, 8000))
        ws.runStarted.connect(self._sync_actions)
        ws.runEnded.connect(self._sync_actions)
        ws.runFinished.connect(self._on_run_finished)
        ws.previewArea.modeChanged.connect(self._on_mode_changed)
        ws.previewArea.smoothChanged.connect(self._on_smooth_changed)
        ws.previewArea.trajectorySlider.rangeChanged.connect(lambda *_: self._sync_actions())
        ws.historyPanel.historyList.currentRowChanged.connect(lambda *_: self._sync_actions())
        for workspace in (self.forwardWorkspace, self.trainWorkspace):
            workspace.errorOccurred.connect(self.show_error)
            workspace.statusMessage.connect(lambda text: self.show_status(text, 8000))
        self.trainWorkspace.openBundleRequested.connect(self.open_exported_bundle)
        self.forwardWorkspace.sendToImg2Img.connect(self.send_to_img2img)
        # the schedule plot marks the Generate form's run (sampler, steps, strength) and shows the model's schedule
        self.forwardWorkspace.schedulePlot.follow(ws.state)
        m = self.models
        m.modelChanged.connect(self._on_model_changed)
        m.entriesChanged.connect(self._show_models)
        m.unavailable.connect(self._on_no_model)
        m.loadFailed.connect(self.show_error)
        m.warning.connect(self.show_warning)
        m.status.connect(lambda text: self.show_status(text))

    # --- settings --------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        s = self.app_settings
        ws = self.generateWorkspace
        ws.state.set_settings(s.form())
        ws.previewArea.set_mode(s.preview_mode())
        ws.previewArea.set_smooth(s.smooth_zoom())
        self._on_mode_changed(s.preview_mode())
        self.smoothAction.setChecked(s.smooth_zoom())
        geometry = s.window_state("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        splitter = s.window_state("splitter")
        if splitter is not None:
            ws.splitter.restoreState(splitter)
        self.trainWorkspace.restore_settings(s.qsettings)

    def save_settings(self, sync: bool = True) -> None:
        s = self.app_settings
        ws = self.generateWorkspace
        s.set_form(ws.state.settings)
        s.set_preview_mode(ws.previewArea.mode())
        s.set_smooth_zoom(ws.previewArea.smoothCheck.isChecked())
        s.set_window_state("geometry", self.saveGeometry())
        s.set_window_state("splitter", ws.splitter.saveState())
        self.trainWorkspace.save_settings(s.qsettings)
        if sync:  # written to disk now (closing); otherwise QSettings writes it soon by itself
            s.sync()

    def _on_mode_changed(self, mode: PreviewMode) -> None:
        for action in self.modeActions.actions():
            action.setChecked(action.data() == mode.value)

    def _on_smooth_changed(self, smooth: bool) -> None:
        self.smoothAction.setChecked(smooth)

    # --- models ----------------------------------------------------------------------------
    def model(self) -> LoadedModel | None:
        return self.models.current

    def open_model_dialog(self) -> None:
        current = self.models.current
        start = str(current.folder.parent if current else Path.home())
        folder = QFileDialog.getExistingDirectory(
            self, "Open model bundle (a folder with model.json, or an Optimum ONNX Stable Diffusion folder)", start)
        if folder:
            self.open_model(Path(folder))

    def open_model(self, folder: Path, *, startup: bool = False) -> bool:
        """Load a bundle on the form's device (see `ModelLibrary.open`); True if it is now the
        active model. Not while a run is in flight."""
        if self.generateWorkspace.is_running():
            self.show_error("Model", "Wait for the run to finish (or cancel it) before switching models.")
            return False
        return self.models.open(folder, self.generateWorkspace.state.settings.device.value, startup=startup)

    def use_model_defaults(self) -> None:
        """Sampler, steps and guidance from the loaded bundle's model.json sampler_defaults."""
        self.generateWorkspace.state.use_model_defaults()

    def _on_model_changed(self, model: LoadedModel, take_defaults: bool) -> None:
        self.generateWorkspace.set_model(model)
        if model.is_latent:  # the Forward tab's x_t and x̂₀ live in pixel space
            self.forwardWorkspace.set_model(None, f"The model {model.name} is a latent diffusion model; the Forward "
                                            "tab asks pixel-space models only.")
        else:
            self.forwardWorkspace.set_model(model)
        if take_defaults:  # the first launch, or another model: its sampler, steps and guidance
            self.generateWorkspace.state.use_model_defaults()
        info = model.provider_info
        self.deviceLabel.setText(device_text(info))
        self.deviceLabel.setToolTip(info.describe())
        spec = model.bundle.spec
        self.modelLabel.setText(f"Model: {model.name} ({model.bundle.model_hash})")
        self.modelLabel.setToolTip(
            f"{model.folder}\n{spec.image_size}×{spec.image_size}, {spec.channels} channels, T = {spec.T}, "
            f"{spec.schedule} schedule"
        )
        self.setWindowTitle(f"{model.name} — {APP_TITLE}")
        self.show_status(f"Loaded {model.name} from {model.folder}" + latent_cpu_note(model), 6000)

    def _on_no_model(self, message: str) -> None:
        self.generateWorkspace.set_model(None, message)
        self.forwardWorkspace.set_model(None, message)
        self.show_status(message)

    def _show_models(self, entries: list[ModelEntry], current: str | None) -> None:
        self.generateWorkspace.settingsPanel.set_models([(e.label, e.folder, e.tooltip) for e in entries], current)
        self.recentMenu.clear()
        for entry in entries[1:]:
            action = self.recentMenu.addAction(entry.label)
            action.setToolTip(entry.folder)
            action.triggered.connect(lambda _checked=False, f=entry.folder: self.open_model(Path(f)))
        self.recentMenu.setEnabled(len(entries) > 1)
        if self.models.current is None:
            self.setWindowTitle(f"{APP_TITLE} — no model")
            self.deviceLabel.setText("No model")
            self.modelLabel.setText("")
        self._sync_actions()

    def open_exported_bundle(self, folder: str) -> None:
        """Load a bundle the Train tab exported and show it in the Generate tab."""
        if self.open_model(Path(folder)):
            self.tabs.setCurrentWidget(self.generateWorkspace)

    def send_to_img2img(self, image: object, strength: float) -> None:
        """The Forward tab's x₀ as the Generate tab's init image at strength t/T; shows the Generate tab."""
        try:
            self.generateWorkspace.set_init_image(image, strength, "forward process")  # type: ignore[arg-type]
        except UsageError as exc:
            self.show_error("Send to img2img", str(exc))
            return
        self.tabs.setCurrentWidget(self.generateWorkspace)
        self.show_status(f"img2img from the Forward tab's x₀ at strength {strength:.3f}", 6000)

    def _on_device_changed(self, device: str) -> None:
        """Reload the current model on the chosen device (the old session stays if that fails)."""
        if self.models.current is not None:
            self.open_model(self.models.current.folder)

    # --- runs ------------------------------------------------------------------------------
    def _sync_actions(self) -> None:
        ws = self.generateWorkspace
        running = ws.is_running()
        self.generateAction.setEnabled(not running and self.models.current is not None)
        self.cancelAction.setEnabled(running)
        self.openAction.setEnabled(not running)
        self.recentMenu.setEnabled(not running and bool(self.recentMenu.actions()))
        has_entry = ws.historyPanel.selected_entry() is not None
        self.saveAsAction.setEnabled(has_entry)
        self.copyAction.setEnabled(has_entry)
        self.exportTrajectoryAction.setEnabled(ws.previewArea.trajectory() is not None)

    def _on_run_finished(self, result: RunResult) -> None:
        self.lastRunLabel.setText(
            f"Last run: {format_seconds(result.elapsed_s)} · {result.steps_per_s:.1f} steps/s"
        )
        if self.models.current is not None:  # an fp16 -> fp32 switch shows up in the provider info
            self.deviceLabel.setToolTip(self.models.current.provider_info.describe())
        self.save_settings(sync=False)
        self._sync_actions()

    # --- drag and drop ---------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if png_paths(event):
            event.acceptProposedAction()

    def dragMoveEvent(self, event: QDragEnterEvent) -> None:  # type: ignore[override]
        if png_paths(event):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = png_paths(event)
        if not paths:
            return
        event.acceptProposedAction()
        self.load_settings_from_png(paths[0])

    def load_settings_from_png(self, path: Path) -> bool:
        """Fill the form from a PNG's metadata (ours or the common `parameters` text)."""
        try:
            metadata = png_meta.read_metadata(path)
        except UsageError as exc:
            self.show_error("Cannot reuse settings", str(exc))
            return False
        return self.generateWorkspace.apply_metadata(metadata, path.name)

    def load_settings_dialog(self) -> None:
        target, _ = QFileDialog.getOpenFileName(self, "Load settings from image", str(Path.home()), "PNG (*.png)")
        if target:
            self.load_settings_from_png(Path(target))

    # --- dialogs ---------------------------------------------------------------------------
    def show_status(self, text: str, timeout_ms: int = 0) -> None:
        """A status-bar message, elided in the middle (long paths) to the room the bar has; the
        whole text is its tooltip."""
        bar = self.statusBar()
        room = max(bar.width(), self.width()) - sum(label.sizeHint().width() + 12
                                 for label in (self.lastRunLabel, self.modelLabel, self.deviceLabel)
                                 if label.isVisible()) - 24
        metrics = bar.fontMetrics()
        shown = metrics.elidedText(text, Qt.TextElideMode.ElideMiddle, max(80, room))
        bar.setToolTip(text if shown != text else "")
        bar.showMessage(shown, timeout_ms)

    def show_error(self, title: str, message: str) -> None:
        log.warning("%s: %s", title, message)
        QMessageBox.critical(self, title, message)

    def show_warning(self, title: str, message: str) -> None:
        log.warning("%s: %s", title, message)
        QMessageBox.warning(self, title, message)

    def show_vocabulary(self) -> VocabularyDialog:
        """Help ▸ What this model knows: the model's words and example prompts (window-modal)."""
        if self.vocabularyDialog is not None:
            self.vocabularyDialog.deleteLater()
        dialog = VocabularyDialog.for_model(self.models.current, self)
        dialog.promptChosen.connect(self.generateWorkspace.settingsPanel.promptEdit.setPlainText)
        self.vocabularyDialog = dialog
        dialog.open()
        return dialog

    def show_about(self) -> None:
        model = self.models.current
        provider = model.provider_info.describe() if model else "no model loaded"
        QMessageBox.about(
            self,
            f"About {APP_TITLE}",
            f"<h3>{APP_TITLE} {__version__}</h3>"
            "<p>Type a prompt and watch a denoising diffusion model (DDPM, Ho et al. 2020) turn "
            "noise into an image, step by step.</p>"
            f"<p>ONNX Runtime {onnxruntime.__version__} · PySide6 {pyside_version} · Qt {qVersion()}<br>"
            f"Provider: {provider}</p>"
            "<p>MIT licence.</p>",
        )

    # --- closing ---------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:
        """Stop a run in flight (asking first if training runs), remember the settings, then close."""
        if not self._closing:
            question = self.trainWorkspace.busy_description()
            if question:
                self.tabs.setCurrentWidget(self.trainWorkspace)
                answer = QMessageBox.question(self, "Training is running", question)
                if answer != QMessageBox.StandardButton.Yes:
                    event.ignore()
                    return
            self._closing = True
            if not self.trainWorkspace.shutdown():
                log.error("The training process did not stop in time.")
            if not self.generateWorkspace.shutdown():
                log.error("The generation thread did not stop in time.")
            self.forwardWorkspace.shutdown()
            if not self.toyLab.shutdown():
                log.error("The 2D lab thread did not stop in time.")
            self.save_settings()
        event.accept()

    def add_workspace(self, widget: QWidget, title: str) -> int:
        """Add a workspace tab (e.g. "Forward process", "Train"); returns its index."""
        return self.tabs.addTab(widget, title)

    def workspace(self, title: str) -> QWidget | None:
        for i in range(self.tabs.count()):
            if self.tabs.tabText(i).replace("&", "") == title:
                return self.tabs.widget(i)
        return None
