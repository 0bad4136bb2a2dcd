"""ImageView: the rendered widget really shows the image (pixels), crisp and high-DPI aware."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QSize
from PySide6.QtGui import QImage

from diffusion_studio.ui.widgets.image_view import ImageView, fit_rect, qimage_from_array


def _pattern() -> np.ndarray:
    """4x4 RGB with a distinct colour per pixel."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)


def _pixels(image: QImage) -> np.ndarray:
    """A copy of the RGB pixels (a view would dangle once the converted QImage is freed)."""
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    return np.array(rgb.constBits(), copy=True).reshape(rgb.height(), rgb.bytesPerLine())[:, : rgb.width() * 3].reshape(
        rgb.height(), rgb.width(), 3)


def test_grabbed_widget_shows_every_source_pixel_as_an_equal_square(qtbot) -> None:
    view = ImageView()
    qtbot.addWidget(view)
    view.resize(210, 170)
    image = _pattern()
    view.set_image(image)
    rect = view.image_rect()
    assert (rect.width(), rect.height()) == (168, 168)  # largest whole multiple: 42 px per source pixel
    grabbed = _pixels(view.grab().toImage())
    x0, y0 = int(rect.left()), int(rect.top())
    for r in range(4):
        for c in range(4):
            block = grabbed[y0 + 42 * r + 1 : y0 + 42 * (r + 1) - 1, x0 + 42 * c + 1 : x0 + 42 * (c + 1) - 1]
            assert (block == image[r, c]).all(), (r, c)
    background = grabbed[2, 2]
    assert not any((background == image[r, c]).all() for r in range(4) for c in range(4))


def test_smooth_zoom_blends_and_fills_the_view(qtbot) -> None:
    view = ImageView()
    qtbot.addWidget(view)
    view.resize(210, 170)
    image = np.zeros((2, 2, 3), np.uint8)
    image[:, 1] = 255
    view.set_image(image)
    view.set_smooth(True)
    rect = view.image_rect()
    assert rect.height() == pytest.approx(170)  # not limited to whole multiples
    grabbed = _pixels(view.grab().toImage())
    row = grabbed[int(rect.center().y()), int(rect.left()) : int(rect.right())]
    assert len({int(v) for v in row[:, 0]}) > 10  # a gradient between the two columns


@pytest.mark.parametrize(("dpr", "device_per_pixel"), [(1.0, 3), (1.25, 3), (1.5, 4), (2.0, 6)])
def test_nearest_scale_is_a_whole_number_of_device_pixels(dpr: float, device_per_pixel: int) -> None:
    rect = fit_rect(QSize(32, 32), QSize(100, 100), dpr, smooth=False)
    assert rect.width() * dpr / 32 == pytest.approx(device_per_pixel)  # floor(100·dpr / 32)
    assert rect.width() <= 100 and rect.left() == pytest.approx((100 - rect.width()) / 2)


def test_tiny_area_shrinks_instead_of_overflowing() -> None:
    rect = fit_rect(QSize(32, 32), QSize(20, 10), 1.0, smooth=False)
    assert (rect.width(), rect.height()) == (10, 10)


def test_placeholder_and_rgba_transparency_use_the_palette(qtbot) -> None:
    view = ImageView(placeholder="No model")
    qtbot.addWidget(view)
    view.resize(100, 100)
    empty = _pixels(view.grab().toImage())
    assert view.image_array() is None and len(np.unique(empty.reshape(-1, 3), axis=0)) > 1  # text drawn
    rgba = np.zeros((2, 2, 4), np.uint8)  # fully transparent: the canvas shows through
    view.set_image(rgba)
    grabbed = _pixels(view.grab().toImage())
    assert (grabbed[50, 50] == grabbed[2, 2]).all()


def test_qimage_from_array_copies_and_rejects_bad_input() -> None:
    image = _pattern()
    qimage = qimage_from_array(image)
    image[:] = 0  # the QImage owns its own pixels
    assert np.array_equal(_pixels(qimage), _pattern())
    assert qimage_from_array(np.zeros((3, 5), np.uint8)).size() == QSize(5, 3)
    with pytest.raises(ValueError, match="uint8"):
        qimage_from_array(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="C in 1, 3, 4"):
        qimage_from_array(np.zeros((2, 2, 2), np.uint8))


def test_a_new_preview_repaints_only_the_image_and_the_screen_shows_it(qtbot) -> None:
    """Live previews (30/s) repaint just the image's rectangle; what reaches the screen
    (the window's backing store, not a fresh grab()) is the new image on an intact canvas."""
    from PySide6.QtCore import QEvent, QObject, QRect

    view = ImageView()
    qtbot.addWidget(view)
    view.resize(210, 170)
    view.show()
    qtbot.waitExposed(view)
    painted: list[QRect] = []

    class Spy(QObject):
        def eventFilter(self, obj: QObject, event: QEvent) -> bool:
            if event.type() == QEvent.Type.Paint:
                painted.append(QRect(event.rect()))
            return False

    def screen() -> np.ndarray:
        return _pixels(view.screen().grabWindow(view.winId()).toImage())

    spy = Spy()
    view.installEventFilter(spy)
    red, green = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)
    red[..., 0], green[..., 1] = 200, 180
    view.set_image(red)
    qtbot.waitUntil(lambda: bool(painted))
    canvas = screen()[2, 2].copy()
    painted.clear()
    view.set_image(green)
    qtbot.waitUntil(lambda: bool(painted))
    assert painted == [view.image_rect().toAlignedRect()] == [QRect(21, 1, 168, 168)]
    shown = screen()
    assert (shown[1:169, 21:189] == (0, 180, 0)).all()
    assert (shown[:, :21] == canvas).all() and (shown[:, 189:] == canvas).all()

    painted.clear()  # transparent pixels: the canvas under the image must be painted too
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (0, 0, 255, 255)
    view.set_image(rgba)
    qtbot.waitUntil(lambda: bool(painted))
    shown = screen()
    assert (shown[10, 30] == (0, 0, 255)).all() and (shown[100, 100] == canvas).all()

    view.set_smooth(True)  # a fractional image rectangle: no stale pixel of an older image survives
    view.resize(203, 171)
    view.set_image(red)
    qtbot.wait(20)
    view.set_image(green)
    qtbot.wait(20)
    colours = {tuple(int(v) for v in px) for px in screen().reshape(-1, 3)}
    assert (200, 0, 0) not in colours and (0, 180, 0) in colours
