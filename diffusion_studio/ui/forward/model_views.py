"""The Forward tab meets the loaded model: what it predicts for the x_t on screen.

- `ModelPredictionView` (modelPredictionView): x̂_0 and ε̂ of the model for x_t (DDPM eq. 15,
  through `model_probe.x0_eps_from_output`) beside the true ε, their errors, and MSE(x̂_0, x_0)
  and MSE(ε̂, ε) over a coarse set of t (pyqtgraph), with an optional prompt.
- `PosteriorView` (posteriorView): the true posterior q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I)
  beside the model's p_θ(x_{t−1} | x_t) = N(μ_θ, σ_t² I) (DDPM eqs. 6–7, 11) for the same x_t,
  each sampled with the same z (`core.posterior_compare`).
- `ModelViews` keeps both in step with the `ForwardState` and the loaded model: it asks the
  `ModelProbe` (a worker thread, latest-wins) only while one of the views is on screen, and
  says in one note why there is nothing to show (no model, another image size or schedule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from diffusion_studio.core.images import to_uint8
from diffusion_studio.core.params import DdpmVariance
from diffusion_studio.core.posterior_compare import PosteriorComparison, compare_posteriors
from diffusion_studio.core.prediction import PredictionKind, VarianceKind
from diffusion_studio.ui.forward.controls import offers_schedule, same_schedule
from diffusion_studio.ui.forward.model_probe import Inputs, ModelProbe, MseCurve, OutputKind, Prediction
from diffusion_studio.ui.forward.sources import rgb_view
from diffusion_studio.ui.forward.state import T_MAX, ForwardState
from diffusion_studio.ui.generate.previews import eps_to_uint8
from diffusion_studio.ui.widgets.contrast import set_muted
from diffusion_studio.ui.widgets.hats import HAT, hat_font
from diffusion_studio.ui.widgets.image_view import ImageView
from diffusion_studio.ui.widgets.plotting import series_color

if TYPE_CHECKING:
    from diffusion_studio.ui.models import LoadedModel

NO_MODEL = ("No model is loaded, so there is no prediction to show. Open a model bundle with "
            "File ▸ Open model bundle… (Ctrl+O).")
IMAGE_MIN = 96
PROMPT_TIP = ("The caption the model is told (text models); the empty prompt asks for the unconditional "
              "prediction, as guidance does")


def hats(html: str) -> str:
    """Rich text whose x̂ is drawn in a family that puts the hat on the x (`widgets.hats`); the rest
    keeps the widget's font, where β̃, μ̃ and ε̂ land (no one family draws x̂ and β̃ both)."""
    font = QApplication.font()
    family = hat_font(font, (("x", HAT),)).families()[0]
    if family == font.family():
        return html
    return html.replace("x̂", f"<span style=\"font-family: '{family}'\">x̂</span>")


def _image_panel(title: str, name: str, placeholder: str) -> tuple[QWidget, ImageView, QLabel]:
    box = QWidget()
    label = QLabel(hats(title), alignment=Qt.AlignmentFlag.AlignCenter, textFormat=Qt.TextFormat.RichText)
    view = ImageView(placeholder=placeholder)
    view.setObjectName(name)
    view.setMinimumSize(IMAGE_MIN, IMAGE_MIN)
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(label)
    layout.addWidget(view, 1)
    return box, view, label


class _NoteBar(QFrame):
    """One sentence why the model views are empty, with a button that fixes it when one can."""

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(name)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.label = QLabel(wordWrap=True, objectName=f"{name}Label")
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.button = QPushButton(objectName=f"{name}Button")
        layout = QHBoxLayout(self)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.button)
        self.setVisible(False)

    def show_note(self, text: str | None, button: str = "") -> None:
        self.label.setText(text or "")
        self.button.setText(button)
        self.button.setVisible(bool(button))
        self.setVisible(bool(text))


class ModelPredictionView(QWidget):
    """x̂₀, ε̂ and ε for the x_t on screen; MSE over t in a small plot."""

    def hasHeightForWidth(self) -> bool:
        # Wrapped labels inside must not make the scrolling Forward page as tall as every
        # preferred height (QScrollArea honours height-for-width); the page keeps the viewport's height.
        return False

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("modelPredictionView")
        self.note = _NoteBar("modelPredictionNote")
        self.promptEdit = QLineEdit(objectName="forwardPromptEdit")
        self.promptEdit.setPlaceholderText("empty: unconditional ε̂(x_t, t)")
        self.promptEdit.setToolTip(PROMPT_TIP)
        self.promptEdit.setClearButtonEnabled(True)
        prompt_row = QHBoxLayout()
        prompt_row.addWidget(QLabel("Prompt"))
        prompt_row.addWidget(self.promptEdit, 1)

        x0_box, self.x0View, self.x0Title = _image_panel("x̂<sub>0</sub> (model)", "predictedX0View", "x̂₀")
        eps_box, self.epsView, self.epsTitle = _image_panel("ε̂ (model)", "predictedEpsView", "ε̂")
        true_box, self.trueEpsView, _ = _image_panel("ε (true)", "trueEpsView", "ε")
        images = QHBoxLayout()
        for box in (x0_box, eps_box, true_box):
            images.addWidget(box, 1)

        self.statsLabel = QLabel(objectName="modelPredictionStats", textFormat=Qt.TextFormat.RichText,
                                 wordWrap=True)
        self.statsLabel.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.formulaLabel = QLabel(hats(output_formula(OutputKind())), objectName="modelPredictionFormula",
                                   textFormat=Qt.TextFormat.RichText, wordWrap=True)
        set_muted(self.formulaLabel)

        self.msePlot = pg.PlotWidget()
        self.msePlot.setObjectName("mseCurvePlot")
        self.msePlot.setMinimumSize(240, 170)
        self.msePlot.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._style_plot()

        left = QVBoxLayout()
        left.addLayout(images, 1)
        left.addWidget(self.statsLabel)
        left.addWidget(self.formulaLabel)
        row = QHBoxLayout()
        row.addLayout(left, 3)
        row.addWidget(self.msePlot, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 6, 0, 0)
        layout.addWidget(self.note)
        layout.addLayout(prompt_row)
        layout.addLayout(row, 1)
        self._curve: MseCurve | None = None

    def _style_plot(self) -> None:
        palette = self.palette()
        text = palette.color(QPalette.ColorRole.WindowText)
        self.msePlot.setBackground(palette.color(QPalette.ColorRole.Base))
        item = self.msePlot.getPlotItem()
        item.setLogMode(x=False, y=True)
        item.hideButtons()
        item.setMenuEnabled(False)
        item.setMouseEnabled(x=False, y=False)
        item.showGrid(x=True, y=True, alpha=0.15)
        for side, label in (("bottom", "t"), ("left", "MSE")):
            axis = item.getAxis(side)
            axis.setPen(pg.mkPen(text))
            axis.setTextPen(pg.mkPen(text))
            item.setLabel(side, label, color=text.name())
        item.setTitle("MSE of the prediction over t", color=text.name(), size="9pt")
        legend = item.addLegend(labelTextColor=text)
        legend.anchor(itemPos=(0.5, 0), parentPos=(0.5, 0), offset=(0, 4))  # top centre: the curves pass below
        legend.setLabelTextSize("8pt")
        self.x0Curve = item.plot([], [], pen=pg.mkPen(series_color(palette, 0), width=2), name="x₀ error")
        self.epsCurve = item.plot([], [], pen=pg.mkPen(series_color(palette, 1), width=2), name="ε error")
        marker = QColor(text)
        marker.setAlpha(140)
        self.tLine = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(marker, style=Qt.PenStyle.DashLine))
        item.addItem(self.tLine, ignoreBounds=True)
        self.tPoints = pg.ScatterPlotItem(size=8, pen=pg.mkPen(text), brush=pg.mkBrush(series_color(palette, 0)))
        item.addItem(self.tPoints)

    # --- data ------------------------------------------------------------------------------
    def clear(self, placeholder: str = "") -> None:
        for view in (self.x0View, self.epsView, self.trueEpsView):
            view.set_image(None)
            view.set_placeholder(placeholder)
        self.statsLabel.setText("")
        self.show_curve(None)

    def show_prediction(self, p: Prediction, true_eps: np.ndarray, T: int, predicts_eps: bool = True) -> None:
        """`predicts_eps`: the network's output is ε̂, so MSE(ε̂, ε) is its training loss (eq. 14)."""
        self.x0View.set_image(rgb_view(to_uint8(p.x0_pred)))  # a grey model's [1, H, W]: R = G = B
        self.epsView.set_image(rgb_view(eps_to_uint8(p.eps_pred[None])[0]))
        self.trueEpsView.set_image(rgb_view(eps_to_uint8(true_eps[None])[0]))
        self.x0Title.setText(hats(f"x̂<sub>0</sub> (model, t = {p.t})"))
        self.epsTitle.setText(f"ε̂ = ε<sub>θ</sub>(x<sub>t</sub>, t = {p.t})" if predicts_eps
                              else f"ε̂ (from the model's output, t = {p.t})")
        loss = "the training loss, eq. 14, " if predicts_eps else ""
        prompt = f"“{p.prompt}”" if p.prompt else "the empty prompt (unconditional)"
        self.statsLabel.setText(hats(
            f"MSE(x̂<sub>0</sub>, x<sub>0</sub>) = <b>{p.mse_x0:.4g}</b> &nbsp;·&nbsp; "
            f"MSE(ε̂, ε) = <b>{p.mse_eps:.4g}</b> ({loss}at t = {p.t} of {T})"
            f" &nbsp;·&nbsp; prompt: {_escape(prompt)}"
        ))
        self.tPoints.setData([p.t], [_log10(p.mse_x0)])

    def show_curve(self, curve: MseCurve | None) -> None:
        self._curve = curve
        if curve is None:
            self.x0Curve.setData([], [])
            self.epsCurve.setData([], [])
            self.tPoints.setData([], [])
            return
        self.x0Curve.setData(curve.ts, [max(v, 1e-12) for v in curve.mse_x0])
        self.epsCurve.setData(curve.ts, [max(v, 1e-12) for v in curve.mse_eps])
        self.msePlot.getPlotItem().setXRange(0, curve.ts[-1], padding=0.02)

    def curve(self) -> MseCurve | None:
        return self._curve

    def set_t(self, t: int) -> None:
        self.tLine.setValue(t)


class PosteriorView(QWidget):
    """q(x_{t−1} | x_t, x_0) beside p_θ(x_{t−1} | x_t): means, samples with one z, the numbers."""

    varianceChanged = Signal()

    def hasHeightForWidth(self) -> bool:
        # Wrapped labels inside must not make the scrolling Forward page as tall as every
        # preferred height (QScrollArea honours height-for-width); the page keeps the viewport's height.
        return False

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("posteriorView")
        self.note = _NoteBar("posteriorNote")
        boxes = []
        self.views: dict[str, ImageView] = {}
        for key, title, name in (
            ("mean_q", "μ̃<sub>t</sub> (true mean)", "posteriorMeanView"),
            ("sample_q", "q: μ̃<sub>t</sub> + √β̃<sub>t</sub> z", "posteriorSampleView"),
            ("mean_p", "μ<sub>θ</sub> (model mean)", "modelMeanView"),
            ("sample_p", "p<sub>θ</sub>: μ<sub>θ</sub> + σ<sub>t</sub> z", "modelSampleView"),
        ):
            box, view, _label = _image_panel(title, name, "")
            boxes.append(box)
            self.views[key] = view
        for key, tip in (("mean_q", "μ̃_t = c₁ x₀ + c₂ x_t: the mean of q, from the true x₀"),
                         ("sample_q", "x_{t−1} drawn from q(x_{t−1} | x_t, x₀)"),
                         ("mean_p", "μ_θ = c₁ x̂₀ + c₂ x_t: the same formula with the model's x̂₀"),
                         ("sample_p", "x_{t−1} drawn from p_θ(x_{t−1} | x_t) with the same z")):
            self.views[key].setToolTip(tip)
        diff_box, self.differenceView, self.differenceTitle = _image_panel("μ̃<sub>t</sub> − μ<sub>θ</sub>",
                                                                           "meanDifferenceView", "")
        self.differenceView.setToolTip("c₁ (x₀ − x̂₀), stretched so its largest value is full scale; grey is 0")
        boxes.append(diff_box)
        grid = QGridLayout()
        for i, box in enumerate(boxes):
            grid.addWidget(box, 0, i)
            grid.setColumnStretch(i, 1)

        self.varianceCombo = QComboBox(objectName="posteriorVarianceCombo")
        self.varianceCombo.addItem("σ_t² = β_t (DDPM sampler default)", DdpmVariance.BETA.value)
        self.varianceCombo.addItem("σ_t² = β̃_t (the true posterior variance)", DdpmVariance.BETA_TILDE.value)
        self.varianceCombo.setToolTip("The variance of p_θ (DDPM §3.2: both give similar samples)")
        self.varianceCombo.currentIndexChanged.connect(lambda _i: self.varianceChanged.emit())
        variance_row = QHBoxLayout()
        variance_row.addWidget(QLabel("Model variance"))
        variance_row.addWidget(self.varianceCombo)
        variance_row.addStretch(1)

        self.textLabel = QLabel(objectName="posteriorText", textFormat=Qt.TextFormat.RichText, wordWrap=True)
        self.textLabel.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.textLabel.setMinimumWidth(300)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 6, 0, 0)
        layout.addWidget(self.note)
        layout.addLayout(grid, 1)
        layout.addLayout(variance_row)
        layout.addWidget(self.textLabel)
        self._comparison: PosteriorComparison | None = None

    def variance(self) -> DdpmVariance:
        return DdpmVariance(self.varianceCombo.currentData())

    def comparison(self) -> PosteriorComparison | None:
        return self._comparison

    def clear(self) -> None:
        self._comparison = None
        for view in (*self.views.values(), self.differenceView):
            view.set_image(None)
        self.textLabel.setText("")

    def show_comparison(self, c: PosteriorComparison) -> None:
        self._comparison = c
        for key, view in self.views.items():
            view.set_image(rgb_view(to_uint8(getattr(c, key))))
        diff = c.mean_q.astype(np.float64) - c.mean_p
        peak = float(np.max(np.abs(diff)))
        gain = 1.0 / peak if peak > 0 else 1.0
        self.differenceView.set_image(rgb_view(to_uint8(diff * gain)))
        self.differenceTitle.setText(f"μ̃<sub>t</sub> − μ<sub>θ</sub> (× {gain:.3g})")
        self.textLabel.setText(hats(posterior_html(c)))


def posterior_html(c: PosteriorComparison) -> str:
    """The numbers of one posterior comparison as rich text (DDPM eqs. 6–7 and 11)."""
    sub = "<sub>t−1</sub>"
    variance = "β<sub>t</sub>" if c.variance is DdpmVariance.BETA else "β̃<sub>t</sub>"
    if c.t == 1:
        sigma = "0 (the last step adds no noise)"
        kl = "— (at t = 1 both are point masses: q at x<sub>0</sub>, p<sub>θ</sub> at μ<sub>θ</sub>)"
    else:
        sigma = f"{variance} = {c.sigma2:.6g}"
        kl = f"{c.kl_per_dim:.4g} nats"
    return (
        f"<b>q(x{sub} | x<sub>t</sub>, x<sub>0</sub>) = N(μ̃<sub>t</sub>, β̃<sub>t</sub> I)</b>, "
        f"μ̃<sub>t</sub> = c<sub>1</sub> x<sub>0</sub> + c<sub>2</sub> x<sub>t</sub> "
        f"= {c.coef_x0:.6g} · x<sub>0</sub> + {c.coef_xt:.6g} · x<sub>t</sub>, β̃<sub>t</sub> = {c.beta_tilde:.6g}"
        f" &nbsp;(eqs. 6–7)<br>"
        f"<b>p<sub>θ</sub>(x{sub} | x<sub>t</sub>) = N(μ<sub>θ</sub>, σ<sub>t</sub>² I)</b>, "
        f"μ<sub>θ</sub> = c<sub>1</sub> x̂<sub>0</sub> + c<sub>2</sub> x<sub>t</sub> (eq. 11), "
        f"σ<sub>t</sub>² = {sigma}<br>"
        f"c<sub>1</sub> = √ᾱ<sub>t−1</sub> β<sub>t</sub> / (1 − ᾱ<sub>t</sub>), "
        f"c<sub>2</sub> = √α<sub>t</sub> (1 − ᾱ<sub>t−1</sub>) / (1 − ᾱ<sub>t</sub>), t = {c.t}<br>"
        f"‖μ̃<sub>t</sub> − μ<sub>θ</sub>‖² = c<sub>1</sub>² ‖x<sub>0</sub> − x̂<sub>0</sub>‖² = "
        f"<b>{c.mean_distance:.4g}</b> over {c.dims} values &nbsp;·&nbsp; "
        f"KL(q ‖ p<sub>θ</sub>) per value = <b>{kl}</b>"
    )


def output_formula(kind: OutputKind) -> str:
    """How x̂_0 and ε̂ come from this kind of network output, as rich text."""
    sa, s1a = "√ᾱ<sub>t</sub>", "√(1 − ᾱ<sub>t</sub>)"
    if kind.prediction is PredictionKind.V_PREDICTION:
        text = (f"x̂<sub>0</sub> = {sa} x<sub>t</sub> − {s1a} v̂, ε̂ = {s1a} x<sub>t</sub> + {sa} v̂ "
                "(v-prediction, Salimans &amp; Ho 2022)")
    elif kind.prediction is PredictionKind.SAMPLE:
        text = f"x̂<sub>0</sub> is the network's output, ε̂ = (x<sub>t</sub> − {sa} x̂<sub>0</sub>) / {s1a} (eq. 4)"
    else:
        text = f"x̂<sub>0</sub> = (x<sub>t</sub> − {s1a} ε̂) / {sa} (DDPM eq. 15)"
    r = kind.clip_range
    return text + (f"; x̂<sub>0</sub> clipped to [−{r:g}, {r:g}] as the samplers do" if r is not None
                   else "; x̂<sub>0</sub> not clipped (the model's samplers do not clip)")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _log10(value: float) -> float:
    return float(np.log10(max(value, 1e-12)))


class ModelViews(QObject):
    """Keeps `ModelPredictionView` and `PosteriorView` in step with the state and the model."""

    matchModelRequested = Signal()  # the note's button: x_0 size and schedule of the model

    def __init__(self, state: ForwardState, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.prediction = ModelPredictionView()
        self.posterior = PosteriorView()
        self.probe = ModelProbe(self)
        self._model: LoadedModel | None = None
        self._no_model = NO_MODEL
        self._version = 0
        self._inputs: Inputs | None = None
        self._last: Prediction | None = None
        self._curve_version = -1  # the inputs version of the curve shown or asked for
        self._asked: tuple[int, int] | None = None  # (version, t) last asked for

        for view in (self.prediction, self.posterior):
            view.installEventFilter(self)
            view.note.button.clicked.connect(self.matchModelRequested)
        self.prediction.promptEdit.textChanged.connect(self._inputs_changed)
        self.posterior.varianceChanged.connect(self._show_posterior)
        state.sourceChanged.connect(self._inputs_changed)
        state.scheduleChanged.connect(self._inputs_changed)
        state.noiseChanged.connect(self._inputs_changed)
        state.tChanged.connect(self._on_t_changed)
        self.probe.predicted.connect(self._on_predicted)
        self.probe.curveReady.connect(self._on_curve)
        self.probe.failed.connect(self._on_failed)
        self.prediction.set_t(state.t)
        self._inputs_changed()

    # --- inputs ----------------------------------------------------------------------------
    def set_model(self, model: LoadedModel | None, reason: str | None = None) -> None:
        """The model to ask (None: none is loaded, `reason` says why)."""
        self._model = model
        self._no_model = reason or NO_MODEL
        if model is not None:  # p_θ's variance: the model's own, fixed_small -> β̃_t, else β_t to start with
            small = OutputKind.of(model).variance is VarianceKind.FIXED_SMALL
            self.posterior.varianceCombo.setCurrentIndex(1 if small else 0)
        text = model is not None and model.conditioning == "text"
        self.prediction.promptEdit.setEnabled(text)
        self.prediction.promptEdit.setToolTip(PROMPT_TIP if text or model is None else
                                              "This model takes no caption; its prediction is unconditional.")
        self._inputs_changed()

    def model(self) -> LoadedModel | None:
        return self._model

    def problem(self) -> tuple[str, str] | None:
        """(why the views are empty, the fixing button's text or "") or None when the model can answer."""
        model = self._model
        if model is None:
            return self._no_model, ""
        b, st = model.bundle, self.state
        size, kind, T = b.image_size, b.schedule.kind.value, b.schedule.T
        if b.channels not in (1, 3):
            return f"The model {model.name} makes {b.channels}-channel images; x₀ here has 1 or 3 channels.", ""
        if not 2 <= T <= T_MAX:
            return f"The model {model.name} has T = {T} steps; the Forward tab shows 2 to {T_MAX}.", ""
        betas = b.schedule.betas
        ends = "" if offers_schedule(b.schedule) else f", β from {betas[0]:.3g} to {betas[-1]:.3g}"
        why: list[str] = []
        fixes: list[str] = []
        if st.source_size != size or st.channels != b.channels:
            colour = {1: " grey", 3: " RGB"} if st.channels != b.channels else {1: "", 3: ""}
            why.append(f"makes {size} × {size}{colour[b.channels]} images and x₀ here is "
                       f"{st.source_size} × {st.source_size}{colour[st.channels]}")
            fixes.append(f"{size} × {size}{colour[b.channels]}")
        if not same_schedule(st.schedule, b.schedule):
            why.append(f"was trained with the {kind} schedule, T = {T}{ends}, and x_t here uses "
                       f"{st.kind.value}, T = {st.T}")
            fixes.append("the model's schedule")
        if not why:
            return None
        return f"The model {model.name} " + "; it ".join(why) + ".", "Use " + " and ".join(fixes)

    def _inputs_changed(self, *_args: object) -> None:
        self._version += 1
        self._inputs = None
        self._last = None
        self.refresh()

    def _current_inputs(self, model: LoadedModel) -> Inputs:
        if self._inputs is None:
            st = self.state
            self._inputs = Inputs(self._version, model, st.schedule, st.x_0, st.eps,
                                  self.prediction.promptEdit.text().strip())
        return self._inputs

    def _on_t_changed(self, t: int) -> None:
        self.prediction.set_t(t)
        self.refresh()

    def active(self) -> bool:
        """Whether a model view is on screen (nothing is computed for hidden views)."""
        return self.prediction.isVisible() or self.posterior.isVisible()

    def refresh(self) -> None:
        """Ask the model for the current t (and the curve) if a view is shown and the answer is not here."""
        problem = self.problem()
        for view in (self.prediction, self.posterior):
            view.note.show_note(*(problem or (None, "")))
        if problem is not None:
            self._last = None
            self._curve_version = -1
            self._asked = None
            self.prediction.clear("no prediction")
            self.posterior.clear()
            return
        if not self.active() or self._model is None:
            return
        inputs = self._current_inputs(self._model)
        t = self.state.t
        have = self._last is not None and (self._last.version, self._last.t) == (inputs.version, t)
        if not have and self._asked != (inputs.version, t):
            self._asked = (inputs.version, t)
            self.probe.request(inputs, t)
        if self._curve_version != inputs.version:
            self._curve_version = inputs.version
            self.probe.request_curve(inputs)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Show:
            self.refresh()
        return False

    # --- answers ---------------------------------------------------------------------------
    def _on_predicted(self, p: Prediction) -> None:
        if self._inputs is None or p.version != self._inputs.version:
            return  # asked before x_0, ε, the schedule, the prompt or the model changed
        self._last = p
        kind = OutputKind.of(self._inputs.model)
        self.prediction.formulaLabel.setText(hats(output_formula(kind)))
        self.prediction.show_prediction(p, self._inputs.eps, self._inputs.schedule.T,
                                        kind.prediction is PredictionKind.EPSILON)
        self._show_posterior()

    def _show_posterior(self) -> None:
        p, inputs = self._last, self._inputs
        if p is None or inputs is None:
            return
        z = np.random.default_rng([self.state.seed, 2, p.t]).standard_normal(inputs.x_0.shape, dtype=np.float32)
        self.posterior.show_comparison(compare_posteriors(
            inputs.schedule, inputs.x_0, p.x_t, p.x0_pred, p.t, z, self.posterior.variance()))

    def _on_curve(self, curve: MseCurve) -> None:
        if self._inputs is not None and curve.version == self._inputs.version:
            self.prediction.show_curve(curve)

    def _on_failed(self, version: int, message: str) -> None:
        if self._inputs is not None and version == self._inputs.version:
            for view in (self.prediction, self.posterior):
                view.note.show_note(message)

    def last_prediction(self) -> Prediction | None:
        return self._last

    def busy(self) -> bool:
        return self.probe.busy()

    def shutdown(self) -> bool:
        return self.probe.shutdown()
