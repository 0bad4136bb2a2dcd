"""The right side of the Train workspace: what a training run shows while and after it runs.

A message line, the progress bar with ETA, throughput and size, `lossPlot`, the latest
sample grids of the EMA weights (`emaSamplesView`) and of the raw weights (`rawSamplesView`)
side by side with their prompts under them, the run's checkpoints (`checkpointList`, the one
to export and EMA or raw weights), the last checkpoint, the export summary and a log of
commands and stderr. It displays a `TrainRun` and a run folder; it never starts anything.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QSize, Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from diffusion_studio.errors import UsageError
from diffusion_studio.ui.formatting import format_seconds
from diffusion_studio.ui.train.run import CheckpointInfo, TrainRun, prompt_rows
from diffusion_studio.ui.widgets.image_view import ImageView, read_image_array
from diffusion_studio.ui.widgets.loss_plot import LossPlot

LOG_LINES = 2000  # lines the log view keeps
LOG_MIN_LINES = 8  # lines the log view always shows (its splitter gives it more)
ERROR_STYLE = "color: #d9534f; font-weight: bold;"  # readable on light and dark palettes
PROMPT_LINES = 6  # lines of prompts shown under the grids before they scroll
EMA_TITLE = "EMA weights (exported by default)"
RAW_TITLE = "Raw weights"
WEIGHT_CHOICES = (("ema", "EMA weights (default)"), ("raw", "Raw weights"))


def _selectable(label: QLabel) -> QLabel:
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setWordWrap(True)
    return label


def progress_format(run: TrainRun) -> str:
    """"step 120/300 · ETA 1 min 20 s" (no ETA once done)."""
    eta = f" · ETA {format_seconds(run.eta_s)}" if run.eta_s and run.step < run.steps else ""
    return f"step {run.step}/{run.steps}{eta}"


def stats_text(run: TrainRun) -> str:
    """"loss 0.0712 · lr 1.00e-03 · 123 images/s · 343,683 parameters · device cpu"."""
    parts = []
    if run.losses:
        parts.append(f"loss {run.losses[-1][1]:.4f}")
    if run.lr is not None:
        parts.append(f"lr {run.lr:.2e}")
    if run.images_per_s:
        parts.append(f"{run.images_per_s:.0f} images/s")
    if isinstance(run.parameters, int):
        parts.append(f"{run.parameters:,} parameters")
    if run.device:
        parts.append(f"device {run.device}")
    return " · ".join(parts)


class TitledPair(QWidget):
    """Two (title, image view) columns of exactly the same size, so the views zoom the two grids alike
    (ImageView scales by whole factors: a column one pixel narrower could show its grid at half size)."""

    GAP = 6
    MIN_VIEW = 96  # two grids fit the narrowest window

    def __init__(self, left: tuple[QLabel, ImageView], right: tuple[QLabel, ImageView],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.columns = (left, right)
        for title, view in self.columns:
            title.setParent(self)
            view.setParent(self)
            title.setAlignment(Qt.AlignmentFlag.AlignCenter)
            title.setWordWrap(True)
            font = title.font()
            font.setBold(True)
            title.setFont(font)
            view.setMinimumSize(self.MIN_VIEW, self.MIN_VIEW)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def _title_height(self, width: int) -> int:
        return max(title.heightForWidth(width) for title, _ in self.columns)

    def minimumSizeHint(self) -> QSize:
        return QSize(2 * self.MIN_VIEW + self.GAP, self._title_height(self.MIN_VIEW) + self.GAP + self.MIN_VIEW)

    def sizeHint(self) -> QSize:
        return QSize(600, 400)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        width = max(1, (self.width() - self.GAP) // 2)
        top = self._title_height(width)
        for i, (title, view) in enumerate(self.columns):
            x = i * (width + self.GAP)
            title.setGeometry(x, 0, width, top)
            view.setGeometry(x, top + self.GAP, width, max(1, self.height() - top - self.GAP))


class TrainView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("trainView")
        self.messageLabel = _selectable(QLabel("Set up a run and click Start training.",
                                               objectName="trainMessageLabel"))
        self.progressBar = QProgressBar(objectName="trainProgressBar")
        self.statsLabel = _selectable(QLabel(objectName="trainStatsLabel"))

        self.lossPlot = LossPlot()
        self.logScaleCheck = QCheckBox("Log scale", objectName="lossLogScaleCheck")
        self.logScaleCheck.toggled.connect(self.lossPlot.set_log_scale)
        plot_box = QGroupBox("Loss")
        plot_layout = QVBoxLayout(plot_box)
        plot_layout.addWidget(self.lossPlot, 1)
        plot_layout.addWidget(self.logScaleCheck)

        # The same prompts and seed from the EMA weights (what is exported) and the raw weights.
        self.emaSamplesView = ImageView(placeholder="Samples from the EMA weights appear here.")
        self.emaSamplesView.setObjectName("emaSamplesView")
        self.rawSamplesView = ImageView(placeholder="Samples from the raw weights appear here.")
        self.rawSamplesView.setObjectName("rawSamplesView")
        self.sampleView = self.emaSamplesView  # the grid an export ships (older name)
        self.emaSamplesTitle = QLabel(EMA_TITLE, objectName="emaSamplesTitle")
        self.rawSamplesTitle = QLabel(RAW_TITLE, objectName="rawSamplesTitle")
        grids = TitledPair((self.emaSamplesTitle, self.emaSamplesView), (self.rawSamplesTitle, self.rawSamplesView))
        self.sampleCaption = _selectable(QLabel(objectName="sampleCaptionLabel"))
        self.promptsLabel = _selectable(QLabel(objectName="samplePromptsLabel"))
        self.promptsLabel.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        prompts_scroll = QScrollArea(objectName="samplePromptsScroll")
        prompts_scroll.setWidget(self.promptsLabel)
        prompts_scroll.setWidgetResizable(True)
        prompts_scroll.setFrameShape(QFrame.Shape.NoFrame)
        prompts_scroll.viewport().setAutoFillBackground(False)  # the group box's colour, not a base panel
        prompts_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.promptsScroll = prompts_scroll
        prompts_scroll.installEventFilter(self)  # its height follows the wrapped text (_fit_prompts)
        sample_box = QGroupBox("Samples")
        self.sampleBox = sample_box
        sample_layout = QVBoxLayout(sample_box)
        sample_layout.addWidget(grids, 1)
        sample_layout.addWidget(self.sampleCaption)
        sample_layout.addWidget(prompts_scroll)

        # The run's checkpoints: the selected one (else the newest) is what Export writes.
        self.checkpointList = QTreeWidget(objectName="checkpointList")
        self.checkpointList.setHeaderLabels(["Checkpoint", "Loss", "Written"])
        self.checkpointList.setRootIsDecorated(False)
        self.checkpointList.setUniformRowHeights(True)
        self.checkpointList.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.checkpointList.setAccessibleName("Checkpoints of the run")
        header = self.checkpointList.header()
        header.setStretchLastSection(True)
        for col in (0, 1):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.checkpointList.itemSelectionChanged.connect(self._describe_export_source)
        self.exportWeightsCombo = QComboBox(objectName="exportWeightsCombo")
        for key, label in WEIGHT_CHOICES:
            self.exportWeightsCombo.addItem(label, key)
        self.exportWeightsCombo.setToolTip("python -m exporter --weights ema|raw: the EMA of the weights "
                                           "(smoother samples, the default) or the last update's weights")
        self.exportWeightsCombo.currentIndexChanged.connect(self._describe_export_source)
        self.exportCheckpointButton = QPushButton("Export…", objectName="exportCheckpointButton")
        self.exportCheckpointButton.setToolTip("Export the selected checkpoint (as the Export model bundle button)")
        self.exportSourceLabel = _selectable(QLabel(objectName="exportSourceLabel"))
        weights_row = QHBoxLayout()
        weights_row.addWidget(QLabel("Weights"))
        weights_row.addWidget(self.exportWeightsCombo, 1)
        weights_row.addWidget(self.exportCheckpointButton)
        checkpoint_box = QWidget(objectName="checkpointPanel")  # no frame: as short as the log beside it
        checkpoint_layout = QVBoxLayout(checkpoint_box)
        checkpoint_layout.setContentsMargins(0, 0, 0, 0)
        checkpoint_layout.setSpacing(4)
        checkpoint_layout.addWidget(self.checkpointList, 1)
        checkpoint_layout.addLayout(weights_row)
        checkpoint_layout.addWidget(self.exportSourceLabel)

        self.checkpointLabel = _selectable(QLabel(objectName="checkpointLabel"))
        self.exportSummaryLabel = _selectable(QLabel(objectName="exportSummaryLabel"))
        self.logView = QPlainTextEdit(objectName="trainLogView", readOnly=True)
        self.logView.setMaximumBlockCount(LOG_LINES)
        self.logView.setPlaceholderText("Commands, warnings and exporter output")
        self.logView.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.logView.setMinimumHeight(self.logView.fontMetrics().lineSpacing() * LOG_MIN_LINES + 12)

        top = QSplitter(Qt.Orientation.Horizontal, objectName="trainPlotSplitter")
        top.addWidget(plot_box)
        top.addWidget(sample_box)
        top.setStretchFactor(0, 1)
        top.setStretchFactor(1, 1)
        top.setSizes([4000, 6000])  # the two grids get more than the plot
        top.setChildrenCollapsible(False)
        bottom = QSplitter(Qt.Orientation.Horizontal, objectName="trainCheckpointSplitter")
        bottom.addWidget(checkpoint_box)
        bottom.addWidget(self.logView)
        bottom.setStretchFactor(0, 1)
        bottom.setStretchFactor(1, 2)
        bottom.setChildrenCollapsible(False)
        self.splitter = QSplitter(Qt.Orientation.Vertical, objectName="trainLogSplitter")
        self.splitter.addWidget(top)
        self.splitter.addWidget(bottom)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.messageLabel)
        layout.addWidget(self.progressBar)
        layout.addWidget(self.statsLabel)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.checkpointLabel)
        layout.addWidget(self.exportSummaryLabel)
        self.reset()
        self.progressBar.setFormat("Not running")

    # --- run -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Empty everything for a new run."""
        self.lossPlot.clear()
        self.clear_samples()
        self.statsLabel.setText("")
        self.checkpointLabel.setText("Last checkpoint: none yet")
        self.progressBar.setRange(0, 1)
        self.progressBar.setValue(0)

    def starting(self) -> None:
        self.reset()
        self.progressBar.setRange(0, 0)  # busy until the start event says how many steps
        self.progressBar.setFormat("Starting (loading PyTorch and the text encoder)…")

    def show_progress(self, run: TrainRun) -> None:
        """Progress bar, ETA and statistics of the latest event."""
        self.progressBar.setRange(0, max(1, run.steps))
        self.progressBar.setValue(min(run.step, run.steps))
        self.progressBar.setFormat(progress_format(run))
        self.statsLabel.setText(stats_text(run))

    def show_loss(self, run: TrainRun) -> None:
        if run.losses:
            self.lossPlot.add_point(*run.losses[-1])
        self.lossPlot.set_bucket_loss(run.bucket_loss)

    def show_checkpoint(self, path: str | None) -> None:
        if path:
            self.checkpointLabel.setText(f"Last checkpoint: {path}")

    def clear_samples(self) -> None:
        for view in (self.emaSamplesView, self.rawSamplesView):
            view.set_image(None)
            view.setToolTip("")
        self.sampleBox.setTitle("Samples")
        self.sampleCaption.setText("")
        self.sampleCaption.setToolTip("")
        self.promptsLabel.setText("")
        self.promptsScroll.setVisible(False)

    def show_samples(self, ema: Path | None, raw: Path | None, step: int, prompts: list[str] | None = None,
                     columns: int | None = None) -> list[str]:
        """Show the EMA and raw grids of one step (a None or unreadable one leaves its view empty)
        with the prompts under them, one line per grid row; returns the sentences of what could not be read."""
        problems = []
        for path, view, what in ((ema, self.emaSamplesView, "EMA"), (raw, self.rawSamplesView, "raw")):
            image = None
            if path is not None:
                try:
                    image = read_image_array(path, f"The {what} weights' sample grid", alpha=False)
                except UsageError as exc:
                    problems.append(str(exc))
            view.set_image(image)
            view.setToolTip(str(path) if image is not None else "")
        prompts = list(prompts or [])
        self.sampleBox.setTitle(f"Samples at step {step}")
        same = " (the same seeds for both grids)" if raw is not None else ""
        self.sampleCaption.setText(f"Prompts, row by row{same}:" if prompts else "")
        rows = prompt_rows(prompts, columns)
        self.promptsLabel.setText("\n".join(rows))
        self.promptsScroll.setVisible(bool(prompts))
        self._fit_prompts()
        tip = "\n".join(f"{i + 1}. {p}" for i, p in enumerate(prompts))
        for view in (self.emaSamplesView, self.rawSamplesView):
            if view.toolTip() and tip:
                view.setToolTip(f"{view.toolTip()}\n{tip}")
        return problems

    def _fit_prompts(self) -> None:
        """Make the prompts area as tall as its wrapped lines, at most PROMPT_LINES (then it scrolls)."""
        label, scroll = self.promptsLabel, self.promptsScroll
        margins = label.contentsMargins()
        needed = label.heightForWidth(max(1, scroll.viewport().width())) + margins.top() + margins.bottom()
        lines = max(2, min(PROMPT_LINES, self.sampleBox.height() // 4 // label.fontMetrics().lineSpacing()))
        most = label.fontMetrics().lineSpacing() * lines + 4  # a quarter of the box at most (small windows)
        height = max(1, min(needed, most))
        if scroll.height() != height or scroll.minimumHeight() != height:
            scroll.setFixedHeight(height)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.promptsScroll and event.type() == QEvent.Type.Resize:
            self._fit_prompts()
        return super().eventFilter(watched, event)

    def show_sample(self, path: Path, step: int, prompts: list[str] | None = None, raw: bool = False) -> str | None:
        """Show one grid PNG in its view (EMA, or raw); returns an error sentence if it cannot be read."""
        view = self.rawSamplesView if raw else self.emaSamplesView
        try:
            image = read_image_array(path, "The sample grid", alpha=False)
        except UsageError as exc:
            return str(exc)
        view.set_image(image)
        view.setToolTip(str(path))
        self.sampleBox.setTitle(f"Samples at step {step}")
        return None

    # --- checkpoints -----------------------------------------------------------------------
    def set_checkpoints(self, checkpoints: list[CheckpointInfo]) -> None:
        """List the run's checkpoints, newest first; the selection stays on the same file while it exists."""
        selected = self.selected_checkpoint()
        tree = self.checkpointList
        tree.blockSignals(True)
        try:
            tree.clear()
            for info in reversed(checkpoints):
                loss = f"{info.loss:.4f}" if info.loss is not None else "–"
                item = QTreeWidgetItem([f"{info.step:,}", loss, info.time_text()])
                item.setData(0, Qt.ItemDataRole.UserRole, info)
                item.setToolTip(0, str(info.path))
                for col in (0, 1):
                    item.setTextAlignment(col, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                tree.addTopLevelItem(item)
                if selected is not None and info.path == selected.path:
                    item.setSelected(True)
        finally:
            tree.blockSignals(False)
        self._describe_export_source()

    def _items(self) -> list[QTreeWidgetItem]:
        tree = self.checkpointList
        return [item for i in range(tree.topLevelItemCount()) if (item := tree.topLevelItem(i)) is not None]

    def checkpoints(self) -> list[CheckpointInfo]:
        """What the list shows, newest first."""
        return [item.data(0, Qt.ItemDataRole.UserRole) for item in self._items()]

    def select_checkpoint(self, step: int | None) -> None:
        """Select the checkpoint of `step` (None: no selection, i.e. the newest is exported)."""
        self.checkpointList.clearSelection()
        for item in self._items():
            if step is not None and item.data(0, Qt.ItemDataRole.UserRole).step == step:
                item.setSelected(True)
                self.checkpointList.setCurrentItem(item)

    def selected_checkpoint(self) -> CheckpointInfo | None:
        items = self.checkpointList.selectedItems()
        return items[0].data(0, Qt.ItemDataRole.UserRole) if items else None

    def export_weights(self) -> str:
        """"ema" or "raw": the weights Export writes."""
        return str(self.exportWeightsCombo.currentData())

    def _describe_export_source(self) -> None:
        chosen, listed = self.selected_checkpoint(), self.checkpoints()
        weights = "EMA" if self.export_weights() == "ema" else "raw"
        if chosen is not None:
            text = f"Export writes step {chosen.step:,}, {weights} weights."
        elif listed:
            text = f"Export writes the newest (step {listed[0].step:,}), {weights} weights."
        else:
            text = "No checkpoint yet."
        self.exportSourceLabel.setToolTip("Select a checkpoint in the list to export it instead of the newest.")
        self.exportSourceLabel.setText(text)

    def show_end(self, run: TrainRun, kind: str) -> None:
        self.progressBar.setRange(0, max(1, run.steps))
        self.progressBar.setValue(min(run.step, run.steps))
        label = {"done": "Done", "stopped": "Stopped"}.get(kind, "Failed")
        self.progressBar.setFormat(label + (f" at step {run.step}/{run.steps}" if run.steps else ""))
        self.show_checkpoint(run.checkpoint)

    # --- messages --------------------------------------------------------------------------
    def show_message(self, text: str, error: bool = False) -> None:
        self.messageLabel.setText(text)
        self.messageLabel.setStyleSheet(ERROR_STYLE if error else "")

    def message(self) -> str:
        return self.messageLabel.text()

    def log(self, line: str) -> None:
        self.logView.appendPlainText(line)
