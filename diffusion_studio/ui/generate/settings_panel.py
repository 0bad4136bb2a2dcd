"""The settings column of the Generate workspace: model, prompt (or class), sampler, seed, batch.

A view over `GenerateState`: it shows `state.settings` whenever `settingsChanged` says they
changed and writes every edit back with `state.set_settings`, so the state always holds what
the form shows. The steps box ends at the model's T and the buttons follow the model and the
run. It never loads models or starts runs itself; it emits signals the window handles.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from diffusion_studio.core.params import BATCH_MAX, GUIDANCE_MAX, SAMPLER_LABELS, SamplerKind, random_seed
from diffusion_studio.core.vocabulary import prompt_note
from diffusion_studio.inference.pipeline import UNCONDITIONAL_NOTE
from diffusion_studio.ui.generate.init_image_box import InitImageBox
from diffusion_studio.ui.generate.settings import Device, GenerationSettings, steps_limit
from diffusion_studio.ui.generate.state import GenerateState
from diffusion_studio.ui.models import device_note
from diffusion_studio.ui.widgets import icons
from diffusion_studio.ui.widgets.bounded_spin import BoundedDoubleSpinBox, BoundedSpinBox
from diffusion_studio.ui.widgets.seed_edit import SeedEdit

# Fewer DDPM steps than this leave visible noise (its variance needs many small steps).
DDPM_FEW_STEPS = 100
PROMPT_PLACEHOLDER = "Describe the image, e.g. “a red circle on a white background”"
SIZE_MAX = 2048  # the largest width / height the form offers for a latent model
CLASS_HINT = "This model is class-conditional: pick a class; a prompt and guidance are not used."
NO_GUIDANCE_NOTE = "Not used: this model has no text conditioning."


def note_label(name: str) -> QLabel:
    """A small wrapped line under a field that says what happened to it (hidden while empty)."""
    label = QLabel(objectName=name)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.PlainText)
    font = QFont(label.font())
    font.setPointSizeF(max(7.0, font.pointSizeF() - 1))
    label.setFont(font)
    label.setVisible(False)
    return label


def with_note(field: QWidget | QHBoxLayout, note: QLabel) -> QVBoxLayout:
    column = QVBoxLayout()
    column.setContentsMargins(0, 0, 0, 0)
    column.setSpacing(2)
    if isinstance(field, QWidget):
        column.addWidget(field)
    else:
        column.addLayout(field)
    column.addWidget(note)
    return column


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
        self.deviceNote = note_label("deviceNote")
        model_form.addRow("Device", with_note(self.deviceCombo, self.deviceNote))

        # --- prompt ----------------------------------------------------------------------
        self.promptEdit = _text_edit("promptEdit", PROMPT_PLACEHOLDER, 3)
        self.promptEdit.setAccessibleName("Prompt")
        self.negativePromptEdit = _text_edit("negativePromptEdit", "What to steer away from (optional)", 2)
        self.negativePromptEdit.setAccessibleName("Negative prompt")
        self.classCombo = QComboBox(objectName="classCombo")
        self.classCombo.setAccessibleName("Class")
        self.classCombo.setToolTip("The class to draw (a class-conditional model takes a class instead of a prompt)")
        self.classCombo.setVisible(False)
        prompt_box = self.promptBox = QGroupBox("Prompt")
        prompt_layout = QVBoxLayout(prompt_box)
        prompt_layout.addWidget(self.classCombo)
        prompt_layout.addWidget(self.promptEdit)
        self.promptHint = note_label("promptHint")
        self.promptHint.setAccessibleName("Prompt hint")
        prompt_layout.addWidget(self.promptHint)
        self.promptEdit.textChanged.connect(self._update_prompt_hint)
        prompt_layout.addWidget(self.negativePromptEdit)

        # --- sampling --------------------------------------------------------------------
        self.samplerCombo = QComboBox(objectName="samplerCombo")
        for kind, label in SAMPLER_LABELS.items():
            self.samplerCombo.addItem(label, kind.value)
        self.samplerHint = note_label("samplerHint")
        self.stepsSpin = BoundedSpinBox(objectName="stepsSpin", minimum=1, maximum=steps_limit(None), value=20,
                                        limit_reason="for this model (its T)")
        self.stepsNote = note_label("stepsNote")
        self.stepsSpin.adjusted.connect(lambda text: self._set_note(self.stepsNote, text))
        self.stepsSpin.setToolTip("Network evaluations of the reverse process (at most the model's T)")
        self.guidanceSpin = BoundedDoubleSpinBox(objectName="guidanceSpin", minimum=0.0, maximum=GUIDANCE_MAX)
        self.guidanceNote = note_label("guidanceNote")
        self.guidanceSpin.adjusted.connect(lambda text: self._set_note(self.guidanceNote, text))
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
        self.batchSpin = BoundedSpinBox(objectName="batchSpin", minimum=1, maximum=BATCH_MAX, value=1,
                                        limit_reason="images per run")
        self.batchNote = note_label("batchNote")
        self.batchSpin.adjusted.connect(lambda text: self._set_note(self.batchNote, text))
        self.batchSpin.setToolTip("Images per run (shown as a grid)")
        sampling_box = QGroupBox("Sampling")
        sampling_form = QFormLayout(sampling_box)
        sampling_form.addRow("Sampler", with_note(self.samplerCombo, self.samplerHint))
        sampling_form.addRow("Steps", with_note(self.stepsSpin, self.stepsNote))
        sampling_form.addRow("Guidance", with_note(self.guidanceSpin, self.guidanceNote))
        sampling_form.addRow("Seed", seed_row)
        sampling_form.addRow("Batch", with_note(self.batchSpin, self.batchNote))
        # Width × height: latent models only (any multiple of the VAE factor); pixel models make their own size.
        self.widthSpin = self._size_spin("widthSpin", "Width")
        self.heightSpin = self._size_spin("heightSpin", "Height")
        self.sizeRow = QWidget(objectName="sizeRow")
        size_row = QHBoxLayout(self.sizeRow)
        size_row.setContentsMargins(0, 0, 0, 0)
        size_row.addWidget(self.widthSpin, 1)
        size_row.addWidget(QLabel("×"))
        size_row.addWidget(self.heightSpin, 1)
        self.samplingForm = sampling_form
        sampling_form.addRow("Size", self.sizeRow)

        # --- img2img: init image and strength ---------------------------------------------
        self.initImageBox = InitImageBox(state)
        self.initImageView = self.initImageBox.initImageView
        self.strengthSlider = self.initImageBox.strengthSlider
        self.strengthSpin = self.initImageBox.strengthSpin

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
        # Generate / Cancel: the workspace pins this bar under the scrolling form, always in view.
        self.actionBar = QWidget(objectName="generateActionBar")
        buttons = QHBoxLayout(self.actionBar)
        buttons.setContentsMargins(0, 4, 0, 0)
        buttons.addWidget(self.generateButton, 2)
        buttons.addWidget(self.cancelButton, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for box in (model_box, prompt_box, sampling_box, self.initImageBox):
            layout.addWidget(box)
        layout.addStretch(1)
        self._refresh_icons()
        self.setMinimumWidth(280)

        self._show(state.settings)
        self.samplerCombo.currentIndexChanged.connect(self._update_sampler_hint)
        self.stepsSpin.valueChanged.connect(self._update_sampler_hint)
        for signal in (self.promptEdit.textChanged, self.negativePromptEdit.textChanged,
                       self.samplerCombo.currentIndexChanged, self.stepsSpin.valueChanged,
                       self.guidanceSpin.valueChanged, self.seedSpin.valueChanged, self.seedLockButton.toggled,
                       self.batchSpin.valueChanged, self.deviceCombo.currentIndexChanged,
                       self.classCombo.currentIndexChanged, self.widthSpin.valueChanged,
                       self.heightSpin.valueChanged):
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
            strength=self.state.settings.strength,  # the init image box edits it
            class_label=(int(self.classCombo.currentData()) if self._conditioning() == "class"
                         and self.classCombo.currentIndex() >= 0 else self.state.settings.class_label),
            width=self._size_of(self.widthSpin) if self._latent_factor() else self.state.settings.width,
            height=self._size_of(self.heightSpin) if self._latent_factor() else self.state.settings.height,
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
            self._set_steps(settings.steps)
            # Only a changed value is written back: setValue reformats the text ("7" -> "7.00")
            # and would eat the "." the user is about to type.
            if round(self.guidanceSpin.value(), 4) != settings.guidance:
                self.guidanceSpin.setValue(settings.guidance)
            if self.seedSpin.value() != settings.seed:
                self.seedSpin.setValue(settings.seed)
            self.seedLockButton.setChecked(settings.seed_locked)
            if self.batchSpin.value() != settings.batch:
                self.batchSpin.setValue(settings.batch)
            self.deviceCombo.setCurrentIndex(max(0, self.deviceCombo.findData(settings.device.value)))
            if settings.class_label is not None and self.classCombo.findData(settings.class_label) >= 0:
                self.classCombo.setCurrentIndex(self.classCombo.findData(settings.class_label))
            self._show_size(settings)
        finally:
            self._showing = False
        self._update_sampler_hint()
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
        steps = self.stepsSpin.value()
        self.stepsSpin.setMaximum(steps_limit(self.state.T))
        if self.stepsSpin.value() != steps:
            self._set_note(self.stepsNote, self.stepsSpin.note_for(steps))
        self._update_device_note()
        self._update_conditioning()
        self._update_size()
        self._update_prompt_hint()
        self._update_buttons()

    # --- the size of a latent model's images -------------------------------------------------
    @staticmethod
    def _size_spin(name: str, label: str) -> QSpinBox:
        spin = QSpinBox(objectName=name)
        spin.setKeyboardTracking(False)  # the value (rounded to the factor) once typing is done
        spin.setSuffix(" px")
        spin.setToolTip(f"{label} of the image in pixels: a multiple of the model's VAE factor")
        return spin

    def _latent_factor(self) -> int:
        """The loaded latent model's size step: its VAE factor, or the U-Net's multiple of it when known
        (`LatentModel.size_step`; SD: 64); 0 for a pixel model or none."""
        model = self.state.model
        return int(getattr(model.bundle, "size_step", 0)) if model is not None and model.is_latent else 0

    def _size_of(self, spin: QSpinBox) -> int:
        """The spin's value as a multiple of the factor (typed values are rounded to the nearest)."""
        factor = max(1, self._latent_factor())
        return max(factor, round(spin.value() / factor) * factor)

    def _show_size(self, settings: GenerationSettings) -> None:
        """Width and height from the settings, or the model's default size where unset or not a valid multiple."""
        factor = self._latent_factor()
        if not factor:
            return
        default = int(self.state.model.bundle.image_size) if self.state.model is not None else factor
        for spin, value in ((self.widthSpin, settings.width), (self.heightSpin, settings.height)):
            ok = value is not None and value % factor == 0 and factor <= value <= SIZE_MAX
            want = value if ok and value is not None else default
            if spin.value() != want:
                spin.setValue(want)

    def _update_size(self) -> None:
        """The size fields: shown for a latent model (step and minimum its factor), hidden otherwise."""
        factor = self._latent_factor()
        self.samplingForm.setRowVisible(self.sizeRow, bool(factor))
        for spin in (self.widthSpin, self.heightSpin):
            spin.setVisible(bool(factor))
            spin.setEnabled(bool(factor))
            if factor:
                spin.blockSignals(True)
                spin.setRange(factor, SIZE_MAX - SIZE_MAX % factor)
                spin.setSingleStep(factor)
                spin.blockSignals(False)
        if factor:
            self._showing = True
            try:
                self._show_size(self.state.settings)
            finally:
                self._showing = False
            self._push()

    def _conditioning(self) -> str:
        """The loaded model's conditioning kind: "text" (also without a model), "class" or "none"."""
        model = self.state.model
        return model.conditioning if model is not None else "text"

    def _update_conditioning(self) -> None:
        """The prompt box and guidance for the model's kind: text, class (the class picker) or none."""
        kind = self._conditioning()
        text = kind == "text"
        for edit in (self.promptEdit, self.negativePromptEdit):
            edit.setEnabled(text)
            edit.setVisible(kind != "class")
        self.promptEdit.setPlaceholderText(PROMPT_PLACEHOLDER if text else "This model takes no prompt")
        self.negativePromptEdit.setPlaceholderText(
            "What to steer away from (optional)" if text else "This model takes no negative prompt")
        self.guidanceSpin.setEnabled(text)
        self._set_note(self.guidanceNote, "" if text else NO_GUIDANCE_NOTE)
        self.promptBox.setTitle("Class" if kind == "class" else "Prompt")
        self.classCombo.setVisible(kind == "class")
        self.classCombo.blockSignals(True)
        self.classCombo.clear()
        if kind == "class" and self.state.model is not None:
            bundle = self.state.model.bundle
            names = bundle.class_names or [f"class {i}" for i in range(bundle.num_classes or 0)]
            for i, name in enumerate(names):
                self.classCombo.addItem(f"{i} · {name}" if bundle.class_names else name, i)
            label = self.state.settings.class_label
            self.classCombo.setCurrentIndex(label if label is not None and 0 <= label < len(names) else 0)
        self.classCombo.blockSignals(False)
        if kind == "class":
            self._push()  # the state takes the class the picker shows

    # --- notes under the fields --------------------------------------------------------------
    @staticmethod
    def _set_note(label: QLabel, text: str) -> None:
        label.setText(text)
        label.setToolTip(text)
        label.setVisible(bool(text))

    def _set_steps(self, steps: int) -> None:
        """Steps from the state (reused settings, a dropped PNG): beyond the model's T is said, not hidden."""
        if steps != self.stepsSpin.clamp(steps):
            self._set_note(self.stepsNote, self.stepsSpin.note_for(steps))
        if self.stepsSpin.value() != steps:
            self.stepsSpin.setValue(steps)

    def _update_sampler_hint(self) -> None:
        """DDPM with few steps leaves noise: say which samplers need fewer."""
        steps = self.stepsSpin.value()
        text = ""
        if self.samplerCombo.currentData() == SamplerKind.DDPM.value and steps < DDPM_FEW_STEPS:
            text = (f"DDPM with {steps} steps leaves a noisy image: use DDIM or DPM-Solver++, "
                    f"or {DDPM_FEW_STEPS}+ steps.")
        self._set_note(self.samplerHint, text)

    def _update_prompt_hint(self) -> None:
        """The prompt's words this model does not know, or the unconditional note, as the user types."""
        if self.state.model is None:
            self._set_note(self.promptHint, "")
            return
        model = self.state.model
        kind = model.conditioning
        if kind == "text":
            note = prompt_note(self.promptEdit.toPlainText(), model.vocabulary, kind)
        else:
            note = CLASS_HINT if kind == "class" else UNCONDITIONAL_NOTE
        self._set_note(self.promptHint, note or "")

    def _update_device_note(self) -> None:
        """What really runs: "Auto → CPU (CUDA libraries missing)" after a fallback."""
        model = self.state.model
        info = getattr(model, "provider_info", None)
        self._set_note(self.deviceNote, device_note(info) if info is not None else "")
        if info is not None:
            self.deviceNote.setToolTip(info.describe())

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
