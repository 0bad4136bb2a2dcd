"""Take the README screenshots of the Forward process and Train tabs (run it under xvfb-run).

    xvfb-run -a -s "-screen 0 1600x1000x24" python -m diffusion_studio.ui.screenshot_tabs \
        forward docs/screenshot-forward.png
    xvfb-run -a -s "-screen 0 1600x1000x24" python -m diffusion_studio.ui.screenshot_tabs \
        train docs/screenshot-train.png

Settings, history and the training run go to a temporary folder. The Forward picture shows
x_t at `--t` with the Markov chain beside it; the Train picture is taken during a real
cpu-quick training run once `--at` of its steps are done and a sample grid is shown, then
the run is stopped and the window closed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Qt is imported only after the environment is set up (screenshot.isolated_window)
    from PySide6.QtWidgets import QApplication


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m diffusion_studio.ui.screenshot_tabs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tab", choices=("forward", "train"))
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--model", help="model bundle for the window (default: the default model)")
    parser.add_argument("--size", default="1280x800", help="window size WxH")
    parser.add_argument("--t", type=int, default=250, help="forward: the timestep shown")
    parser.add_argument("--schedule", default="linear", help="forward: linear or cosine")
    parser.add_argument("--steps", type=int, default=300, help="train: total steps of the run")
    parser.add_argument("--image-size", type=int, default=32, help="train: image size")
    parser.add_argument("--batch-size", type=int, default=16, help="train: batch size")
    parser.add_argument("--sample-every", type=int, default=60, help="train: steps between sample grids")
    parser.add_argument("--at", type=float, default=0.5, help="train: fraction of the steps done at the picture")
    parser.add_argument("--dark", action="store_true", help="use a dark palette (to check dark mode)")
    return parser.parse_args(argv)


def _wait(app: QApplication, until: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app.processEvents()
        if until():
            return True
        time.sleep(0.01)
    return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from diffusion_studio.ui.screenshot import isolated_window, save_grab

    app, window, scratch = isolated_window(args.model, args.size, args.dark)
    from diffusion_studio.ui.train.settings import TrainForm

    window.statusBar().clearMessage()
    ok = False
    if args.tab == "forward":
        ws = window.forwardWorkspace
        window.tabs.setCurrentWidget(ws)
        ws.set_schedule(args.schedule)
        ws.controls.markovCheck.setChecked(True)
        ws.set_t(args.t)
        _wait(app, lambda: not ws.markov_pending(), 60)
        _wait(app, lambda: False, 0.2)  # let it paint
        ok = save_grab(window, args.out)
    else:
        tw = window.trainWorkspace
        window.tabs.setCurrentWidget(tw)
        tw.set_form(TrainForm(preset="cpu-quick", steps=args.steps, batch_size=args.batch_size,
                              image_size=args.image_size, sample_every=args.sample_every, threads=1,
                              out=str(scratch / "runs" / "shapes-quick"), device="cpu"))
        if not tw.start_training():
            sys.stderr.write(f"error: {tw.view.message()}\n")
            window.close()
            return 2
        ready = lambda: tw.run.step >= args.at * args.steps and tw.run.sample_grid is not None  # noqa: E731
        captured = _wait(app, lambda: ready() or not tw.is_training(), 900)
        if not captured or not ready() or not tw.is_training():
            sys.stderr.write(f"error: the run ended before it could be captured: {tw.view.message()}\n")
            tw.shutdown()
            window.close()
            return 2
        _wait(app, lambda: False, 0.2)
        ok = save_grab(window, args.out)
        tw.shutdown()
    window.close()
    print(f"wrote {args.out}" if ok else f"error: could not write {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
