"""The settings column of the Generate workspace: model, prompt, sampler, seed, batch.

A view over `GenerateState`: it shows `state.settings` whenever `settingsChanged` says they
changed and writes every edit back with `state.set_settings`, so the state always holds what
the form shows. The steps box ends at the model's T and the buttons follow the model and the
run. It never loads models or starts runs itself; it emits signals the window handles.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from diffusion_studio.core.params import BATCH_MAX, GUIDANCE_MAX, SAMPLER_LABELS, random_seed
from diffusion_studio.ui.generate.settings import Device, GenerationSettings, steps_limit
from diffusion_studio.ui.generate.state import GenerateState
from diffusion_studio.ui.widgets import icons
from diffusion_studio.ui.widgets.seed_edit import SeedEdit


def _text_edit(name: str, placeholder: str, lines: int) -> QPlainTextEdit:
    edit = QPlainTextEdit()
    edit.setObjectName(name)
    edit.setPlaceholderText(placeholder)
    edit.setTabChangesFocus(True)
    height = edit.fontMetrics().lineSpacing() * lines + 14
    edit.setFixedHeight(height)
    return edit


class SettingsPanel(QWidget):
    """Form widgets with the objectNames of DESIGN.md."""

    generateRequested = Signal()
    cancelRequested = Signal()
    openModelRequested = Signal()
    modelChosen = Signal(str)  # a bundle folder picked in the model combo
    deviceChanged = Signal(str)  # Device value

    def __init__(self, state: GenerateState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("settingsPanel")
        self.state = state
        self._model_paths: list[str] = []
        self._current_model_index = -1
        self._showing = False  # filling the widgets from the state: their signals are not edits

        # --- model -----------------------------------------------------------------------
        self.modelCombo = QComboBox(objectName="modelCombo")
        self.modelCombo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.modelCombo.setMinimumContentsLength(12)
        self.modelCombo.setPlaceholderText("No model loaded")
        self.modelCombo.setToolTip("The model bundle to generate with (default model and recent bundles)")
        self.modelCombo.activated.connect(self._on_model_activated)
        self.openModelButton = QToolButton(objectName="openModelButton", text="Open…")
        self.openModelButton.setToolTip("Open model bundle… (Ctrl+O)")
        self.openModelButton.clicked.connect(self.openModelRequested)
        self.deviceCombo = QComboBox(objectName="deviceCombo")
        for device in Device:
            self.deviceCombo.addItem(device.label, device.value)
        self.deviceCombo.setToolTip("Where ONNX Runtime runs the model; Auto prefers CUDA when available")
        self.deviceCombo.activated.connect(lambda _i: self.deviceChanged.emit(str(self.deviceCombo.currentData())))
        model_row = QHBoxLayout()
        model_row.addWidget(self.modelCombo, 1)
        model_row.addWidget(self.openModelButton)
        model_box = QGroupBox("Model")
        model_form = QFormLayout(model_box)
        model_form.addRow("Bundle", model_row)
        model_form.addRow("Device", self.deviceCombo)

        # --- prompt ----------------------------------------------------------------------
        self.promptEdit = _text_edit("promptEdit", "Describe the image, e.g. “a red circle on a white background”", 3)
        self.promptEdit.setAccessibleName("Prompt")
        self.negativePromptEdit = _text_edit("negativePromptEdit", "What to steer away from (optional)", 2)
        self.negativePromptEdit.setAccessibleName("Negative prompt")
        prompt_box = QGroupBox("Prompt")
        prompt_layout = QVBoxLayout(prompt_box)
        prompt_layout.addWidget(self.promptEdit)
        prompt_layout.addWidget(self.negativePromptEdit)

        # --- sampling --------------------------------------------------------------------
        self.samplerCombo = QComboBox(objectName="samplerCombo")
        for kind, label in SAMPLER_LABELS.items():
            self.samplerCombo.addItem(label, kind.value)
        self.stepsSpin = QSpinBox(objectName="stepsSpin", minimum=1, maximum=steps_limit(None), value=20)
        self.stepsSpin.setToolTip("Network evaluations of the reverse process (at most the model's T)")
        self.guidanceSpin = QDoubleSpinBox(objectName="guidanceSpin", minimum=0.0, maximum=GUIDANCE_MAX)
        self.guidanceSpin.setSingleStep(0.5)
        self.guidanceSpin.setDecimals(2)
        self.guidanceSpin.setToolTip("Classifier-free guidance w: ε̂ = ε_uncond + w (ε_cond − ε_uncond)")
        self.seedSpin = SeedEdit()  # QSpinBox is 32-bit; seeds go up to 2⁶³−1 like the CLI's
        self.seedSpin.setObjectName("seedSpin")
        self.seedSpin.setToolTip(
            f"The noise seed (0 to {self.seedSpin.maximum()}); the same seed and settings give the same image"
        )
        self.seedLockButton = QToolButton(objectName="seedLockButton", checkable=True)
        self.seedLockButton.toggled.connect(self._update_lock_icon)
        self.diceButton = QToolButton(objectName="diceButton")
        self.diceButton.setToolTip("Pick a random seed")
        self.diceButton.clicked.connect(lambda: self.seedSpin.setValue(random_seed()))
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seedSpin, 1)
        seed_row.addWidget(self.seedLockButton)
        seed_row.addWidget(self.diceButton)
        self.batchSpin = QSpinBox(objectName="batchSpin", minimum=1, maximum=BATCH_MAX, value=1)
        self.batchSpin.setToolTip("Images per run (shown as a grid)")
        sampling_box = QGroupBox("Sampling")
        sampling_form = QFormLayout(sampling_box)
        sampling_form.addRow("Sampler", self.samplerCombo)
        sampling_form.addRow("Steps", self.stepsSpin)
        sampling_form.addRow("Guidance", self.guidanceSpin)
        sampling_form.addRow("Seed", seed_row)
        sampling_form.addRow("Batch", self.batchSpin)

        # --- actions ---------------------------------------------------------------------
        self.generateButton = QPushButton("Generate", objectName="generateButton")
        self.generateButton.setToolTip("Generate (Ctrl+Enter)")
        self.generateButton.setDefault(True)
        self.generateButton.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.generateButton.setMinimumHeight(36)
        self.generateButton.clicked.connect(self.generateRequested)
        self.cancelButton = QPushButton("Cancel", objectName="cancelButton", enabled=False)
        self.cancelButton.setToolTip("Stop the run (Esc)")
        self.cancelButton.setMinimumHeight(36)
        self.cancelButton.clicked.connect(self.cancelRequested)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generateButton, 2)
        buttons.addWidget(self.cancelButton, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for box in (model_box, prompt_box, sampling_box):
            layout.addWidget(box)
        layout.addLayout(buttons)
        layout.addStretch(1)
        self._refresh_icons()
        self.setMinimumWidth(280)

        self._show(state.settings)
        for signal in (self.promptEdit.textChanged, self.negativePromptEdit.textChanged,
                       self.samplerCombo.currentIndexChanged, self.stepsSpin.valueChanged,
                       self.guidanceSpin.valueChanged, self.seedSpin.valueChanged, self.seedLockButton.toggled,
                       self.batchSpin.valueChanged, self.deviceCombo.currentIndexChanged):
            signal.connect(self._push)
        state.settingsChanged.connect(self._show)
        state.modelChanged.connect(self._on_model_changed)
        state.runningChanged.connect(self._update_buttons)
        self._on_model_changed(state.model)

    # --- the form <-> GenerateState -------------------------------------------------------
    def _read(self) -> GenerationSettings:
        """The settings the widgets show."""
        return GenerationSettings(
            prompt=self.promptEdit.toPlainText().strip(),
            negative_prompt=self.negativePromptEdit.toPlainText().strip(),
            sampler=str(self.samplerCombo.currentData()),
            steps=self.stepsSpin.value(),
            guidance=round(self.guidanceSpin.value(), 4),
            seed=self.seedSpin.value(),
            seed_locked=self.seedLockButton.isChecked(),
            batch=self.batchSpin.value(),
            device=Device(self.deviceCombo.currentData() or Device.AUTO.value),
        )

    def _push(self, *_args: object) -> None:
        """An edit: the state takes what the form now shows."""
        if not self._showing:
            self.state.set_settings(self._read())

    def _show(self, settings: GenerationSettings) -> None:
        """Fill the widgets from the state; a value a widget cannot hold (steps beyond the
        model's T) is clamped there and the state follows."""
        self._showing = True
        try:
            if self.promptEdit.toPlainText().strip() != settings.prompt:
                self.promptEdit.setPlainText(settings.prompt)
            if self.negativePromptEdit.toPlainText().strip() != settings.negative_prompt:
                self.negativePromptEdit.setPlainText(settings.negative_prompt)
            index = self.samplerCombo.findData(settings.sampler)
            if index >= 0:
                self.samplerCombo.setCurrentIndex(index)
            self.stepsSpin.setValue(settings.steps)
            self.guidanceSpin.setValue(settings.guidance)
            self.seedSpin.setValue(settings.seed)
            self.seedLockButton.setChecked(settings.seed_locked)
            self.batchSpin.setValue(settings.batch)
            self.deviceCombo.setCurrentIndex(max(0, self.deviceCombo.findData(settings.device.value)))
        finally:
            self._showing = False
        self._push()

    def settings(self) -> GenerationSettings:
        return self.state.settings

    def set_settings(self, settings: GenerationSettings) -> None:
        self.state.set_settings(settings)

    def device(self) -> Device:
        return self.state.settings.device

    def set_device(self, device: Device) -> None:
        self.state.update(device=device)

    def set_seed(self, seed: int) -> None:
        self.state.update(seed=seed)

    # --- models ----------------------------------------------------------------------------
    def set_models(self, entries: list[tuple[str, str, str]], current: str | None) -> None:
        """Fill the model combo with (label, folder, tooltip) and select `current`."""
        self.modelCombo.blockSignals(True)
        self.modelCombo.clear()
        self._model_paths = []
        for label, folder, tooltip in entries:
            self.modelCombo.addItem(label, folder)
            self.modelCombo.setItemData(self.modelCombo.count() - 1, tooltip, Qt.ItemDataRole.ToolTipRole)
            self._model_paths.append(folder)
        index = self._index_of(current)
        self.modelCombo.setCurrentIndex(index)
        self._current_model_index = index
        self.modelCombo.blockSignals(False)

    def _index_of(self, folder: str | None) -> int:
        if folder is None:
            return -1
        target = str(Path(folder))
        for i, path in enumerate(self._model_paths):
            if str(Path(path)) == target:
                return i
        return -1

    def _on_model_activated(self, index: int) -> None:
        if index == self._current_model_index or not 0 <= index < len(self._model_paths):
            return
        # Show the previous model until the window says the new one loaded (set_models).
        self.modelCombo.setCurrentIndex(self._current_model_index)
        self.modelChosen.emit(self._model_paths[index])

    # --- model and run state ---------------------------------------------------------------
    def _on_model_changed(self, model: object) -> None:
        """Steps end at the new model's T (a larger value is clamped, and the state follows)."""
        self.stepsSpin.setMaximum(steps_limit(self.state.T))
        self._update_buttons()

    def _update_buttons(self, *_args: object) -> None:
        """Buttons and model controls while a run is (not) in flight."""
        running = self.state.is_running
        self.generateButton.setEnabled(not running and self.state.model is not None)
        self.cancelButton.setEnabled(running)
        for widget in (self.modelCombo, self.openModelButton, self.deviceCombo):
            widget.setEnabled(not running)

    # --- theme -----------------------------------------------------------------------------
    def _update_lock_icon(self, locked: bool) -> None:
        self.seedLockButton.setIcon(icons.padlock_icon(locked))
        self.seedLockButton.setToolTip(
            "Seed locked: every run uses this seed" if locked else "Seed unlocked: every run picks a new seed"
        )

    def _refresh_icons(self) -> None:
        self._update_lock_icon(self.seedLockButton.isChecked())
        self.diceButton.setIcon(icons.dice_icon())

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self._refresh_icons()
        super().changeEvent(event)
