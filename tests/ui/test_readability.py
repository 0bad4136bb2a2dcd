"""Readable learning views (issue 11 §4): labelled panels, hats that render, contrast, nothing cut
at the minimum window size, and "Use the Generate image" taking one image."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPalette
from PySide6.QtWidgets import QLabel

from diffusion_studio.ui.forward.coefficients import coefficient_rows
from diffusion_studio.ui.generate.preview_area import SIDE_LABELS
from diffusion_studio.ui.generate.previews import Frame, PreviewMode
from diffusion_studio.ui.widgets.contrast import WCAG_AA, contrast_ratio, muted_color
from diffusion_studio.ui.widgets.hats import draws_hats


def _frame(n: int = 4) -> Frame:
    rng = np.random.default_rng(0)

    def images() -> np.ndarray:
        return rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)

    return Frame(index=3, count=10, t=700, t_prev=600, x_prev=images(), x0_pred=images(), eps=images())


def test_side_by_side_panels_are_labelled(qtbot, make_window) -> None:
    window = make_window()
    window.show()
    qtbot.waitExposed(window)
    area = window.generateWorkspace.previewArea
    area.set_mode(PreviewMode.SIDE)
    area.show_frame(_frame())
    view = area.previewView
    assert view.panel_labels() == SIDE_LABELS == ("x_t", "x̂₀", "ε̂")
    rects = view.panel_label_rects()
    image = view.image_rect()
    assert len(rects) == 3
    for i, rect in enumerate(rects):  # each label centred over its third of the image, inside the view
        assert abs(rect.center().x() - (image.left() + (i + 0.5) * image.width() / 3)) < 1
        assert view.rect().toRectF().contains(rect)
    # The label is drawn: the grabbed label strip differs from the bare canvas.
    grabbed = view.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    strip = rects[1].toAlignedRect()
    colors = {grabbed.pixelColor(x, y).rgb() for x in range(strip.left(), strip.right())
              for y in range(strip.top(), strip.bottom())}
    assert len(colors) > 2
    area.set_mode(PreviewMode.X0)
    assert view.panel_labels() == ()


def test_hats_render_in_the_show_combo_and_the_view_menu(qtbot, make_window) -> None:
    window = make_window()
    combo = window.generateWorkspace.previewArea.previewModeCombo
    labels = [combo.itemText(i) for i in range(combo.count())]
    assert any("x̂₀" in label for label in labels) and any("ε̂" in label for label in labels)
    assert draws_hats(combo.font())  # the hat's pixels land above x and ε in this font
    assert draws_hats(window.generateWorkspace.previewArea.captionLabel.font())
    for action in window.modeActions.actions():
        assert draws_hats(action.font()), action.text()


def test_coefficient_descriptions_have_aa_contrast(qtbot, make_window) -> None:
    window = make_window()
    window.show()
    qtbot.waitExposed(window)
    ws = window.forwardWorkspace
    window.tabs.setCurrentWidget(ws)
    for key, _symbol, _value, meaning in coefficient_rows(ws.state.coefficients()):
        hint = ws.findChild(QLabel, f"{key}Hint")
        assert hint is not None and hint.isEnabled() and hint.text() == meaning
        grabbed = hint.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
        background = grabbed.pixelColor(1, 1)  # the label's corner: the table's background
        text = hint.palette().color(QPalette.ColorRole.WindowText)
        assert contrast_ratio(text, background) >= WCAG_AA, (key, text.name(), background.name())
        # The darkest drawn pixel is the text colour (anti-aliasing only lightens it).
        pixels = np.frombuffer(grabbed.constBits(), np.uint8).reshape(grabbed.height(), grabbed.bytesPerLine())
        darkest = pixels[:, : grabbed.width() * 3].reshape(grabbed.height(), grabbed.width(), 3).sum(axis=2).min()
        assert darkest <= text.red() + text.green() + text.blue() + 6


def test_muted_color_keeps_the_ratio_on_light_and_dark() -> None:
    from PySide6.QtGui import QColor

    for fg, bg in ((QColor("black"), QColor("#efefef")), (QColor("white"), QColor("#2d2d2d"))):
        muted = muted_color(fg, bg)
        assert WCAG_AA <= contrast_ratio(muted, bg) < contrast_ratio(fg, bg)
    assert round(contrast_ratio(QColor("black"), QColor("white")), 2) == 21.0


def _not_cut(label: QLabel) -> bool:
    return label.width() >= label.sizeHint().width() and label.height() >= label.minimumSizeHint().height()


def test_nothing_is_cut_at_the_minimum_window_size(qtbot, make_window) -> None:
    window = make_window()
    window.show()
    qtbot.waitExposed(window)
    window.resize(window.minimumSize())
    ws = window.forwardWorkspace
    window.tabs.setCurrentWidget(ws)
    ws.controls.markovCheck.setChecked(True)  # the widest layout: three image panels
    qtbot.waitUntil(lambda: window.size() == window.minimumSize())
    qtbot.wait(50)
    assert not ws.contentScroll.horizontalScrollBar().isVisible()
    labels = [ws.formulaLabel, ws.markovFormulaLabel, ws.statsLabel]
    for key, *_rest in coefficient_rows(ws.state.coefficients()):
        labels += [ws.findChild(QLabel, f"{key}Hint"), ws.findChild(QLabel, f"{key}Symbol"),
                   ws.coefficientLabels[key]]
    for label in labels:
        assert _not_cut(label), (label.objectName(), label.text(), label.width(), label.sizeHint().width())
    plot = ws.schedulePlot
    assert plot.legend_width() <= plot.width() - 30  # every legend row fits (rows wrap when narrow)
    ws.controls.markovCheck.setChecked(False)

    window.tabs.setCurrentWidget(window.generateWorkspace)
    qtbot.wait(50)
    button = window.generateWorkspace.settingsPanel.generateButton  # pinned under the form: always in view
    top_left = button.mapTo(window, button.rect().topLeft())
    assert button.isVisible() and window.rect().contains(top_left)
    assert top_left.y() + button.height() <= window.statusBar().y()

    long_path = "/home/someone/" + "/".join(f"folder-{i}" for i in range(30)) + "/shapes-bundle"
    window.show_status(f"Loaded shapes from {long_path}")
    bar = window.statusBar()
    message = bar.currentMessage()
    assert "…" in message and message.endswith("shapes-bundle") and message.startswith("Loaded shapes from /home")
    assert bar.fontMetrics().horizontalAdvance(message) < bar.width() - window.deviceLabel.width()
    assert bar.toolTip() == f"Loaded shapes from {long_path}"


def test_use_the_generate_image_takes_one_image_not_the_grid(qtbot, make_window) -> None:
    window = make_window()
    ws = window.generateWorkspace
    ws.settingsPanel.batchSpin.setValue(4)
    ws.settingsPanel.stepsSpin.setValue(3)
    with qtbot.waitSignal(ws.runEnded, timeout=20_000):
        qtbot.mouseClick(ws.settingsPanel.generateButton, Qt.MouseButton.LeftButton)
    shown = ws.previewArea.previewView.image_array()
    size = window.model().bundle.image_size
    assert shown.shape[0] > size  # the preview shows the 2×2 grid with its gaps
    entries = ws.historyPanel.entries()[:4]
    ws.historyPanel.select_entry(entries[2].path)
    selected = ws.selected_image()
    assert selected.shape == (size, size, 3)
    forward = window.forwardWorkspace
    assert forward.use_generate_image()
    assert forward.state.origin is not None
    np.testing.assert_array_equal(forward.state.origin.image[..., :3], selected)
