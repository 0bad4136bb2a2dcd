"""The Train form (Qt view over `TrainForm`): data, preset and sizes, run folder, export target.

It reads and fills the form and owns the buttons; it never starts processes itself. Spin
boxes at their lowest value mean "the preset's value" and say so.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from diffusion_studio.ui.train.settings import (
    DATASETS,
    DEVICES,
    PRESET_SCHEDULE,
    PRESET_VALUES,
    PRESETS,
    SCHEDULES,
    TrainForm,
    checkpoints_in,
    default_bundle_dir,
    default_run_dir,
    suggest_run_dir,
)

PRESET_TEXT = "{} (preset)"  # a spin box at its lowest value shows the preset's number


def _spin(name: str, lo: int, hi: int, special: str, tip: str, step: int = 1) -> QSpinBox:
    spin = QSpinBox(objectName=name, minimum=lo, maximum=hi, singleStep=step)
    spin.setSpecialValueText(special)
    spin.setToolTip(tip)
    spin.setValue(lo)
    return spin


def _value(spin: QSpinBox) -> int | None:
    return None if spin.value() == spin.minimum() else spin.value()


def _set_value(spin: QSpinBox, value: int | None) -> None:
    spin.setValue(spin.minimum() if value is None else max(spin.minimum() + 1, min(value, spin.maximum())))


def _combo(name: str, items: tuple[tuple[str, str], ...], tip: str) -> QComboBox:
    combo = QComboBox(objectName=name)
    for value, label in items:
        combo.addItem(label, value)
    combo.setToolTip(tip)
    return combo


def _path_row(edit: QLineEdit, button: QToolButton) -> QHBoxLayout:
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    row.addWidget(button)
    return row


class TrainFormPanel(QWidget):
    startRequested = Signal()
    stopRequested = Signal()
    exportRequested = Signal()
    openBundleRequested = Signal()
    runFolderChanged = Signal(str)

    def __init__(self, runs_dir: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("trainFormPanel")
        self.runs_dir = runs_dir
        self._bundle_edited = False

        data = QGroupBox("Training data")
        self.datasetCombo = _combo("datasetCombo", DATASETS, "Shapes: procedural images with captions; "
                                   "an image folder: your own images (captions from .txt files beside them)")
        self.folderEdit = QLineEdit(objectName="datasetFolderEdit", placeholderText="Folder of images")
        self.folderButton = QToolButton(objectName="datasetFolderButton", text="…")
        self.folderButton.setToolTip("Choose the image folder")
        self.folderButton.clicked.connect(self._browse_dataset)
        form = QFormLayout(data)
        form.addRow("Dataset", self.datasetCombo)
        form.addRow("Folder", _path_row(self.folderEdit, self.folderButton))
        self.datasetCombo.currentIndexChanged.connect(lambda _index: self._sync_enabled())

        model = QGroupBox("Model and schedule")
        self.presetCombo = _combo("presetCombo", PRESETS, "U-Net size, learning rate and intervals "
                                  "(diffusion-studio train --preset)")
        self.stepsSpin = _spin("trainStepsSpin", 0, 10_000_000, PRESET_TEXT, "Total number of updates")
        self.batchSpin = _spin("trainBatchSpin", 0, 65536, PRESET_TEXT, "Images per update")
        self.imageSizeSpin = _spin("trainImageSizeSpin", 0, 1024, PRESET_TEXT,
                                   "Training image size (a multiple of the U-Net's downsampling)", step=8)
        self.presetCombo.currentIndexChanged.connect(self._show_preset_values)
        self.deviceCombo = _combo("trainDeviceCombo", DEVICES, "Where PyTorch trains; Auto prefers CUDA")
        # The first entry (data None) is the preset's schedule and says which it is.
        self.trainScheduleCombo = _combo("trainScheduleCombo", (("", "Preset"), *SCHEDULES),
                                         "Noise schedule β_t: linear (DDPM §4) or cosine (Improved DDPM eq. 17); "
                                         "a resumed run keeps its own (diffusion-studio train --schedule)")
        self.trainScheduleCombo.setItemData(0, None)
        self.learnSigmaCheck = QCheckBox("Learn variance (Improved DDPM)", objectName="learnSigmaCheck")
        self.learnSigmaCheck.setToolTip(
            "Also learn the reverse variance Σ_θ: the U-Net outputs 2C channels and trains on "
            "L_hybrid = L_simple + 0.001·L_vlb (Improved DDPM §3.1); DDPM sampling then uses it and the "
            "exported bundle declares it. A resumed run keeps its own (diffusion-studio train --learn-sigma)")
        form = QFormLayout(model)
        form.addRow("Preset", self.presetCombo)
        form.addRow("Steps", self.stepsSpin)
        form.addRow("Batch size", self.batchSpin)
        form.addRow("Image size", self.imageSizeSpin)
        form.addRow("Schedule", self.trainScheduleCombo)
        form.addRow("", self.learnSigmaCheck)
        form.addRow("Device", self.deviceCombo)

        run = QGroupBox("Run")
        self.outEdit = QLineEdit(objectName="runFolderEdit", placeholderText="Run folder")
        self.outEdit.setToolTip("Checkpoints, sample grids and events.jsonl go here")
        self.outEdit.textChanged.connect(self._on_out_changed)
        self.outButton = QToolButton(objectName="runFolderButton", text="…")
        self.outButton.setToolTip("Choose the run folder (an existing run is resumed)")
        self.outButton.clicked.connect(self._browse_out)
        self.resumeCheck = QCheckBox("Resume from the latest checkpoint", objectName="resumeCheck")
        self.resumeCheck.toggled.connect(lambda _on: self._sync_enabled())
        self.sampleSpin = _spin("sampleEverySpin", -1, 10_000_000, PRESET_TEXT,
                                "Updates between sample grids (0: only at the end)")
        self.checkpointSpin = _spin("checkpointEverySpin", 0, 10_000_000, PRESET_TEXT, "Updates between checkpoints")
        self.threadsSpin = _spin("threadsSpin", 0, max(1, os.cpu_count() or 1), "All cores",
                                 "PyTorch CPU threads")
        form = QFormLayout(run)
        form.addRow("Folder", _path_row(self.outEdit, self.outButton))
        form.addRow("", self.resumeCheck)
        form.addRow("Sample every", self.sampleSpin)
        form.addRow("Checkpoint every", self.checkpointSpin)
        form.addRow("CPU threads", self.threadsSpin)

        self.trainStartButton = QPushButton("Start training", objectName="trainStartButton")
        self.trainStartButton.setToolTip("Run diffusion-studio train in a separate process")
        self.trainStartButton.setDefault(True)
        self.trainStartButton.clicked.connect(self.startRequested)
        self.trainStopButton = QPushButton("Stop", objectName="trainStopButton")
        self.trainStopButton.setToolTip("Write a checkpoint and stop (resume later)")
        self.trainStopButton.clicked.connect(self.stopRequested)
        buttons = QHBoxLayout()
        buttons.addWidget(self.trainStartButton, 1)
        buttons.addWidget(self.trainStopButton)

        export = QGroupBox("Export to ONNX")
        self.bundleEdit = QLineEdit(objectName="bundleFolderEdit", placeholderText="Bundle folder")
        self.bundleEdit.textEdited.connect(self._on_bundle_edited)
        self.bundleButton = QToolButton(objectName="bundleFolderButton", text="…")
        self.bundleButton.clicked.connect(self._browse_bundle)
        self.exportButton = QPushButton("Export model bundle", objectName="exportButton")
        self.exportButton.setToolTip("python -m exporter RUN_DIR --out BUNDLE (checks PyTorch vs ONNX Runtime)")
        self.exportButton.clicked.connect(self.exportRequested)
        self.openBundleButton = QPushButton("Open in Generate", objectName="openBundleButton")
        self.openBundleButton.setToolTip("Load the exported bundle in the Generate tab")
        self.openBundleButton.clicked.connect(self.openBundleRequested)
        form = QFormLayout(export)
        form.addRow("Bundle", _path_row(self.bundleEdit, self.bundleButton))
        export_buttons = QHBoxLayout()
        export_buttons.addWidget(self.exportButton, 1)
        export_buttons.addWidget(self.openBundleButton)
        form.addRow(export_buttons)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for group in (data, model, run):
            layout.addWidget(group)
        layout.addLayout(buttons)
        layout.addWidget(export)
        layout.addStretch(1)
        self.setMinimumWidth(300)
        start = default_run_dir(runs_dir)
        self.set_form(TrainForm(out=str(start), resume=bool(checkpoints_in(start))))

    # --- the form --------------------------------------------------------------------------
    def form(self) -> TrainForm:
        return TrainForm(
            dataset=str(self.datasetCombo.currentData()),
            folder=self.folderEdit.text().strip(),
            preset=str(self.presetCombo.currentData()),
            steps=_value(self.stepsSpin),
            batch_size=_value(self.batchSpin),
            image_size=_value(self.imageSizeSpin),
            out=self.outEdit.text().strip(),
            resume=self.resumeCheck.isChecked(),
            device=str(self.deviceCombo.currentData()),
            sample_every=_value(self.sampleSpin),
            checkpoint_every=_value(self.checkpointSpin),
            threads=_value(self.threadsSpin),
            schedule=self.trainScheduleCombo.currentData() or None,
            learn_sigma=self.learnSigmaCheck.isChecked(),
        )

    def set_form(self, form: TrainForm) -> None:
        for combo, value in ((self.datasetCombo, form.dataset), (self.presetCombo, form.preset),
                             (self.deviceCombo, form.device)):
            index = combo.findData(value)
            combo.setCurrentIndex(max(0, index))
        self.folderEdit.setText(form.folder)
        _set_value(self.stepsSpin, form.steps)
        _set_value(self.batchSpin, form.batch_size)
        _set_value(self.imageSizeSpin, form.image_size)
        _set_value(self.sampleSpin, form.sample_every)
        _set_value(self.checkpointSpin, form.checkpoint_every)
        _set_value(self.threadsSpin, form.threads)
        self.trainScheduleCombo.setCurrentIndex(0 if form.schedule is None
                                                else max(0, self.trainScheduleCombo.findData(form.schedule)))
        self.learnSigmaCheck.setChecked(form.learn_sigma)
        self.resumeCheck.setChecked(form.resume)
        self.outEdit.setText(form.out)
        self._show_preset_values()
        self._sync_enabled()

    def _show_preset_values(self) -> None:
        """Spin boxes left at the preset show the preset's real number, e.g. "300 (preset)"."""
        values = PRESET_VALUES.get(str(self.presetCombo.currentData()), {})
        for spin, key in ((self.stepsSpin, "steps"), (self.batchSpin, "batch_size"),
                          (self.imageSizeSpin, "image_size"), (self.sampleSpin, "sample_every"),
                          (self.checkpointSpin, "checkpoint_every")):
            spin.setSpecialValueText(PRESET_TEXT.format(values[key]) if key in values else "Preset")
        schedule = dict(SCHEDULES).get(PRESET_SCHEDULE.get(str(self.presetCombo.currentData()), ""))
        self.trainScheduleCombo.setItemText(0, PRESET_TEXT.format(schedule) if schedule else "Preset")

    def bundle_dir(self) -> str:
        return self.bundleEdit.text().strip()

    def set_bundle_dir(self, path: str) -> None:
        self.bundleEdit.setText(path)
        self._bundle_edited = True

    def new_run_folder(self) -> None:
        """Suggest a fresh run folder (after a finished run, so Start does not refuse it)."""
        self.outEdit.setText(str(suggest_run_dir(self.runs_dir)))
        self.resumeCheck.setChecked(False)

    def set_running(self, training: bool, exporting: bool, can_export: bool, can_open: bool) -> None:
        """Enable what makes sense while a training or export process runs (or none)."""
        busy = training or exporting
        for widget in (self.datasetCombo, self.presetCombo, self.stepsSpin, self.batchSpin, self.imageSizeSpin,
                       self.deviceCombo, self.outEdit, self.outButton, self.resumeCheck, self.sampleSpin,
                       self.trainScheduleCombo, self.learnSigmaCheck,
                       self.checkpointSpin, self.threadsSpin, self.bundleEdit, self.bundleButton):
            widget.setEnabled(not busy)
        self.trainStartButton.setEnabled(not busy)
        self.trainStopButton.setEnabled(training)
        self.exportButton.setEnabled(not busy and can_export)
        self.openBundleButton.setEnabled(not busy and can_open)
        self._sync_enabled(busy)

    def _sync_enabled(self, busy: bool | None = None) -> None:
        if busy is None:  # a toggle between runs: busy is what set_running last said
            busy = not self.trainStartButton.isEnabled()
        folder = self.datasetCombo.currentData() == "folder"
        self.folderEdit.setEnabled(folder and not busy)
        self.folderButton.setEnabled(folder and not busy)
        # A resumed run keeps the schedule and variance head of its config.json (they shape the model).
        fresh = not self.resumeCheck.isChecked() and not busy
        self.trainScheduleCombo.setEnabled(fresh)
        self.learnSigmaCheck.setEnabled(fresh)

    # --- paths -----------------------------------------------------------------------------
    def _on_out_changed(self, text: str) -> None:
        if not self._bundle_edited:
            self.bundleEdit.setText(str(default_bundle_dir(text.strip())) if text.strip() else "")
        self.runFolderChanged.emit(text.strip())

    def _on_bundle_edited(self, _text: str) -> None:
        self._bundle_edited = True

    def _browse_dataset(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Image folder to train on", self.folderEdit.text()
                                                  or str(Path.home()))
        if folder:
            self.folderEdit.setText(folder)

    def _browse_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Run folder", str(self.runs_dir))
        if not folder:
            return
        path = Path(folder)
        if checkpoints_in(path):  # an existing run: continue it
            self.outEdit.setText(str(path))
            self.resumeCheck.setChecked(True)
        elif path.is_dir() and any(path.iterdir()):  # some other folder: a new run inside it
            self.outEdit.setText(str(suggest_run_dir(path)))
            self.resumeCheck.setChecked(False)
        else:
            self.outEdit.setText(str(path))
            self.resumeCheck.setChecked(False)

    def _browse_bundle(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the model bundle", str(self.runs_dir))
        if folder:
            self.set_bundle_dir(str(Path(folder) / Path(self.outEdit.text().strip() or "model").name))
