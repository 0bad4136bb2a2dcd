"""The right side of the Train workspace: what a training run shows while and after it runs.

A message line, the progress bar with ETA, throughput and size, `lossPlot`, the latest
sample grid, the last checkpoint, the export summary and a log of commands and stderr.
It displays a `TrainRun`; it never starts anything.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QGroupBox,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from diffusion_studio.errors import UsageError
from diffusion_studio.ui.formatting import format_seconds
from diffusion_studio.ui.train.run import TrainRun
from diffusion_studio.ui.widgets.image_view import ImageView, read_image_array
from diffusion_studio.ui.widgets.loss_plot import LossPlot

LOG_LINES = 2000  # lines the log view keeps
LOG_MIN_LINES = 8  # lines the log view always shows (its splitter gives it more)
ERROR_STYLE = "color: #d9534f; font-weight: bold;"  # readable on light and dark palettes


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

        self.sampleView = ImageView(placeholder="Sample grids from the EMA weights appear here.")
        self.sampleView.setObjectName("sampleGridView")
        self.sampleView.setMinimumSize(200, 200)
        self.sampleCaption = _selectable(QLabel(objectName="sampleCaptionLabel",
                                                alignment=Qt.AlignmentFlag.AlignCenter))
        sample_box = QGroupBox("Latest samples")
        sample_layout = QVBoxLayout(sample_box)
        sample_layout.addWidget(self.sampleView, 1)
        sample_layout.addWidget(self.sampleCaption)

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
        top.setStretchFactor(0, 3)
        top.setStretchFactor(1, 2)
        top.setChildrenCollapsible(False)
        self.splitter = QSplitter(Qt.Orientation.Vertical, objectName="trainLogSplitter")
        self.splitter.addWidget(top)
        self.splitter.addWidget(self.logView)
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
        self.sampleView.set_image(None)
        self.sampleCaption.setText("")
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

    def show_sample(self, path: Path, step: int, prompts: list[str] | None = None) -> str | None:
        """Show a sample grid PNG; returns an error sentence if it cannot be read."""
        try:
            image = read_image_array(path, "The sample grid", alpha=False)
        except UsageError as exc:
            return str(exc)
        self.sampleView.set_image(image)
        count = f" · {len(prompts)} prompts" if prompts else ""
        self.sampleCaption.setText(f"Step {step} · EMA weights{count}")
        tip = "\n".join(f"{i + 1}. {p}" for i, p in enumerate(prompts or []))
        self.sampleCaption.setToolTip(f"{path}\n{tip}" if tip else str(path))
        self.sampleView.setToolTip(self.sampleCaption.toolTip())
        return None

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
